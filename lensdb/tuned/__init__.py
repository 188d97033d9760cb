"""Tuned lenses (Belrose et al., 2023): per-layer affine translators in the tuned-lens
project's on-disk format, their training (`lensdb train-lens`) and their storage in the
warehouse (`<warehouse>/lenses/NAME/`, the `v1.lenses` view).

Importing this package is cheap; torch loads with `lensdb.tuned.format` / `.train`.
"""

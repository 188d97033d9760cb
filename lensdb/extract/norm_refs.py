"""Names for the model's norms, shared by the lens rules (lensdb/lenses) and the lens math
(lens.py); no torch here.

A block layout is PRE_NORM (each block normalises its input: ln1 before attention, ln2
before the MLP) or POST_NORM (OPT with do_layer_norm_before=False: blocks normalise their
output). A NormRef names one of the model's norms: ("ln1", block), ("ln2", block) or
FINAL_NORM; LoadedModel.norms maps each to its parameters.
"""

from __future__ import annotations

PRE_NORM, POST_NORM = "pre_norm", "post_norm"

NormRef = tuple[str, int]
FINAL_NORM: NormRef = ("final", -1)

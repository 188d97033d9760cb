"""The lens kinds: one registered class each (lensdb/lenses/registry.py has the interface).

No torch at import: a tuned lens reads its translators (lensdb/tuned/format.py) when it is
built on a model.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from lensdb.errors import LensdbError
from lensdb.extract.norm_refs import FINAL_NORM, POST_NORM, NormRef
from lensdb.lenses.registry import Lens, register
from lensdb.run_settings import LensIdentity
from lensdb.warehouse import layout


def final_norm(layer: int, n_layers: int, architecture: str, site: str = "post") -> NormRef:
    return FINAL_NORM


@register
class NormLens(Lens):
    """The seed experiment's architecture-aware lens: the norm the next block applies."""

    kind = "norm"
    summary = "architecture-aware"

    @staticmethod
    def norm_at(layer: int, n_layers: int, architecture: str, site: str = "post") -> NormRef:
        """layer 0 -> block 0 ln1; pre-norm: layer i -> block i ln1 (the next block's input
        norm), layer n_layers -> final norm; post-norm: layer i -> block i-1 ln2.
        Mid sites (after block b's attention, stored as layer b + 1): pre-norm -> block b ln2
        (the norm its MLP reads through); post-norm -> block b ln1 (the norm the block
        applies to that sum, as post sites take the block's ln2)."""
        if site == "mid":
            return ("ln1" if architecture == POST_NORM else "ln2", layer - 1)
        if layer == 0:
            return ("ln1", 0)
        if architecture == POST_NORM:
            return ("ln2", layer - 1)
        if layer == n_layers:
            return FINAL_NORM
        return ("ln1", layer)


@register
class FinalNormLens(Lens):
    """The classic logit lens: the final norm at every layer."""

    kind = "final_ln"
    summary = "final norm at every layer"
    norm_at = staticmethod(final_norm)


@register
class RawLens(Lens):
    """No norm: the residual straight into the unembedding."""

    kind = "raw"
    summary = "no norm"

    @staticmethod
    def norm_at(layer: int, n_layers: int, architecture: str, site: str = "post") -> None:
        return None


@register
class TunedLens(Lens):
    """A tuned lens (Belrose et al., 2023): h + A_l h + b_l, then the final norm and the unembedding.

    The translators come in the tuned-lens project's format (lensdb/tuned/format.py); the
    last layer's translator is the identity, so there the tuned lens equals final_ln.
    """

    kind = "tuned"
    summary = "a tuned lens: a folder in the tuned-lens format, or one stored with `lensdb train-lens --name`"
    argument = "DIR|NAME"  # a lens folder, or a lens stored in the warehouse (lensdb train-lens --name)
    norm_at = staticmethod(final_norm)

    def __init__(self, spec, model, translators):
        super().__init__(spec, model)
        self.translators = translators.to(model.device)

    @classmethod
    def build(cls, spec, model, warehouse=None) -> "TunedLens":
        from lensdb.tuned.format import check_fits, unembed_hash
        from lensdb.tuned.store import resolve_tuned_spec

        translators = resolve_tuned_spec(spec.argument, warehouse)
        check_fits(translators, n_layers=model.n_layers, d_model=model.d_model, unembed_hash=unembed_hash(model.unembed_weight))
        return cls(spec, model, translators)

    @classmethod
    def identity(cls, spec, warehouse) -> LensIdentity:
        """By the sha256 of its params.pt (the tuned-lens format's content hash), not its path,
        combined with params_mid.pt's when it has mid-site translators: read from the
        folder, else from the warehouse's lens store."""
        from lensdb.tuned.names import MID_PARAMS_FILE, PARAMS_FILE, combined_sha256

        folder = Path(spec.argument).expanduser()
        lens_root = layout.open_warehouse(warehouse).lens_root()  # None: the store keeps no lenses
        if not folder.is_dir() and lens_root is not None:
            folder = lens_root / spec.argument
        params, mid_params = folder / PARAMS_FILE, folder / MID_PARAMS_FILE
        sha256 = hashlib.sha256(params.read_bytes()).hexdigest() if params.is_file() else None
        if sha256 is not None:  # as TunedTranslators.content_sha256
            sha256 = combined_sha256(sha256, hashlib.sha256(mid_params.read_bytes()).hexdigest() if mid_params.is_file() else None)
        return LensIdentity(spec.name, spec.kind, sha256)

    def check_sites(self, sites: str) -> None:
        if sites in ("mid", "all") and "mid" not in self.translators.sites:
            raise LensdbError(
                f"tuned lens {self.name} has translators for post sites only: train one with `lensdb train-lens --sites all`, or use --sites post"
            )

    def translated(self, residuals, layers, sites=None):
        from lensdb.extract import lens as lens_math

        return lens_math.per_site(self.translators.translate, residuals, layers, ["post"] * len(layers) if sites is None else sites)

    def describe(self) -> dict:
        return super().describe() | {"sha256": self.translators.content_sha256, "origin": self.translators.origin, "sites": list(self.translators.sites)}

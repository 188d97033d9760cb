"""The lens interface and the registry every kind joins with `@register`.

No torch at import: the class attributes and the norm rules are plain Python, read by the
CLI, the sweep and the tuned store; the tensor work imports lensdb/extract/lens.py (the
pure lens math) when a lens first runs on a model.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from lensdb.extract.norm_refs import NormRef
from lensdb.run_settings import LensIdentity

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np
    import torch

KINDS: dict[str, type["Lens"]] = {}  # kind name -> its class, in registration order


class Lens:
    """One kind of lens: maps the residual of layer L to float32 logits.

    A kind declares (class attributes, read without a model):
        kind                    its name in --lens, and records.lens unless aliased
        summary                 one line for --help and the docs
        argument                what follows `kind:` (e.g. "DIR|NAME"); None: it takes none
        identity_at_last_layer  True when nothing but its norm acts at the last layer, so
                                it shares the last-layer logits of lenses with that norm
        norm_at(layer, n_layers, architecture, site)   the model norm it applies there (a
                                NormRef, or None for no norm): a pure function of the layer
                                and the site (post, or mid: lensdb/extract/sites.py)

    and may override, for a lens with parameters of its own:
        build(spec, model, warehouse)   the lens on a loaded model (reads its files)
        identity(spec, warehouse)       what the settings hash records (no torch, no model)
        translated(residuals, layers, sites)   the residuals before the norm (default: unchanged)
        check_sites(sites)              refuse --sites post|mid|all it cannot serve (one line; default: all)
        describe()                      what the manifest records about it

    On a model every lens offers:
        lens.name                       the name written in records.lens
        lens.normalized(resid, layers, sites)  (slots, rows, d_model) -> float32, what the
                                unembedding sees; `sites` gives each slot's site (None: all post)
        lens.logits(resid, layers, u, sites)   u(lens.normalized(...)): (slots, rows, d_vocab) float32
        lens.last_layer_key             lenses with equal keys give identical last-layer logits
    """

    kind: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    argument: ClassVar[str | None] = None
    identity_at_last_layer: ClassVar[bool] = True

    @staticmethod
    def norm_at(layer: int, n_layers: int, architecture: str, site: str = "post") -> NormRef | None:
        raise NotImplementedError

    def __init__(self, spec, model):
        self.spec = spec
        self.name = spec.name
        self.model = model

    @classmethod
    def build(cls, spec, model, warehouse=None) -> "Lens":
        return cls(spec, model)

    @classmethod
    def identity(cls, spec, warehouse) -> LensIdentity:
        return LensIdentity(spec.name, spec.kind)

    def norm_ref(self, layer: int, site: str = "post") -> NormRef | None:
        """The model norm applied at `layer` and `site` (a NormRef, or None for no norm)."""
        return self.norm_at(layer, self.model.n_layers, self.model.architecture, site)

    def translated(self, residuals: "torch.Tensor", layers: "np.ndarray", sites=None) -> "torch.Tensor":
        return residuals

    def check_sites(self, sites: str) -> None:
        """Raise a LensdbError (one line) if the lens cannot read the sites `sites` (post, mid or all)."""

    def normalized(self, residuals: "torch.Tensor", layers: "np.ndarray", sites=None) -> "torch.Tensor":
        from lensdb.extract import lens as lens_math

        residuals = self.translated(residuals, layers, sites)
        refs = [self.norm_ref(int(layer), "post" if sites is None else sites[i]) for i, layer in enumerate(layers)]
        if all(ref == refs[0] for ref in refs):
            return lens_math.apply_norm(residuals, self._norm(refs[0]))
        return lens_math.apply_norms(residuals, [self._norm(ref) for ref in refs])

    def logits(self, residuals: "torch.Tensor", layers: "np.ndarray", unembedding, sites=None) -> "torch.Tensor":
        return unembedding(self.normalized(residuals, layers, sites))

    @property
    def last_layer_key(self):
        if self.identity_at_last_layer:
            return ("norm", self.norm_ref(self.model.n_layers))
        return ("lens", self.name)

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "spec": str(self.spec)}

    def _norm(self, ref):
        return None if ref is None else self.model.norms[ref]


def register(cls: type[Lens]) -> type[Lens]:
    """Class decorator: `cls` becomes the lens kind `cls.kind`."""
    if not cls.kind or cls.kind in KINDS:
        raise ValueError(f"lens kind {cls.kind!r} is empty or registered twice")
    KINDS[cls.kind] = cls
    return cls


def norm_for(lens: str, layer: int, n_layers: int, architecture: str, site: str = "post") -> NormRef | None:
    """The norm the lens kind `lens` applies to the residual at `layer` and `site` (None: no norm)."""
    if lens not in KINDS:
        raise ValueError(f"unknown lens {lens!r}")
    return KINDS[lens].norm_at(layer, n_layers, architecture, site)


def build_lenses(specs, model, warehouse=None) -> tuple[Lens, ...]:
    """Lens objects for `specs` on a loaded model (a tuned lens reads and checks its files here)."""
    return tuple(KINDS[spec.kind].build(spec, model, warehouse) for spec in specs)


def lens_identities(specs, warehouse) -> tuple[LensIdentity, ...]:
    """How the settings hash identifies `specs` before any model loads (lensdb sweep)."""
    return tuple(KINDS[spec.kind].identity(spec, warehouse) for spec in specs)

"""The lens family: each lens maps the residual of layer L to float32 logits.

One class per kind of `lensdb/lenses.py`'s registry, behind one interface:

    lens.name                       the name written in records.lens
    lens.normalized(resid, layers, sites)  (slots, rows, d_model) -> float32, what the unembedding
                                    sees; `sites` (default: all post) says each slot's site
    lens.logits(resid, layers, u, sites)  u(lens.normalized(...)): (slots, rows, d_vocab) float32
    lens.last_layer_key             lenses with equal keys give identical last-layer logits
    lens.describe()                 what the manifest records about the lens

The unembedding (`Unembedding`) is shared by every lens and owns the precision strategy.
Adding a lens means adding one class here and one entry in the registry.
"""

from __future__ import annotations

import numpy as np
import torch

from lensdb.errors import LensdbError
from lensdb.extract import lens as lens_math
from lensdb.lenses import LensSpec


class Lens:
    kind = ""

    def __init__(self, spec: LensSpec, model):
        self.spec = spec
        self.name = spec.name
        self.model = model

    def norm_ref(self, layer: int, site: str = "post"):
        """The model norm applied at `layer` and `site` (a NormRef, or None for no norm)."""
        return lens_math.norm_for(self.kind, layer, self.model.n_layers, self.model.architecture, site)

    def normalized(self, residuals: torch.Tensor, layers: np.ndarray, sites=None) -> torch.Tensor:
        refs = [self.norm_ref(int(layer), _site(sites, i)) for i, layer in enumerate(layers)]
        if all(ref == refs[0] for ref in refs):
            return lens_math.apply_norm(residuals, self._norm(refs[0]))
        return torch.stack([lens_math.apply_norm(residuals[i], self._norm(ref)) for i, ref in enumerate(refs)])

    def logits(self, residuals: torch.Tensor, layers: np.ndarray, unembedding: "Unembedding", sites=None) -> torch.Tensor:
        return unembedding(self.normalized(residuals, layers, sites))

    @property
    def last_layer_key(self):
        return ("norm", self.norm_ref(self.model.n_layers))

    def describe(self) -> dict:
        return {"name": self.name, "kind": self.kind, "spec": str(self.spec)}

    def _norm(self, ref):
        return None if ref is None else self.model.norms[ref]


class NormLens(Lens):
    """The seed experiment's architecture-aware lens: the norm the next block applies."""

    kind = "norm"


class FinalNormLens(Lens):
    """The classic logit lens: the final norm at every layer."""

    kind = "final_ln"


class RawLens(Lens):
    """No norm: the residual straight into the unembedding."""

    kind = "raw"


class TunedLens(Lens):
    """A tuned lens (Belrose et al., 2023): h + A_l h + b_l, then the final norm and the unembedding.

    The translators come in the tuned-lens project's format (lensdb/tuned/format.py); the
    last layer's translator is the identity, so there the tuned lens equals final_ln.
    """

    kind = "tuned"

    def __init__(self, spec: LensSpec, model, translators):
        super().__init__(spec, model)
        self.translators = translators.to(model.device)

    def normalized(self, residuals: torch.Tensor, layers: np.ndarray, sites=None) -> torch.Tensor:
        if any(_site(sites, i) != "post" for i in range(len(layers))):
            raise LensdbError(f"tuned lens {self.name} has translators for post sites only: use --sites post for it")
        translated = torch.stack([self.translators.translate(residuals[i], int(layer)) for i, layer in enumerate(layers)])
        return lens_math.apply_norm(translated, self._norm(lens_math.FINAL_NORM))

    @property
    def last_layer_key(self):
        return ("norm", lens_math.FINAL_NORM)  # identity translator: same logits as final_ln

    def describe(self) -> dict:
        return super().describe() | {"sha256": self.translators.sha256, "origin": self.translators.origin}


def _site(sites, index: int) -> str:
    return "post" if sites is None else sites[index]


LENS_CLASSES: dict[str, type[Lens]] = {cls.kind: cls for cls in (NormLens, FinalNormLens, RawLens, TunedLens)}


def build_lenses(specs: tuple[LensSpec, ...], model, warehouse=None) -> tuple[Lens, ...]:
    """Lens objects for `specs` on a loaded model; tuned lenses are read and checked here."""
    lenses = []
    for spec in specs:
        if spec.kind == "tuned":
            lenses.append(TunedLens(spec, model, load_translators(spec, model, warehouse)))
        else:
            lenses.append(LENS_CLASSES[spec.kind](spec, model))
    return tuple(lenses)


def load_translators(spec: LensSpec, model, warehouse):
    from lensdb.tuned.format import check_fits, unembed_hash
    from lensdb.tuned.store import resolve_tuned_spec

    translators = resolve_tuned_spec(spec.argument, warehouse)
    check_fits(translators, n_layers=model.n_layers, d_model=model.d_model, unembed_hash=unembed_hash(model.unembed_weight))
    return translators


class Unembedding:
    """Logits = x W_U (+ b_U) for float32 x, with float32 results, by one of two strategies:

    float32  one float32 matmul (a float32 copy of W_U when the model runs in half precision)
    split    x split into half-precision parts, each multiplied with the model's own
             half-precision W_U on the tensor cores with float32 accumulation (CUDA, fp16/bf16
             models): the float32 product at tensor-core speed (lens.project_split)
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, strategy: str):
        """`weight` is the model's own (d_vocab, d_model) unembedding, in the model's dtype."""
        self.strategy = strategy
        self.bias = bias.detach().float() if bias is not None else None
        self.d_vocab = int(weight.shape[0])
        if strategy == "split":
            if weight.dtype not in (torch.float16, torch.bfloat16):
                raise LensdbError("the split unembedding needs a float16 or bfloat16 model")
            self.weight_half = weight.detach()
            self.weight = None
            self._matmul = lens_math.tensor_core_matmul if weight.is_cuda else None
            if weight.is_cuda:  # float32 accumulation everywhere inside the matmuls
                torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
                torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False
        elif strategy == "float32":
            self.weight = weight.detach().float().t().contiguous() if weight.dtype != torch.float32 else weight.detach().t()
            self.weight_half = None
        else:
            raise ValueError(f"unknown unembedding strategy {strategy!r}")

    def __call__(self, normalized: torch.Tensor) -> torch.Tensor:
        if self.strategy == "split":
            return lens_math.project_split(normalized, self.weight_half, self.bias, self._matmul)
        return lens_math.project(normalized, self.weight, self.bias)

    @property
    def description(self) -> str:
        if self.strategy == "split":
            parts = 2 if self.weight_half.dtype == torch.float16 else 3
            return f"{str(self.weight_half.dtype).removeprefix('torch.')} x{parts} split, float32 accumulation"
        return "float32"


def choose_unembedding_strategy(requested: str, weight: torch.Tensor) -> str:
    """auto: split on CUDA for half-precision models (tensor cores), else float32."""
    if requested != "auto":
        return requested
    if weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16):
        return "split"
    return "float32"

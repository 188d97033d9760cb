"""Lens math: which normalisation each lens applies at each layer, and the projection.

Pure tensor functions; the model only supplies the parameters. Layers are numbered
0..n_layers: 0 is the residual entering block 0 (embeddings, plus additive positional
embeddings where the model has them), layer i is the residual after block i-1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch

LENSES = ("norm", "final_ln", "raw")
PRE_NORM, POST_NORM = "pre_norm", "post_norm"

# A reference to one of the model's norms: ("ln1", block), ("ln2", block) or ("final", -1).
NormRef = tuple[str, int]
FINAL_NORM: NormRef = ("final", -1)


@dataclass(frozen=True)
class Norm:
    """A normalisation with its effective parameters (scale offsets already folded in)."""

    kind: Literal["rms", "layer"]
    eps: float
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


def norm_for(lens: str, layer: int, n_layers: int, architecture: str) -> NormRef | None:
    """The norm a lens applies to the residual at `layer` (None: no norm).

    norm:     layer 0 -> block 0 ln1; pre-norm: layer i -> block i ln1 (the next block's
              input norm), layer n_layers -> final norm; post-norm: layer i -> block i-1 ln2.
    final_ln: the final norm at every layer (the classic logit lens).
    raw:      no norm.
    """
    if lens == "raw":
        return None
    if lens == "final_ln":
        return FINAL_NORM
    if lens != "norm":
        raise ValueError(f"unknown lens {lens!r}")
    if layer == 0:
        return ("ln1", 0)
    if architecture == POST_NORM:
        return ("ln2", layer - 1)
    if layer == n_layers:
        return FINAL_NORM
    return ("ln1", layer)


def apply_norm(residual: torch.Tensor, norm: Norm | None) -> torch.Tensor:
    """Normalise in float32: RMSNorm x / sqrt(mean(x^2) + eps); LayerNorm centres first."""
    x = residual.float()
    if norm is None:
        return x
    if norm.kind == "layer":
        x = x - x.mean(dim=-1, keepdim=True)
    x = x * torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + norm.eps)
    if norm.weight is not None:
        x = x * norm.weight
    if norm.bias is not None:
        x = x + norm.bias
    return x


def project(normalized: torch.Tensor, unembed_weight: torch.Tensor, unembed_bias: torch.Tensor | None) -> torch.Tensor:
    """Logits = x @ W_U (+ b_U); W_U is (d_model, d_vocab), both float32."""
    if unembed_bias is None:
        return normalized @ unembed_weight
    return torch.addmm(unembed_bias, normalized.reshape(-1, normalized.shape[-1]), unembed_weight).reshape(
        *normalized.shape[:-1], unembed_weight.shape[-1]
    )

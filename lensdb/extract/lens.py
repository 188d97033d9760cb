"""Lens math: the model's norms, per-layer maps and the projection to logits.

Pure tensor functions; the model only supplies the parameters, and each lens kind
(lensdb/lenses/kinds.py) says which norm it applies at which layer. Layers are numbered
0..n_layers: 0 is the residual entering block 0 (embeddings, plus additive positional
embeddings where the model has them), layer i is the residual after block i-1.

| function          | does                                                                  |
| ----------------- | --------------------------------------------------------------------- |
| `apply_norm`      | RMSNorm / LayerNorm in float32 with the model's parameters            |
| `apply_norms`     | one norm per layer, for a lens whose norm changes with the layer       |
| `per_site`        | a map per layer and site (a tuned lens's translators) over stacked slots |
| `project`         | logits = x W_U (+ b_U) in float32                                      |
| `split_parts`     | float32 x -> half-precision parts whose sum is x to ~22-24 bits         |
| `project_split`   | the float32 product from half-precision matmuls with float32 accumulation |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch

from lensdb.extract.norm_refs import FINAL_NORM, POST_NORM, PRE_NORM, NormRef  # noqa: F401 - the model's norms, named


@dataclass(frozen=True)
class Norm:
    """A normalisation with its effective parameters (scale offsets already folded in)."""

    kind: Literal["rms", "layer"]
    eps: float
    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None


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


def apply_norms(residuals: torch.Tensor, norms: list[Norm | None]) -> torch.Tensor:
    """(layers, ..., d_model): layer i normalised with norms[i]."""
    return torch.stack([apply_norm(residuals[i], norm) for i, norm in enumerate(norms)])


def per_site(transform: Callable[[torch.Tensor, int, str], torch.Tensor], residuals: torch.Tensor, layers, sites) -> torch.Tensor:
    """(slots, ..., d_model): transform(residuals[i], layers[i], sites[i]) for each slot i (a map per layer and site)."""
    return torch.stack([transform(residuals[i], int(layer), str(sites[i])) for i, layer in enumerate(layers)])


def project(normalized: torch.Tensor, unembed_weight: torch.Tensor, unembed_bias: torch.Tensor | None) -> torch.Tensor:
    """Logits = x @ W_U (+ b_U); W_U is (d_model, d_vocab), both float32."""
    if unembed_bias is None:
        return normalized @ unembed_weight
    return torch.addmm(unembed_bias, normalized.reshape(-1, normalized.shape[-1]), unembed_weight).reshape(
        *normalized.shape[:-1], unembed_weight.shape[-1]
    )


# Mantissa bits of each half type: the parts of a float32 number that each can hold.
_PARTS = {torch.float16: 2, torch.bfloat16: 3}
_FP16_TOP = 13  # scale fp16 rows so their largest value lies in [2^13, 2^14): far from overflow and subnormals


def split_parts(x: torch.Tensor, half: torch.dtype) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    """Half-precision parts p_0, p_1, ... of float32 `x` with x = scale * sum(p_i) to about
    float32 precision (float16: 2 parts, 22 bits; bfloat16: 3 parts, 24 bits).

    float16 rows are first scaled by a power of two (exact), so that no part overflows
    and the last part keeps its bits; `scale` is (..., 1) float32, or None for bfloat16.
    """
    x = x.float()
    scale = None
    if half == torch.float16:
        top = torch.amax(x.abs(), dim=-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
        scale = torch.exp2(torch.floor(torch.log2(top)) - _FP16_TOP)
        x = x / scale
    parts = []
    rest = x
    for _ in range(_PARTS[half]):
        part = rest.to(half)
        parts.append(part)
        rest = rest - part.float()
    return parts, scale


def project_split(
    normalized: torch.Tensor,
    unembed_half: torch.Tensor,
    unembed_bias: torch.Tensor | None,
    matmul: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """Float32 logits from half-precision matmuls: x W_U = scale * sum_i p_i W_U.

    `unembed_half` is the model's own (d_vocab, d_model) half-precision weight, so every
    product p_i * w is exact and only the float32 accumulation rounds. `matmul(a, w)`
    returns a @ w^T in float32 with float32 accumulation: on CUDA `torch.mm(..., out_dtype=
    torch.float32)` on the tensor cores; the default (any device) widens both to float32.
    """
    matmul = matmul or _widened_matmul
    shape = normalized.shape
    parts, scale = split_parts(normalized.reshape(-1, shape[-1]), unembed_half.dtype)
    logits = matmul(parts[0], unembed_half)
    for part in parts[1:]:
        logits += matmul(part, unembed_half)
    if scale is not None:
        logits *= scale
    if unembed_bias is not None:
        logits += unembed_bias
    return logits.reshape(*shape[:-1], unembed_half.shape[0])


def _widened_matmul(part: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return part.float() @ weight.float().t()


def tensor_core_matmul(part: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """part @ weight^T on CUDA tensor cores, float32 accumulation and float32 output."""
    return torch.mm(part, weight.t(), out_dtype=torch.float32)

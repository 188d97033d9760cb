"""Per-row statistics of next-token distributions, vectorised over layers and positions.

All functions are pure: float32 logits in, tensors out. A "row" is one (layer, position);
the vocabulary is the last dimension. Entropies and KL divergences are returned in bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

LN2 = math.log(2.0)
NO_TOKEN = -1  # marks a row without a gold token
TEMPERATURE_GRID_STEPS = 25  # scalar temperatures, log-spaced in [0.1, 10]


@dataclass
class LensStats:
    """Statistics of lens distributions; every tensor is shaped like the logits without the vocabulary."""

    entropy_bits: torch.Tensor  # float32
    topk_ids: torch.Tensor  # int64, (..., k)
    topk_probs: torch.Tensor  # float32, (..., k)
    p_answer: torch.Tensor  # float32, nan without gold
    answer_rank: torch.Tensor  # int64, NO_TOKEN without gold
    p_paired_answer: torch.Tensor
    paired_answer_rank: torch.Tensor
    kl_to_final_bits: torch.Tensor  # float64
    cos_to_final: torch.Tensor  # float32
    kl_vs_norm_bits: torch.Tensor | None  # float64; None when not asked for
    log_probs: torch.Tensor | None = None  # kept only when a later lens needs it


def lens_statistics(
    logits: torch.Tensor,
    *,
    final_log_probs: torch.Tensor,
    final_logits_unit: torch.Tensor,
    answer_ids: torch.Tensor,
    paired_ids: torch.Tensor,
    top_k: int,
    norm_log_probs: torch.Tensor | None = None,
    keep_log_probs: bool = False,
) -> LensStats:
    """Statistics of `logits` (..., P, V) against the model's final distribution at the same positions.

    final_log_probs (P, V) and final_logits_unit (P, V, unit-norm) broadcast over leading
    dimensions (layers); answer_ids / paired_ids (P,) hold token ids or NO_TOKEN.
    norm_log_probs, when given, is the norm lens at the same rows: KL(norm || this lens).
    """
    log_probs = torch.log_softmax(logits, dim=-1)
    probs = log_probs.exp()
    entropy_bits = -(probs * log_probs).sum(dim=-1) / LN2
    top_logits, topk_ids = torch.topk(logits, top_k, dim=-1)
    del top_logits
    topk_probs = probs.gather(-1, topk_ids)
    p_answer, answer_rank = _gold_probability_and_rank(probs, answer_ids)
    p_paired, paired_rank = _gold_probability_and_rank(probs, paired_ids)
    norm_dot = torch.linalg.vector_norm(logits, dim=-1)
    cos_to_final = (logits * final_logits_unit).sum(dim=-1) / (norm_dot + 1e-12)
    kl_vs_norm = None
    if norm_log_probs is not None:
        kl_vs_norm = kl_bits(norm_log_probs, log_probs)
    kept = log_probs.clone() if keep_log_probs else None
    # KL(layer || final) = sum p * (log p - log q), computed in place on log_probs.
    kl_to_final = _to_bits((probs * log_probs.sub_(final_log_probs)).sum(dim=-1))
    return LensStats(
        entropy_bits=entropy_bits,
        topk_ids=topk_ids,
        topk_probs=topk_probs,
        p_answer=p_answer,
        answer_rank=answer_rank,
        p_paired_answer=p_paired,
        paired_answer_rank=paired_rank,
        kl_to_final_bits=kl_to_final,
        cos_to_final=cos_to_final,
        kl_vs_norm_bits=kl_vs_norm,
        log_probs=kept,
    )


def _gold_probability_and_rank(probs: torch.Tensor, token_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """p(token) and its rank: 1 + the number of tokens with strictly larger probability."""
    missing = token_ids == NO_TOKEN
    index = token_ids.clamp(min=0).expand(*probs.shape[:-1]).unsqueeze(-1)
    p_token = probs.gather(-1, index)
    rank = (probs > p_token).sum(dim=-1) + 1
    p_token = p_token.squeeze(-1)
    return p_token.masked_fill(missing, float("nan")), rank.masked_fill(missing, NO_TOKEN)


def kl_bits(log_p: torch.Tensor, log_q: torch.Tensor) -> torch.Tensor:
    """KL(P || Q) in bits from log-probabilities (last dimension = vocabulary)."""
    return _to_bits((log_p.exp() * (log_p - log_q)).sum(dim=-1))


def _to_bits(kl_nats: torch.Tensor) -> torch.Tensor:
    # A KL below zero is rounding noise; the division by ln 2 is done in float64.
    return kl_nats.clamp(min=0.0).double() / LN2


def entropy_bits(logits: torch.Tensor) -> torch.Tensor:
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    probs = log_probs.exp()
    return -torch.where(probs > 0, probs * log_probs, torch.zeros_like(probs)).sum(dim=-1) / LN2


def top_k_of(logits: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k ids and their softmax probabilities (float32)."""
    logits = logits.float()
    k = min(k, logits.shape[-1])
    ids = torch.topk(logits, k, dim=-1).indices
    return ids, torch.softmax(logits, dim=-1).gather(-1, ids)


@dataclass
class HeadConsistency:
    temp_est: float
    kl_after_temp_bits: float
    kl_after_scale_bits: float | None
    kl_after_softcap_bits: float | None
    kl_after_scale_then_softcap_bits: float | None


def head_consistency(
    lens_logits: torch.Tensor, final_log_probs: torch.Tensor, scale: float | None, softcap: float | None
) -> HeadConsistency:
    """How well a scalar temperature or the config's logit transform maps lens logits (V,) onto the head.

    temp_est is the grid temperature s in [0.1, 10] minimising KL(softmax(z / s) || head);
    the first minimum wins.
    """
    grid = torch.logspace(-1, 1, steps=TEMPERATURE_GRID_STEPS, dtype=torch.float32, device=lens_logits.device)
    z = lens_logits.float()
    kls = kl_bits(torch.log_softmax(z.unsqueeze(0) / grid.unsqueeze(1), dim=-1), final_log_probs.unsqueeze(0))
    best = int(torch.argmin(kls).item())  # argmin returns the first minimum

    def kl_of(transformed: torch.Tensor) -> float:
        return float(kl_bits(torch.log_softmax(transformed, dim=-1), final_log_probs).item())

    has_scale = scale is not None and scale > 0
    has_softcap = softcap is not None and softcap > 0
    return HeadConsistency(
        temp_est=float(grid[best].item()),
        kl_after_temp_bits=float(kls[best].item()),
        kl_after_scale_bits=kl_of(z / scale) if has_scale else None,
        kl_after_softcap_bits=kl_of(torch.tanh(z / softcap) * softcap) if has_softcap else None,
        kl_after_scale_then_softcap_bits=kl_of(torch.tanh((z / scale) / softcap) * softcap)
        if has_scale and has_softcap
        else None,
    )

"""Per-row statistics of next-token distributions, vectorised over layers and positions.

All functions are pure: float32 logits in, tensors out. A "row" is one (layer, position);
the vocabulary is the last dimension. Entropies and KL divergences are returned in bits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

LN2 = math.log(2.0)
NO_TOKEN = -1  # marks a row without a gold token
TEMPERATURE_GRID_STEPS = 25  # scalar temperatures, log-spaced in [0.1, 10]


BLOCK_BYTES = 2 << 20  # rows are processed in blocks of about this many logit bytes, to stay in cache


@dataclass
class LensStats:
    """Statistics of one lens over a chunk: tensors shaped (layers, positions[, k])."""

    entropy_bits: torch.Tensor  # float32
    topk_ids: torch.Tensor  # int64, (..., k)
    topk_probs: torch.Tensor  # float32, (..., k)
    p_answer: torch.Tensor  # float32, nan without gold
    answer_rank: torch.Tensor  # int32, NO_TOKEN without gold
    p_paired_answer: torch.Tensor
    paired_answer_rank: torch.Tensor
    kl_to_final_bits: torch.Tensor  # float64
    cos_to_final: torch.Tensor  # float32
    kl_vs_reference_bits: torch.Tensor | None  # float64 KL(reference lens || this lens); None without a reference
    # 0-dim bool: every logit of the chunk, and of the model's final distribution, was finite
    # (a NaN or infinity in a row's logits makes its entropy or KL non-finite). None: not checked.
    finite: torch.Tensor | None = None
    groups: object | None = None  # groups.GroupStats with --track or answer sets; None otherwise

    @classmethod
    def empty(cls, layers: int, positions: int, top_k: int, device, with_reference_kl: bool) -> "LensStats":
        def floats():
            return torch.empty(layers, positions, device=device)

        def ranks():
            return torch.empty(layers, positions, dtype=torch.int32, device=device)

        return cls(
            entropy_bits=floats(),
            topk_ids=torch.empty(layers, positions, top_k, dtype=torch.long, device=device),
            topk_probs=torch.empty(layers, positions, top_k, device=device),
            p_answer=floats(),
            answer_rank=ranks(),
            p_paired_answer=floats(),
            paired_answer_rank=ranks(),
            kl_to_final_bits=floats(),
            cos_to_final=floats(),
            kl_vs_reference_bits=floats() if with_reference_kl else None,
        )


def chunk_statistics(
    logits_by_lens: dict[str, torch.Tensor],
    *,
    final_log_probs: torch.Tensor,
    final_logits_unit: torch.Tensor,
    answer_ids: torch.Tensor,
    paired_ids: torch.Tensor,
    top_k: int,
    reference: str | None = None,
    block_bytes: int | None = BLOCK_BYTES,
    has_answer=None,
    has_paired=None,
    groups=None,
) -> dict[str, LensStats]:
    """Statistics of each lens's logits (layers, P, V) against the model's final distribution.

    final_log_probs and final_logits_unit (unit-norm final logits) are (P, V) at the same
    positions; answer_ids / paired_ids (P,) hold token ids or NO_TOKEN. With a `reference`
    lens among the lenses, every other lens also gets KL(reference || lens). has_answer /
    has_paired (P,) booleans on the host, when given, spare a device-to-host copy.

    With `block_bytes` (the CPU), rows are handled in blocks small enough to stay in cache:
    every statistic of a block is computed while its logits are there. With None (GPUs,
    where many small kernels cost more than memory traffic), each lens is one block.
    `groups` (a groups.GroupTracker) adds token-group statistics from each block's probabilities.
    """
    lenses = sorted(logits_by_lens, key=lambda name: name != reference)  # the reference first
    layers, positions, vocab = next(iter(logits_by_lens.values())).shape
    device = final_log_probs.device
    compare = reference in lenses and len(lenses) > 1
    results = {lens: LensStats.empty(layers, positions, top_k, device, compare and lens != reference) for lens in lenses}
    if groups is not None:
        for out in results.values():
            out.groups = groups.empty(layers, positions, device)
    if has_answer is None:
        has_answer = (answer_ids != NO_TOKEN).cpu().numpy()
    if has_paired is None:
        has_paired = (paired_ids != NO_TOKEN).cpu().numpy()
    answer_index = answer_ids.clamp(min=0).unsqueeze(-1)
    paired_index = paired_ids.clamp(min=0).unsqueeze(-1)
    if block_bytes is None:
        blocks = [(slice(None), slice(None))]
    else:
        block = max(1, block_bytes // (vocab * 4))
        blocks = [(layer, slice(start, start + block)) for layer in range(layers) for start in range(0, positions, block)]
    for layer_index, rows in blocks:
        at = (layer_index, rows)
        golds = []
        if has_answer[rows].any():
            golds.append((answer_index[rows], "answer"))
        if has_paired[rows].any():
            golds.append((paired_index[rows], "paired"))
        reference_block = None
        for lens in lenses:
            out = results[lens]
            probs, log_probs = _block_statistics(
                logits_by_lens[lens][at], out, at, final_log_probs[rows], final_logits_unit[rows], golds, top_k
            )
            if groups is not None:
                groups.fill(out.groups, at, rows, probs)
            if lens == reference:
                reference_block = (probs, log_probs)
            elif out.kl_vs_reference_bits is not None:
                ref_probs, ref_log_probs = reference_block
                out.kl_vs_reference_bits[at] = (ref_probs * (ref_log_probs - log_probs)).sum(dim=-1)
    for lens, out in results.items():
        out.kl_to_final_bits = _to_bits(out.kl_to_final_bits)
        if out.kl_vs_reference_bits is not None:
            out.kl_vs_reference_bits = _to_bits(out.kl_vs_reference_bits)
        elif lens == reference and compare:
            out.kl_vs_reference_bits = torch.zeros(layers, positions, dtype=torch.float64, device=device)
        missing_answer = (answer_ids == NO_TOKEN).expand(layers, positions)
        missing_paired = (paired_ids == NO_TOKEN).expand(layers, positions)
        out.p_answer.masked_fill_(missing_answer, float("nan"))
        out.answer_rank.masked_fill_(missing_answer, NO_TOKEN)
        out.p_paired_answer.masked_fill_(missing_paired, float("nan"))
        out.paired_answer_rank.masked_fill_(missing_paired, NO_TOKEN)
        if groups is not None:
            groups.finish(out.groups)
        # One small reduction per lens and chunk, left on the device (no host sync here): the
        # records job reads it once the chunk's statistics have landed on the host.
        out.finite = torch.isfinite(out.entropy_bits).all() & torch.isfinite(out.kl_to_final_bits).all()
    return results


def _block_statistics(logits, out: LensStats, at, final_log_probs, final_unit, golds, top_k):
    """Fill `out` at `at` for one block of rows (..., B, V); returns the block's probabilities
    and log-probabilities. `golds` lists (token index (B, 1), "answer" | "paired") to rank."""
    top_logits, top_ids = torch.topk(logits, top_k, dim=-1)
    out.cos_to_final[at] = (logits * final_unit).sum(dim=-1) / (torch.linalg.vector_norm(logits, dim=-1) + 1e-12)
    log_probs = logits - top_logits[..., :1]  # shifted by the row maximum: exp cannot overflow
    probs = log_probs.exp()
    total = probs.sum(dim=-1, keepdim=True)
    probs.div_(total)
    log_probs.sub_(total.log())
    out.entropy_bits[at] = -(probs * log_probs).sum(dim=-1) / LN2
    out.kl_to_final_bits[at] = (probs * (log_probs - final_log_probs)).sum(dim=-1)
    out.topk_ids[at] = top_ids
    out.topk_probs[at] = probs.gather(-1, top_ids)
    if golds:
        p_golds = torch.cat([probs.gather(-1, index.expand(*probs.shape[:-1], 1)) for index, _ in golds], dim=-1)
        ranks = count_above(probs, p_golds) + 1
        for column, (_, which) in enumerate(golds):
            p_out, rank_out = (out.p_answer, out.answer_rank) if which == "answer" else (out.p_paired_answer, out.paired_answer_rank)
            p_out[at], rank_out[at] = p_golds[..., column], ranks[..., column]
    return probs, log_probs


def count_above(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """int32 (..., T): how many of a row's values (..., V) are strictly above each of its
    thresholds (..., T). 1 + this count is a token's rank (ties share the better rank)."""
    numpy_types = (torch.float32, torch.float64)  # numpy has no bfloat16
    if values.device.type == "cpu" and values.dtype in numpy_types and thresholds.dtype in numpy_types:
        return count_above_numpy(values, thresholds)
    return count_above_torch(values, thresholds)


def count_above_torch(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    # One threshold at a time: a GPU chunk is a whole lens, and one bool per value is enough.
    columns = [(values > thresholds[..., j : j + 1]).sum(dim=-1, dtype=torch.int32) for j in range(thresholds.shape[-1])]
    return torch.stack(columns, dim=-1)


def count_above_numpy(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """count_above for CPU tensors: numpy compares and counts a row in one vectorised pass
    each, 3-4x faster than torch's compare-then-sum kernels (with 4 tracked groups, the
    groups' cost fell from 1.30x to 1.04x plain: docs/performance.md); a row's thresholds
    are counted while it is in cache. The loop runs over rows x thresholds, never over the vocabulary."""
    vocab, per_row = values.shape[-1], thresholds.shape[-1]
    rows = values.detach().reshape(-1, vocab).numpy()
    limits = thresholds.detach().reshape(-1, per_row).numpy()
    counts = np.empty(limits.shape, dtype=np.int32)
    for row, (row_values, row_limits) in enumerate(zip(rows, limits)):
        for column, limit in enumerate(row_limits):
            counts[row, column] = np.count_nonzero(row_values > limit)
    return torch.from_numpy(counts).reshape(thresholds.shape)


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
    """Per prompt (B,): the best scalar temperature and the config's transforms, lens vs head.
    Tensors stay on the device; None where the config has no such transform."""

    temp_est: torch.Tensor
    kl_after_temp_bits: torch.Tensor
    kl_after_scale_bits: torch.Tensor | None
    kl_after_softcap_bits: torch.Tensor | None
    kl_after_scale_then_softcap_bits: torch.Tensor | None


def head_consistency(
    lens_logits: torch.Tensor,
    final_log_probs: torch.Tensor,
    scale: float | None,
    softcap: float | None,
    *,
    one_row_at_a_time: bool = True,
) -> HeadConsistency:
    """How well a scalar temperature or the config's logit transform maps lens logits (B, V) onto the head.

    temp_est is the grid temperature s in [0.1, 10] minimising KL(softmax(z / s) || head);
    the first minimum wins. `scale` divides the logits, `softcap` is tanh(z / c) * c.
    On CPUs one row and temperature at a time keeps the vectors in cache; GPUs take the
    whole (B, temperatures, V) tensor at once.
    """
    grid = torch.logspace(-1, 1, steps=TEMPERATURE_GRID_STEPS, dtype=torch.float32, device=lens_logits.device)
    z = lens_logits.float()
    rows = z.shape[0]
    if one_row_at_a_time:
        kls = torch.stack(
            [
                torch.stack([kl_bits(torch.log_softmax(z[row] / s, dim=-1), final_log_probs[row]) for s in grid])
                for row in range(rows)
            ]
        )
    else:
        kls = kl_bits(torch.log_softmax(z.unsqueeze(1) / grid[:, None], dim=-1), final_log_probs.unsqueeze(1))
    best = torch.argmin(kls, dim=-1)  # the first minimum

    def kl_of(transformed: torch.Tensor) -> torch.Tensor:
        return kl_bits(torch.log_softmax(transformed, dim=-1), final_log_probs)

    has_scale = scale is not None and scale > 0
    has_softcap = softcap is not None and softcap > 0
    return HeadConsistency(
        temp_est=grid[best],
        kl_after_temp_bits=kls.gather(-1, best[:, None]).squeeze(-1),
        kl_after_scale_bits=kl_of(z / scale) if has_scale else None,
        kl_after_softcap_bits=kl_of(torch.tanh(z / softcap) * softcap) if has_softcap else None,
        kl_after_scale_then_softcap_bits=kl_of(torch.tanh((z / scale) / softcap) * softcap)
        if has_scale and has_softcap
        else None,
    )

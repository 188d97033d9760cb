"""Tensors -> Arrow record batches in the warehouse schemas (no Python loops over rows)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from lensdb.extract.stats import NO_TOKEN, LensStats
from lensdb.warehouse import schema


@dataclass
class RowIndex:
    """What each real-token row of a batch is: its prompt (index into the prompt set) and position."""

    prompt: np.ndarray  # int64 (rows,)
    pos: np.ndarray  # int32 (rows,)
    token_id: np.ndarray  # int32 (rows,)
    is_last: np.ndarray  # bool (rows,): the prompt's last position

    def take(self, index) -> "RowIndex":
        return RowIndex(self.prompt[index], self.pos[index], self.token_id[index], self.is_last[index])


def records_batch(
    stats: LensStats,
    *,
    lens: str,
    layers: np.ndarray,
    rows: RowIndex,
    prompt_ids: pa.Array,
    prompt_variants: pa.Array,
    vocab: pa.Array,
) -> pa.RecordBatch:
    """One record per (layer, row); `stats` tensors are shaped (len(layers), len(rows), ...)."""
    n_layers, n_rows = stats.entropy_bits.shape
    n = n_layers * n_rows
    prompt_of_row = np.tile(rows.prompt, n_layers)
    token_ids = np.tile(rows.token_id, n_layers)
    topk_ids = _numpy(stats.topk_ids).astype(np.int32).reshape(n, -1)
    columns = {
        "prompt_id": prompt_ids.take(prompt_of_row),
        "prompt_variant": prompt_variants.take(prompt_of_row),
        "lens": pa.array([lens], pa.string()).take(np.zeros(n, dtype=np.int64)),
        "layer": pa.array(np.repeat(layers.astype(np.int32), n_rows)),
        "pos": pa.array(np.tile(rows.pos, n_layers)),
        "is_last_pos": pa.array(np.tile(rows.is_last, n_layers)),
        "token_id": pa.array(token_ids),
        "token": vocab.take(token_ids),
        "entropy_bits": pa.array(_numpy(stats.entropy_bits).reshape(n)),
        "topk_ids": _lists(pa.array(topk_ids.reshape(-1)), topk_ids.shape[1]),
        "topk_tokens": _lists(vocab.take(topk_ids.reshape(-1)), topk_ids.shape[1]),
        "topk_probs": _lists(pa.array(_numpy(stats.topk_probs).reshape(-1)), topk_ids.shape[1]),
        "p_answer": _nullable_float(stats.p_answer, n),
        "answer_rank": _nullable_rank(stats.answer_rank, n),
        "p_paired_answer": _nullable_float(stats.p_paired_answer, n),
        "paired_answer_rank": _nullable_rank(stats.paired_answer_rank, n),
        "kl_to_final_bits": pa.array(_numpy(stats.kl_to_final_bits).reshape(n)),
        "cos_to_final": pa.array(_numpy(stats.cos_to_final).reshape(n)),
        # KL(reference lens || this lens); the reference is the manifest's reference_lens (norm by default)
        "kl_vs_norm_bits": pa.array(_numpy(stats.kl_vs_reference_bits).reshape(n))
        if stats.kl_vs_reference_bits is not None
        else pa.nulls(n, pa.float64()),
        "legacy_copy_collapse": pa.nulls(n, pa.bool_()),
    }
    return pa.RecordBatch.from_pydict(columns, schema=schema.RECORDS)


def residuals_batch(
    residuals: torch.Tensor, *, layers: np.ndarray, rows: RowIndex, prompt_ids: pa.Array, prompt_variants: pa.Array
) -> pa.RecordBatch:
    """One row per (layer, real token): the residual vector in the model's dtype (bfloat16 widened to float32)."""
    n_layers, n_rows, d_model = residuals.shape
    values = residuals.detach().cpu()
    if values.dtype == torch.bfloat16:
        values = values.float()
    array = values.numpy().reshape(-1)
    value_type = pa.float16() if values.dtype == torch.float16 else pa.float32()
    prompt_of_row = np.tile(rows.prompt, n_layers)
    table_schema = schema.residuals_schema(value_type, d_model)
    return pa.RecordBatch.from_arrays(
        [
            prompt_ids.take(prompt_of_row),
            prompt_variants.take(prompt_of_row),
            pa.array(np.repeat(layers.astype(np.int32), n_rows)),
            pa.array(np.tile(rows.pos, n_layers)),
            pa.FixedSizeListArray.from_arrays(pa.array(array, value_type), d_model),
        ],
        schema=table_schema,
    )


def finals_batch(
    *,
    prompt_ids: list[str],
    prompt_variants: list[str],
    temperatures: list[float],
    entropy_bits: torch.Tensor,
    topk_ids: torch.Tensor,
    topk_probs: torch.Tensor,
    vocab: pa.Array,
) -> pa.Table:
    """One row per (prompt, temperature): the model's own top-k and entropy."""
    ids = _numpy(topk_ids).astype(np.int32)
    width = ids.shape[1]
    return pa.Table.from_pydict(
        {
            "prompt_id": prompt_ids,
            "prompt_variant": prompt_variants,
            "temperature": temperatures,
            "entropy_bits": _numpy(entropy_bits),
            "topk_ids": _lists(pa.array(ids.reshape(-1)), width),
            "topk_tokens": _lists(vocab.take(ids.reshape(-1)), width),
            "topk_probs": _lists(pa.array(_numpy(topk_probs).reshape(-1)), width),
        },
        schema=schema.FINALS,
    )


def consistency_table(prompts, lens: str, fit, scale: float | None, softcap: float | None) -> pa.Table:
    """One row per prompt of a batch: the last-layer lens vs head fit (stats.HeadConsistency)."""
    n = len(prompts)

    def values(tensor):
        return [None] * n if tensor is None else _numpy(tensor).astype(np.float64)

    return pa.Table.from_pydict(
        {
            "prompt_id": [p.prompt.id for p in prompts],
            "prompt_variant": [p.prompt.variant for p in prompts],
            "lens": [lens] * n,
            "temp_est": values(fit.temp_est),
            "kl_after_temp_bits": values(fit.kl_after_temp_bits),
            "cfg_scale": [scale] * n,
            "cfg_softcap": [softcap] * n,
            "kl_after_scale_bits": values(fit.kl_after_scale_bits),
            "kl_after_softcap_bits": values(fit.kl_after_softcap_bits),
            "kl_after_scale_then_softcap_bits": values(fit.kl_after_scale_then_softcap_bits),
        },
        schema=schema.CONSISTENCY,
    )


def prompts_table(prepared, vocab: pa.Array) -> pa.Table:
    """One row per prompt: its text, tokens and gold alignment (batches.PreparedPrompt)."""
    rows = []
    for item in prepared:
        prompt, gold = item.prompt, item.gold
        rows.append(
            {
                "prompt_index": item.index,
                "prompt_id": prompt.id,
                "prompt_variant": prompt.variant,
                "role": prompt.role,
                "text": prompt.text,
                "gold": prompt.gold,
                "control_of": prompt.control_of,
                "paired_variant": item.paired.variant if item.paired else None,
                "temperatures": list(prompt.temperatures),
                "n_tokens": len(item.input_ids),
                "token_ids": item.input_ids,
                "tokens": vocab.take(pa.array(item.input_ids, pa.int64())).to_pylist(),
                "context_ids": item.context_ids,
                "gold_alignment": gold.status if gold else None,
                "gold_variant": gold.variant if gold else None,
                "gold_first_id": gold.first_id if gold else None,
                "gold_answer_ids": list(gold.answer_ids) if gold else None,
                "gold_pieces": list(gold.pieces) if gold else None,
                "paired_gold_first_id": item.paired_gold.first_id if item.paired_gold else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.PROMPTS)


def vocab_table(tokenizer, d_vocab: int, decoded: pa.Array) -> pa.Table:
    """One row per vocabulary id: the tokenizer's own piece and the decoded text (`decoded`, as records hold it).

    Ids the model has beyond the tokenizer's vocabulary (padded embedding rows) have no piece.
    """
    known = min(d_vocab, len(tokenizer))
    pieces = [None if piece is None else str(piece) for piece in tokenizer.convert_ids_to_tokens(list(range(known)))]
    pieces.extend([None] * (d_vocab - known))
    return pa.Table.from_pydict(
        {"token_id": pa.array(np.arange(d_vocab, dtype=np.int32)), "piece": pa.array(pieces, pa.string()), "text": decoded},
        schema=schema.VOCAB,
    )


def _numpy(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _lists(values: pa.Array, width: int) -> pa.ListArray:
    offsets = pa.array(np.arange(0, len(values) + 1, width, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, values)


def _nullable_float(tensor: torch.Tensor, n: int) -> pa.Array:
    values = _numpy(tensor).reshape(n)
    return pa.array(values, mask=np.isnan(values))


def _nullable_rank(tensor: torch.Tensor, n: int) -> pa.Array:
    values = _numpy(tensor).reshape(n).astype(np.int32)
    return pa.array(values, mask=values == NO_TOKEN)

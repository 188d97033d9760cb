"""--attribution in the pipeline: the extra hooks, the per-batch computation on the lens
device, and the `attributions` rows (lensdb/extract/attribution.py has the maths)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from lensdb.extract import attribution as dla
from lensdb.extract.lens import FINAL_NORM, apply_norm
from lensdb.extract.stats import NO_TOKEN
from lensdb.warehouse import schema


@dataclass(frozen=True)
class AttributionPlan:
    parallel: bool
    hooks: tuple[str, ...]  # captured after the residual hooks


def plan(model) -> AttributionPlan:
    parallel = dla.is_parallel(model)
    return AttributionPlan(parallel, tuple(dla.component_hooks(model.n_layers, parallel)))


def split_capture(output, n_residual_hooks: int) -> torch.Tensor:
    """Take the attribution hooks' tensors off the end of output.residuals (views, no copy)."""
    extra = output.residuals[n_residual_hooks:]
    output.residuals = output.residuals[:n_residual_hooks]
    return extra


def attribution_job(ctx, output, extra: torch.Tensor, batch):
    """Contributions of every component to each row's targets, computed here on the device;
    returns the writer job that turns them into `attributions` rows."""
    model = ctx.model
    device = ctx.device
    norm = model.norms[FINAL_NORM]
    final = output.residuals[-1]
    names, targets, valid = _targets(ctx, output.logits, batch, device)
    parts = dla.components(output.residuals, extra, ctx.attribution.parallel)
    safe = targets.clamp(min=0)
    contribution = dla.contributions(parts, dla.frozen_scale(final, norm), norm, model.unembed_weight, safe)
    offset = dla.target_offsets(norm, model.unembed_weight, ctx.unembedding.bias, safe)
    logit = torch.einsum("rd,rtd->rt", apply_norm(final, norm), model.unembed_weight[safe].float())
    if ctx.unembedding.bias is not None:
        logit = logit + ctx.unembedding.bias[safe]
    from lensdb.extract.sink import to_host

    host, copied = to_host((contribution, logit, offset, targets, valid))

    def job():
        copied.wait()
        yield "attributions", _rows(ctx, batch, names, *host), schema.ATTRIBUTIONS, "part"

    return job


def _targets(ctx, logits: torch.Tensor, batch, device):
    """(target names [(kind, group)], ids (rows, T) with NO_TOKEN where none, valid (rows, T))."""
    names = [("gold", None), ("top1", None)]
    columns = [torch.from_numpy(batch.answer_ids).to(device), logits.argmax(dim=-1)]
    groups = ctx.groups
    if groups is not None and groups.index is not None:
        gathered = logits[:, groups.index]  # (rows, G, K): the model's own final logits of each group's tokens
        best = gathered.masked_fill(~groups.mask, float("-inf")).argmax(dim=-1)
        ids = groups.index[torch.arange(groups.index.shape[0], device=device), best]
        ids = ids.masked_fill(~groups.mask.any(dim=-1), NO_TOKEN)
        names += [("group", name) for name in groups.names]
        columns += list(ids.unbind(dim=-1))
    targets = torch.stack(columns, dim=-1)
    return names, targets, targets != NO_TOKEN


def _rows(ctx, batch, names, contribution, logit, offset, targets, valid) -> pa.RecordBatch:
    n_parts, n_rows, n_targets = contribution.shape
    n_layers = (n_parts - 1) // 2
    component = np.array(["embed"] + ["attn", "mlp"] * n_layers, dtype=object)
    block = np.array([-1] + [b for b in range(n_layers) for _ in (0, 1)], dtype=np.int32)
    layer = np.where(block < 0, 0, block + 1).astype(np.int32)
    part_index, row_index, target_index = np.nonzero(np.broadcast_to(valid.numpy()[None], contribution.shape))
    prompt = batch.rows.prompt[row_index]
    token_ids = targets.numpy()[row_index, target_index].astype(np.int32)
    kinds = np.array([kind for kind, _ in names], dtype=object)
    groups = pa.array([group for _, group in names], pa.string())
    return pa.RecordBatch.from_pydict(
        {
            "prompt_id": ctx.prompt_ids.take(prompt),
            "prompt_variant": ctx.prompt_variants.take(prompt),
            "pos": pa.array(batch.rows.pos[row_index]),
            "is_last_pos": pa.array(batch.rows.is_last[row_index]),
            "target": pa.array(kinds[target_index], pa.string()),
            "group_name": groups.take(target_index),
            "token_id": pa.array(token_ids),
            "token": ctx.vocab.take(token_ids),
            "component": pa.array(component[part_index], pa.string()),
            "block": pa.array(block[part_index], mask=block[part_index] < 0),
            "layer": pa.array(layer[part_index]),
            "contribution": pa.array(contribution.numpy()[part_index, row_index, target_index]),
            "logit": pa.array(logit.numpy()[row_index, target_index]),
            "logit_offset": pa.array(offset.numpy()[row_index, target_index]),
        },
        schema=schema.ATTRIBUTIONS,
    )

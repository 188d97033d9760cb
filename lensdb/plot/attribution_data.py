"""The data of `lensdb plot attribution`, from v1.attribution_by_layer only: for one run,
prompt and target token at the prompt's last position, the attention and MLP contributions
of every block to the token's logit (and the embedding's), with their running total."""

from __future__ import annotations

from dataclasses import dataclass

from lensdb.errors import LensdbError, WarehouseError
from lensdb.plot.data import RunInfo, Warehouse
from lensdb.plot.metrics import DEFAULT_VARIANT

TARGETS = ("top1", "gold", "group")

@dataclass
class LayerAttribution:
    run: RunInfo
    prompt_id: str
    variant: str
    target: str
    group: str | None
    token: str
    token_id: int
    blocks: list[int]  # layer numbers 1..n_layers (block + 1)
    attn: list[float]
    mlp: list[float]
    embed: float
    cumulative: list[float]  # at layer 0, 1, ..., n_layers
    logit: float
    logit_offset: float


def layer_attribution(db: Warehouse, run: RunInfo, prompt: str, *, variant: str = DEFAULT_VARIANT, target: str = "top1",
                      group: str | None = None) -> LayerAttribution:
    if target not in TARGETS:
        raise LensdbError(f"unknown target {target!r}; choose one of {', '.join(TARGETS)}")
    if (target == "group") != (group is not None):
        raise LensdbError("--group NAME goes with --target group (and only with it)")
    db.check_prompt(run, prompt, variant)
    rows = db.rows("plot/attribution", run=run.run_id, prompt=prompt, variant=variant, target=target, group=group)
    if not rows:
        if not db.rows("plot/has_attributions", run=run.run_id):
            raise WarehouseError(f"run {run.run_id} has no attributions: extract with --attribution")
        raise WarehouseError(f"run {run.run_id} has no {target} attribution for prompt {prompt!r} ({variant})"
                             + (" (no gold token)" if target == "gold" else ""))
    blocks = [row for row in rows if row["layer"] > 0]
    return LayerAttribution(
        run=run, prompt_id=prompt, variant=variant, target=target, group=group, token=rows[0]["token"], token_id=rows[0]["token_id"],
        blocks=[row["layer"] for row in blocks], attn=[row["attn"] for row in blocks], mlp=[row["mlp"] for row in blocks],
        embed=rows[0]["embed"], cumulative=[row["cumulative"] for row in rows], logit=rows[0]["logit"], logit_offset=rows[0]["logit_offset"],
    )


def attribution_title(data: LayerAttribution) -> str:
    from lensdb.plot import text

    which = f"{data.target} ({data.group})" if data.group else data.target
    return (f"direct logit attribution to {which} token {text.escape(data.token)!s} (id {data.token_id})   "
            f"{data.run.model}, prompt {data.prompt_id} ({data.variant}), last position; logit {data.logit:.3g}")

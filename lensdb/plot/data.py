"""What the figures show, read from the v1 views only (so a picture always agrees with SQL).

Data flow: `Warehouse` (lensdb.plot.reader: one read-only connection, run selection) ->
`Grid` (a layer x position heatmap of one prompt and lens), `Curves` (a last-position
metric across layers, one line per run, the median and 10-90 % band of several prompts)
or `LensGrids` (one grid per lens). The SQL is in lensdb/queries/plot/. Figure building
(lensdb.plot.static, lensdb.plot.interactive) never touches the warehouse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from lensdb.errors import LensdbError, WarehouseError
from lensdb.extract.sites import depth as site_depth
from lensdb.plot import text
from lensdb.plot.metrics import DEFAULT_LENS, DEFAULT_VARIANT, DEPTHS, HIGH_QUANTILE, LOW_QUANTILE, Metric, metric
from lensdb.plot.reader import RunInfo, Warehouse

__all__ = ["Curve", "Curves", "Grid", "LensGrids", "RunInfo", "Warehouse", "curves", "grid", "lens_grids"]


@dataclass
class Grid:
    """One prompt's records through one lens: rows = layers (ascending), columns = positions."""

    run: RunInfo
    prompt_id: str
    variant: str
    lens: str
    metric: Metric
    layers: list[float]  # depths: post sites at their layer, mid sites at layer - 0.5
    positions: list[int]
    position_labels: list[str]  # the prompt's tokens, escaped (pieces where blank)
    values: list[list[float]]  # [layer index][position index]; NaN where the metric is NULL
    top1: list[list[str]]  # the top-1 token of each cell, escaped
    topk: list[list[list[tuple[str, float]]]]  # each cell's top-k (label, probability)
    marks: dict[str, int | None]  # L_copy / L_semantic of this prompt and lens (v1.diagnostics)

    @property
    def last_position(self) -> int:
        return self.positions[-1]

    def value(self, layer: int, pos: int) -> float:
        return self.values[self.layers.index(layer)][self.positions.index(pos)]


@dataclass
class Curve:
    """A last-position metric across layers for one run: the median over its prompts and the
    10 % and 90 % quantiles (equal to the median for one prompt)."""

    run: RunInfo
    label: str
    layers: list[float]  # depths, as Grid.layers
    median: list[float]
    low: list[float]
    high: list[float]
    n_prompts: int
    l_semantic: float | None  # the median L_semantic over prompts that have one
    l_semantic_prompts: int  # how many prompts have one

    def depth(self, mode: str) -> list[float]:
        return [self.at_depth(layer, mode) for layer in self.layers]

    def at_depth(self, layer: float, mode: str) -> float:
        return layer / self.run.n_layers if mode == "relative" else layer


@dataclass
class Curves:
    metric: Metric
    lens: str
    variant: str
    prompts: tuple[str, ...]  # empty: every prompt of the variant
    depth: str
    curves: list[Curve]

    @property
    def is_battery(self) -> bool:
        return any(curve.n_prompts > 1 for curve in self.curves)


@dataclass
class LensGrids:
    """Every lens of a run for one prompt (the raw-vs-norm artifact check as a picture)."""

    run: RunInfo
    prompt_id: str
    variant: str
    metric: Metric
    grids: list[Grid] = field(default_factory=list)


# ---------------------------------------------------------------------- the figures' data

def grid(db: Warehouse, run: RunInfo, prompt: str, *, variant: str = DEFAULT_VARIANT, lens: str = DEFAULT_LENS,
         metric_name: str = "p_top1", require_values: bool = True) -> Grid:
    """The layer x position grid of one prompt through one lens."""
    chosen = metric(metric_name)
    db.check_prompt(run, prompt, variant)
    db.check_lens(run, lens)
    rows = db.rows("plot/grid", metric=chosen.name, run=run.run_id, prompt=prompt, variant=variant, lens=lens)
    if not rows:
        raise WarehouseError(f"run {run.run_id} has no {lens!r} records of prompt {prompt!r} ({variant})")
    for row in rows:  # mid sites between layers: depth layer - 0.5 (extract/sites.py)
        row["layer"] = site_depth(row["layer"], row.pop("site"))
    if require_values and all(row["value"] is None for row in rows):
        why = " (the prompt has no aligned gold answer)" if chosen.needs_gold else ""
        raise WarehouseError(f"{chosen.name} is NULL in every record of prompt {prompt!r} ({variant}, {lens}){why}: choose another --metric")
    layers = sorted({row["layer"] for row in rows})
    positions = sorted({row["pos"] for row in rows})
    ids = [row["token_id"] for row in rows if row["layer"] == layers[0]]
    ids += [(row["topk_ids"] or [None])[0] for row in rows]
    if any(text.is_blank(row["token"]) or text.is_blank((row["topk_tokens"] or [""])[0]) for row in rows):
        ids += [i for row in rows for i in (row["topk_ids"] or [])]
    pieces = db.pieces(run, ids)

    def label(token, token_id):
        return text.label(token, pieces.get(token_id))

    row_of = {layer: i for i, layer in enumerate(layers)}
    col_of = {pos: j for j, pos in enumerate(positions)}
    shape = (len(layers), len(positions))
    values = [[math.nan] * shape[1] for _ in range(shape[0])]
    top1 = [[""] * shape[1] for _ in range(shape[0])]
    topk: list[list[list[tuple[str, float]]]] = [[[] for _ in range(shape[1])] for _ in range(shape[0])]
    position_labels = [""] * shape[1]
    for row in rows:
        i, j = row_of[row["layer"]], col_of[row["pos"]]
        values[i][j] = math.nan if row["value"] is None else float(row["value"])
        tokens = row["topk_tokens"] or []
        token_ids = row["topk_ids"] or [None] * len(tokens)
        topk[i][j] = [(label(t, tid), float(p)) for t, tid, p in zip(tokens, token_ids, row["topk_probs"] or [])]
        top1[i][j] = topk[i][j][0][0] if topk[i][j] else ""
        if not position_labels[j]:
            position_labels[j] = label(row["token"], row["token_id"])
    return Grid(
        run=run, prompt_id=prompt, variant=variant, lens=lens, metric=chosen,
        layers=layers, positions=positions, position_labels=position_labels,
        values=values, top1=top1, topk=topk, marks=db.marks(run, prompt, variant, lens),
    )


def lens_grids(db: Warehouse, run: RunInfo, prompt: str, *, variant: str = DEFAULT_VARIANT,
               metric_name: str = "p_top1") -> LensGrids:
    """One grid per lens of the run (every lens it has records of, whatever its name)."""
    chosen = metric(metric_name)
    db.check_prompt(run, prompt, variant)
    grids = [grid(db, run, prompt, variant=variant, lens=lens, metric_name=metric_name, require_values=False)
             for lens in db.lenses(run)]
    if all(all(math.isnan(v) for row in g.values for v in row) for g in grids):
        raise WarehouseError(f"{chosen.name} is NULL in every record of prompt {prompt!r} ({variant}): choose another --metric")
    return LensGrids(run=run, prompt_id=prompt, variant=variant, metric=chosen, grids=grids)


def curves(db: Warehouse, runs: list[RunInfo], *, metric_name: str = "kl_to_final_bits", lens: str = DEFAULT_LENS,
           variant: str = DEFAULT_VARIANT, prompts=(), depth: str = "layer", skip_empty: bool = False) -> Curves:
    """One curve per run: the metric at each prompt's last position, per layer (v1.pure_next_token).
    A run where the metric is NULL everywhere is an error, or left out with skip_empty (an error
    when that leaves no run)."""
    chosen = metric(metric_name)
    if depth not in DEPTHS:
        raise LensdbError(f"unknown depth {depth!r}; choose one of {', '.join(DEPTHS)}")
    prompts = tuple(prompts)
    labels = _curve_labels(runs)
    result = []
    for run in runs:
        db.check_lens(run, lens)
        for prompt in prompts:
            db.check_prompt(run, prompt, variant)
        params = dict(run=run.run_id, lens=lens, variant=variant, prompts=list(prompts) or None)
        rows = [row for row in db.rows("plot/curve", metric=chosen.name, low=LOW_QUANTILE, high=HIGH_QUANTILE, **params) if row["n"]]
        if not rows:
            if skip_empty:
                continue
            raise WarehouseError(f"{chosen.name} is NULL at every last position of run {run.run_id} ({lens}, {variant}): choose another --metric")
        semantic = db.rows("plot/l_semantic", **params)[0]
        result.append(Curve(
            run=run, label=labels[run.run_id], layers=[site_depth(row["layer"], row["site"]) for row in rows],
            median=[row["median"] for row in rows], low=[row["low"] for row in rows], high=[row["high"] for row in rows],
            n_prompts=max(row["n"] for row in rows),
            l_semantic=semantic["l_semantic"], l_semantic_prompts=semantic["n"],
        ))
    if not result:
        raise WarehouseError(f"{chosen.name} is NULL at every last position of the selected runs ({lens}, {variant})")
    return Curves(metric=chosen, lens=lens, variant=variant, prompts=prompts, depth=depth, curves=result)


def _curve_labels(runs: list[RunInfo]) -> dict[str, str]:
    """The model's name; with its run id where a model has several runs."""
    models = [run.model for run in runs]
    return {run.run_id: run.model if models.count(run.model) == 1 else f"{run.model} ({run.run_id})" for run in runs}

"""What the figures show, read from the v1 views only (so a picture always agrees with SQL).

Data flow: `Warehouse` (one read-only connection) -> run selection -> `Grid` (a layer x
position heatmap of one prompt and lens), `Curves` (a last-position metric across layers,
one line per run, the median and 10-90 % band of several prompts) or `LensGrids` (one
grid per lens). Figure building (lensdb.plot.static, lensdb.plot.interactive) never
touches the warehouse.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from lensdb import catalog
from lensdb.errors import LensdbError, QueryError, WarehouseError
from lensdb.extract.sites import depth as site_depth
from lensdb.plot import text
from lensdb.plot.metrics import (DEFAULT_LENS, DEFAULT_VARIANT, DEPTHS, HIGH_QUANTILE, LOW_QUANTILE, MARKS, Metric,
                                 metric)


@dataclass(frozen=True)
class RunInfo:
    run_id: str
    model: str
    n_layers: int
    lenses: tuple[str, ...]
    source: str
    prompt_set: str | None
    created_at: datetime | None

    @classmethod
    def from_row(cls, row: dict) -> "RunInfo":
        return cls(
            run_id=row["run_id"],
            model=row["model"],
            n_layers=int(row["n_layers"]),
            lenses=tuple(row["lenses"] or ()),
            source=row["source"],
            prompt_set=row["prompt_set"],
            created_at=row["created_at"],
        )


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


class Warehouse:
    """A read-only connection to a warehouse's v1 views."""

    def __init__(self, warehouse=None):
        self.path = catalog.existing_warehouse(warehouse)
        if catalog.committed_run_count(self.path) == 0:
            raise WarehouseError(f"warehouse {self.path} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)")
        self.con = catalog.connect(self.path, read_only=True)
        self._has_vocab: bool | None = None
        self._lenses: dict[str, list[str]] = {}
        self._main_prompts: dict[tuple[str, str], str | None] = {}

    def __enter__(self) -> "Warehouse":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    def rows(self, sql: str, **params) -> list[dict]:
        import duckdb

        try:
            cursor = self.con.execute(sql, params)
            names = [column[0] for column in cursor.description]
            return [dict(zip(names, values)) for values in cursor.fetchall()]
        except duckdb.Error as exc:
            raise QueryError(str(exc).strip().splitlines()[0]) from None

    # ------------------------------------------------------------------ runs
    def run(self, run_id: str) -> RunInfo:
        found = self.rows("SELECT * FROM v1.runs WHERE run_id = $run", run=run_id)
        if not found:
            raise WarehouseError(f"no committed run {run_id!r} in {self.path}")
        return RunInfo.from_row(found[0])

    def latest_run(self, model: str, prompt: str | None = None) -> RunInfo:
        """The latest committed run of `model` (its full id or the part after the last '/'),
        among runs that have `prompt` when one is given."""
        found = self.rows(
            """
            SELECT r.* FROM v1.runs r
            WHERE $model IN (r.model, string_split(r.model, '/')[-1])
              AND ($prompt IS NULL OR EXISTS (SELECT 1 FROM v1.prompts p WHERE p.run_id = r.run_id AND p.prompt_id = $prompt))
            ORDER BY r.created_at DESC, r.finished_at DESC, r.run_id DESC
            """,
            model=model,
            prompt=prompt,
        )
        if not found:
            if prompt and self.rows("SELECT 1 FROM v1.runs WHERE $model IN (model, string_split(model, '/')[-1])", model=model):
                latest = self.latest_run(model)
                raise WarehouseError(f"no committed run of model {model!r} has a prompt {prompt!r} "
                                     f"(its latest run {latest.run_id} has {self._prompt_list(latest)})")
            raise WarehouseError(f"no committed run of model {model!r} in {self.path}")
        models = sorted({row["model"] for row in found})
        if len(models) > 1:
            raise LensdbError(f"model {model!r} matches several models ({', '.join(models)}): give the full id")
        return RunInfo.from_row(found[0])

    def latest_runs(self, prompt: str | None = None, lens: str | None = None) -> list[RunInfo]:
        """The latest committed run of every model, among runs that have `prompt` and `lens` when given."""
        found = self.rows(
            """
            SELECT r.* FROM v1.runs r
            WHERE ($prompt IS NULL OR EXISTS (SELECT 1 FROM v1.prompts p WHERE p.run_id = r.run_id AND p.prompt_id = $prompt))
              AND ($lens IS NULL OR list_contains(r.lenses, $lens))
            QUALIFY row_number() OVER (PARTITION BY r.model ORDER BY r.created_at DESC, r.finished_at DESC, r.run_id DESC) = 1
            ORDER BY r.model
            """,
            prompt=prompt,
            lens=lens,
        )
        if not found:
            wanted = " and ".join(part for part in (f"a prompt {prompt!r}" if prompt else "", f"a {lens!r} lens" if lens else "") if part)
            raise WarehouseError(f"no committed run has {wanted}")
        return [RunInfo.from_row(row) for row in found]

    def select_run(self, run_id: str | None, model: str | None, prompt: str | None = None) -> RunInfo:
        if bool(run_id) == bool(model):
            raise LensdbError("give --run RUN or --model MODEL (one of them)")
        return self.run(run_id) if run_id else self.latest_run(model, prompt)

    def select_runs(self, run_ids=(), models=(), prompt: str | None = None, lens: str | None = None) -> list[RunInfo]:
        """Runs by id, then the latest run of each model (that has `prompt`); without either,
        every model's latest run (that has `prompt` and `lens`)."""
        chosen = [self.run(run_id) for run_id in run_ids] + [self.latest_run(model, prompt) for model in models]
        if not run_ids and not models:
            chosen = self.latest_runs(prompt, lens)
        unique = {run.run_id: run for run in chosen}
        return list(unique.values())

    # ------------------------------------------------------------------ prompts and lenses
    def check_prompt(self, run: RunInfo, prompt: str, variant: str) -> None:
        variants = [row["prompt_variant"] for row in self.rows(
            "SELECT prompt_variant FROM v1.prompts WHERE run_id = $run AND prompt_id = $prompt ORDER BY prompt_variant",
            run=run.run_id, prompt=prompt)]
        if not variants:
            raise WarehouseError(f"run {run.run_id} has no prompt {prompt!r} (it has {self._prompt_list(run)})")
        if variant not in variants:
            raise WarehouseError(f"prompt {prompt!r} of run {run.run_id} has no variant {variant!r} (it has {', '.join(variants)})")

    def _prompt_list(self, run: RunInfo, shown: int = 12) -> str:
        ids = [row["prompt_id"] for row in self.rows(
            "SELECT prompt_id, min(prompt_index) AS i FROM v1.prompts WHERE run_id = $run GROUP BY prompt_id ORDER BY i",
            run=run.run_id)]
        return ", ".join(ids[:shown]) + (f", ... ({len(ids)} prompts)" if len(ids) > shown else "")

    def check_lens(self, run: RunInfo, lens: str) -> None:
        if lens not in self.lenses(run):
            raise WarehouseError(f"run {run.run_id} has no {lens!r} lens (it has {', '.join(self.lenses(run))})")

    def lenses(self, run: RunInfo) -> list[str]:
        """The lenses with records in `run`, in the manifest's order (any other name after)."""
        if run.run_id not in self._lenses:
            present = {row["lens"] for row in self.rows("SELECT DISTINCT lens FROM v1.records WHERE run_id = $run", run=run.run_id)}
            self._lenses[run.run_id] = [lens for lens in run.lenses if lens in present] + sorted(present - set(run.lenses))
        return self._lenses[run.run_id]

    def main_prompt(self, run: RunInfo, lens: str = DEFAULT_LENS) -> str | None:
        """The prompt a run is about: its first 'orig' prompt with role 'pos' (else with a gold,
        else any) that has records at more than one position."""
        key = (run.run_id, lens)
        if key not in self._main_prompts:
            found = self.rows(
                """
                WITH spread AS (
                    SELECT prompt_id, prompt_variant, count(DISTINCT pos) AS positions FROM v1.records
                    WHERE run_id = $run AND lens = $lens AND layer = 0 AND prompt_variant = 'orig'
                    GROUP BY prompt_id, prompt_variant
                )
                SELECT p.prompt_id FROM v1.prompts p JOIN spread s USING (prompt_id, prompt_variant)
                WHERE p.run_id = $run AND s.positions > 1
                ORDER BY (p.role = 'pos') DESC, (p.gold IS NOT NULL) DESC, p.prompt_index
                LIMIT 1
                """,
                run=run.run_id,
                lens=lens,
            )
            self._main_prompts[key] = found[0]["prompt_id"] if found else None
        return self._main_prompts[key]

    # ------------------------------------------------------------------ vocabulary pieces
    @property
    def has_vocab(self) -> bool:
        """Whether the catalog has v1.vocab (run_id, token_id, piece, text)."""
        if self._has_vocab is None:
            self._has_vocab = bool(self.rows(
                "SELECT 1 FROM duckdb_views() WHERE schema_name = 'v1' AND view_name = 'vocab'"))
        return self._has_vocab

    def pieces(self, run: RunInfo, token_ids) -> dict[int, str]:
        """Vocabulary pieces of `token_ids` in `run` (empty without v1.vocab)."""
        wanted = sorted({int(i) for i in token_ids if i is not None})
        if not wanted or not self.has_vocab:
            return {}
        found = self.rows(
            "SELECT token_id, piece FROM v1.vocab WHERE run_id = $run AND list_contains($ids, token_id)",
            run=run.run_id,
            ids=wanted,
        )
        return {row["token_id"]: row["piece"] for row in found}

    def marks(self, run: RunInfo, prompt: str, variant: str, lens: str) -> dict[str, int | None]:
        found = self.rows(
            f"SELECT {', '.join(MARKS)} FROM v1.diagnostics WHERE run_id = $run AND prompt_id = $prompt AND prompt_variant = $variant AND lens = $lens",
            run=run.run_id, prompt=prompt, variant=variant, lens=lens,
        )
        return {name: (found[0][name] if found else None) for name in MARKS}


# ---------------------------------------------------------------------- the figures' data

GRID_SQL = """
SELECT layer, site, pos, token, token_id, {value} AS value, topk_ids, topk_tokens, topk_probs
FROM v1.records
WHERE run_id = $run AND prompt_id = $prompt AND prompt_variant = $variant AND lens = $lens
ORDER BY layer, pos
"""


def grid(db: Warehouse, run: RunInfo, prompt: str, *, variant: str = DEFAULT_VARIANT, lens: str = DEFAULT_LENS,
         metric_name: str = "p_top1", require_values: bool = True) -> Grid:
    """The layer x position grid of one prompt through one lens."""
    chosen = metric(metric_name)
    db.check_prompt(run, prompt, variant)
    db.check_lens(run, lens)
    rows = db.rows(GRID_SQL.format(value=chosen.sql), run=run.run_id, prompt=prompt, variant=variant, lens=lens)
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


CURVE_SQL = """
WITH v AS (
    SELECT layer, site, {value} AS value FROM v1.pure_next_token
    WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant
      AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
)
SELECT layer, site, count(value) AS n,
       quantile_cont(value, 0.5) AS median,
       quantile_cont(value, {low}) AS low,
       quantile_cont(value, {high}) AS high
FROM v GROUP BY layer, site ORDER BY layer, site = 'post'
"""

L_SEMANTIC_SQL = """
SELECT quantile_cont(L_semantic, 0.5) AS l_semantic, count(L_semantic) AS n
FROM v1.diagnostics
WHERE run_id = $run AND lens = $lens AND prompt_variant = $variant
  AND ($prompts IS NULL OR list_contains($prompts, prompt_id))
"""


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
        rows = [row for row in db.rows(CURVE_SQL.format(value=chosen.sql, low=LOW_QUANTILE, high=HIGH_QUANTILE), **params) if row["n"]]
        if not rows:
            if skip_empty:
                continue
            raise WarehouseError(f"{chosen.name} is NULL at every last position of run {run.run_id} ({lens}, {variant}): choose another --metric")
        semantic = db.rows(L_SEMANTIC_SQL, **params)[0]
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

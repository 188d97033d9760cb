"""The figures' reader: one read-only connection to a warehouse's v1 views, and the runs,
prompts and lenses a figure is of (checked, with errors that list what there is).

Every statement is a named query in lensdb/queries/plot/ (values bound as parameters).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from lensdb import catalog, queries
from lensdb.errors import LensdbError, WarehouseError
from lensdb.plot.metrics import DEFAULT_LENS, MARKS


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

    def rows(self, query: str, **params) -> list[dict]:
        """The rows of the named query `query` (lensdb/queries/QUERY.sql) with `params` bound."""
        return queries.rows(self.con, query, **params)

    # ------------------------------------------------------------------ runs
    def run(self, run_id: str) -> RunInfo:
        found = self.rows("plot/run", run=run_id)
        if not found:
            raise WarehouseError(f"no committed run {run_id!r} in {self.path}")
        return RunInfo.from_row(found[0])

    def latest_run(self, model: str, prompt: str | None = None) -> RunInfo:
        """The latest committed run of `model` (its full id or the part after the last '/'),
        among runs that have `prompt` when one is given."""
        found = self.rows("plot/latest_run", model=model, prompt=prompt)
        if not found:
            if prompt and self.rows("plot/model_runs", model=model):
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
        found = self.rows("plot/latest_runs", prompt=prompt, lens=lens)
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
        variants = [row["prompt_variant"] for row in self.rows("plot/prompt_variants", run=run.run_id, prompt=prompt)]
        if not variants:
            raise WarehouseError(f"run {run.run_id} has no prompt {prompt!r} (it has {self._prompt_list(run)})")
        if variant not in variants:
            raise WarehouseError(f"prompt {prompt!r} of run {run.run_id} has no variant {variant!r} (it has {', '.join(variants)})")

    def _prompt_list(self, run: RunInfo, shown: int = 12) -> str:
        ids = [row["prompt_id"] for row in self.rows("plot/prompt_ids", run=run.run_id)]
        return ", ".join(ids[:shown]) + (f", ... ({len(ids)} prompts)" if len(ids) > shown else "")

    def check_lens(self, run: RunInfo, lens: str) -> None:
        if lens not in self.lenses(run):
            raise WarehouseError(f"run {run.run_id} has no {lens!r} lens (it has {', '.join(self.lenses(run))})")

    def lenses(self, run: RunInfo) -> list[str]:
        """The lenses with records in `run`, in the manifest's order (any other name after)."""
        if run.run_id not in self._lenses:
            present = {row["lens"] for row in self.rows("plot/record_lenses", run=run.run_id)}
            self._lenses[run.run_id] = [lens for lens in run.lenses if lens in present] + sorted(present - set(run.lenses))
        return self._lenses[run.run_id]

    def main_prompt(self, run: RunInfo, lens: str = DEFAULT_LENS) -> str | None:
        """The prompt a run is about: its first 'orig' prompt with role 'pos' (else with a gold,
        else any) that has records at more than one position."""
        key = (run.run_id, lens)
        if key not in self._main_prompts:
            found = self.rows("plot/main_prompt", run=run.run_id, lens=lens)
            self._main_prompts[key] = found[0]["prompt_id"] if found else None
        return self._main_prompts[key]

    # ------------------------------------------------------------------ vocabulary pieces
    @property
    def has_vocab(self) -> bool:
        """Whether the catalog has v1.vocab (run_id, token_id, piece, text)."""
        if self._has_vocab is None:
            self._has_vocab = bool(self.rows("plot/has_vocab"))
        return self._has_vocab

    def pieces(self, run: RunInfo, token_ids) -> dict[int, str]:
        """Vocabulary pieces of `token_ids` in `run` (empty without v1.vocab)."""
        wanted = sorted({int(i) for i in token_ids if i is not None})
        if not wanted or not self.has_vocab:
            return {}
        found = self.rows("plot/vocab_pieces", run=run.run_id, ids=wanted)
        return {row["token_id"]: row["piece"] for row in found}

    def marks(self, run: RunInfo, prompt: str, variant: str, lens: str) -> dict[str, int | None]:
        found = self.rows("plot/marks", marks=list(MARKS), run=run.run_id, prompt=prompt, variant=variant, lens=lens)
        return {name: (found[0][name] if found else None) for name in MARKS}

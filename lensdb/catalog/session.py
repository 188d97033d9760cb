"""A session: a DuckDB connection with the views, and the damaged runs they leave out.

A query that fails on a run's files leaves that run out and runs again: the run is the one
the error names, or else the one found by running the SQL on halves of the runs, confirmed by
reading its files to the end; the finding is recorded (health.record_data_damage), so that
the next survey lists the run. DuckDB errors become one line (`query_error`).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa

from lensdb.catalog.views import SKIP_VARIABLE, Root, set_variables
from lensdb.errors import DamagedRunsWarning, QueryError, WarehouseError, first_line
from lensdb.warehouse import health, layout
from lensdb.warehouse.health import DamagedRun
from lensdb.warehouse.layout import open_warehouse


@dataclass
class Session:
    """A connection with the views, and what lensdb knows about the warehouse's runs."""

    con: object
    warehouse: Path
    root: Root
    damaged: list[DamagedRun] = field(default_factory=list)
    run_folders: int | None = None  # run folders seen when opening

    def leave_out(self, run: DamagedRun) -> None:
        self.damaged.append(run)
        set_variables(self.con, self.damaged)

    def run(self, sql: str, *, retry: bool = True) -> pa.Table:
        """Run SQL; a run whose files fail to read is left out and the SQL run again.

        The run is the one the error names, or else (DuckDB does not always name the file)
        the one found by running the SQL on halves of the runs and confirmed by reading
        its files to the end; an error that is the query's own is raised as it is.
        """
        import duckdb

        while True:
            try:
                return self._execute(sql)
            except duckdb.Error as exc:
                run = None
                if retry and _may_be_file_damage(exc):
                    run = _damaged_run_in(exc, self.warehouse, self.root) or self._search_damaged_run(sql)
                if run is None or run.folder_key in {known.folder_key for known in self.damaged}:
                    raise query_error(exc, self.warehouse, self.root) from None
                # Recorded, so that v1.damaged_runs (and the next check) lists it from now on.
                recorded = health.record_data_damage(open_warehouse(self.warehouse), run)
                self.leave_out(dataclasses.replace(run, recorded=recorded))

    def _execute(self, sql: str) -> pa.Table:
        relation = self.con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})

    def _search_damaged_run(self, sql: str) -> DamagedRun | None:
        import duckdb

        known = [run.folder_key for run in self.damaged]
        candidates = [folder for folder in open_warehouse(self.warehouse).run_folders() if folder.key not in known]

        def fails_with_only(kept: list[layout.RunFolder]) -> bool:
            keep = {folder.key for folder in kept}
            self.con.execute(f"SET VARIABLE {SKIP_VARIABLE} = ?::VARCHAR[]", [known + [f.key for f in candidates if f.key not in keep]])
            try:
                self._execute(sql)
                return False
            except duckdb.Error:
                return True

        try:
            if not candidates or fails_with_only([]):
                return None  # it fails without any run: the query's own error
            group = candidates
            while len(group) > 1:
                half = group[: len(group) // 2]
                group = half if fails_with_only(half) else group[len(group) // 2 :]
        finally:
            set_variables(self.con, self.damaged)
        reason = open_warehouse(self.warehouse).run_data_damage(group[0].path)
        if reason is None:
            return None
        return DamagedRun(model=group[0].model, run_id=group[0].run_id, path=group[0].path, reason=reason)


def warn_damaged(damaged: list[DamagedRun]) -> None:
    if damaged:
        warnings.warn(DamagedRunsWarning(damaged_message(damaged)), stacklevel=4)


def damaged_message(damaged: list[DamagedRun]) -> str:
    runs = "; ".join(f"run {run.run_id} ({run.model}): {run.reason}" for run in damaged)
    noun = "run is" if len(damaged) == 1 else "runs are"
    unrecorded = [run.run_id for run in damaged if not run.recorded]
    hint = "SELECT * FROM v1.damaged_runs"
    if unrecorded:
        hint += (f"; this query found the damage of run {', '.join(unrecorded)} inside its files and could not record it"
                 " (no writable run folder or cache): only queries that read those files leave it out")
    return f"{len(damaged)} damaged {noun} left out of every view: {runs} ({hint})"


_FILE_IN_MESSAGE = re.compile(r"""['"]([^'"]+\.parquet)['"]""")
_RUN_FILE = re.compile(r"[/\\]runs[/\\](model=[^/\\'\"]*)[/\\]run=([^/\\'\"]*)[/\\]([^/\\'\"]+)[/\\]([^/\\'\"]+\.parquet)")


def _may_be_file_damage(exc: Exception) -> bool:
    """DuckDB errors a damaged file can cause (a query's own mistakes have other kinds,
    except a file whose column cannot be cast: DuckDB names the file it was reading)."""
    import duckdb

    file_kinds = (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException, duckdb.SerializationException)
    reading = isinstance(exc, duckdb.ConversionException) and "while reading file" in str(exc)
    return type(exc) is duckdb.Error or isinstance(exc, file_kinds) or reading


def _damaged_run_in(exc: Exception, warehouse, root: Root) -> DamagedRun | None:
    """The run whose Parquet file a DuckDB error names, if that run's files are damaged."""
    matches = list(_RUN_FILE.finditer(str(exc)))
    if not matches:
        return None
    model_folder, run_id, _table, _name = matches[-1].groups()
    return open_warehouse(warehouse).damage_of(model_folder, run_id)


def query_error(exc: Exception, warehouse: Path, root: Root | None) -> Exception:
    message = first_line(exc)
    if "Permission Error" in message and "disabled by configuration" in message:
        return QueryError(f"{message} (lensdb query reads the warehouse only; --allow-files lifts this)")
    file_match = _FILE_IN_MESSAGE.search(str(exc))
    if file_match:
        bad = Path(file_match.group(1))
        run = next((part.removeprefix("run=") for part in bad.parts if part.startswith("run=")), None)
        shown = bad
        for base in (warehouse, root.path if root else None):
            if isinstance(base, Path) and bad.is_relative_to(base):
                shown = bad.relative_to(base)
        where = f" (run {run})" if run else ""
        return WarehouseError(f"corrupt or unreadable Parquet file {shown}{where}: {message}")
    if "does not exist" in message and ("Table" in message or "Catalog" in message or "Macro" in message):
        return QueryError(f"{message} (see `lensdb query --list` for the views)")
    return QueryError(message)

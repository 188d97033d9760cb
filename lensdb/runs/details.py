"""`lensdb show RUN`: the manifest, each table's rows and size, and the run's diagnostics
summarised from the views (the named queries in lensdb/queries/show/)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lensdb.errors import folded
from lensdb.resources import named_queries_dir
from lensdb.runs.listing import RunInfo, TableStats, existing_warehouse, find_runs, folder_path, table_stats
from lensdb.warehouse import reading


@dataclass
class RunDetails:
    """`lensdb show RUN`: the manifest, each table's size, and a summary of the run's diagnostics."""

    info: RunInfo
    manifest: dict | None
    tables: dict[str, TableStats]
    diagnostics: list[dict] = field(default_factory=list)  # per lens x role
    last_layer: list[dict] = field(default_factory=list)  # per lens: the last layer vs the model head
    raw_lens: list[dict] = field(default_factory=list)  # prompts per lens_artifact_risk
    note: str | None = None  # why diagnostics are missing


def show_run(warehouse, run_id: str) -> RunDetails:
    """The run's manifest, its tables' rows and sizes, and its diagnostics summarised (from the v1 views)."""
    path = existing_warehouse(warehouse)
    info = find_runs(path, [run_id])[0]
    folder = folder_path(path, info)
    files = reading.folder_files(path, folder)
    manifest = reading.read_manifest(path, folder, files)
    names = sorted({name.split("/", 1)[0] for name in files if "/" in name})
    tables = {table: table_stats(path, folder, files, table) for table in names}
    details = RunDetails(info=info, manifest=manifest, tables=tables)
    if info.damaged:
        details.note = f"damaged ({info.damaged}): no diagnostics"
        return details
    _add_diagnostics(path, details)
    return details


def _add_diagnostics(warehouse: Path, details: RunDetails) -> None:
    from lensdb import catalog
    from lensdb.errors import LensdbError

    try:
        con = catalog.connect(warehouse, read_only=True)
    except LensdbError as exc:
        details.note = f"no diagnostics: {exc}"
        return
    try:
        queries = catalog.named_queries(named_queries_dir() / "show")
        details.diagnostics = _rows(con, queries["diagnostics"].sql, details.info.run_id)
        details.last_layer = _rows(con, queries["last_layer"].sql, details.info.run_id)
        details.raw_lens = _rows(con, queries["raw_lens"].sql, details.info.run_id)
    except Exception as exc:  # noqa: BLE001 - a query error must not hide the manifest
        details.note = f"no diagnostics: {folded(exc, 200)}"
    finally:
        con.close()


def _rows(con, sql: str, run_id: str) -> list[dict]:
    cursor = con.execute(sql, {"run": run_id})
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]

"""The schema files under `_schema/`: one Parquet file per table that the views read first.

A view's `read_parquet` takes its columns from the first file it reads, so
`_schema/model=_/run=_/<table>/part-00000.parquet` (which sorts before `runs/`) gives every
view its columns, also before any run has that table, and a damaged run file is never the
one a query plans with. The files hold only NULL rows, which the views prune by file name
before reading any row; their row counts are there for DuckDB's planner, which estimates a
scan as (rows of the first file) x (number of files): with typical per-file counts it puts
the small side of each join on its build side. `_schema/lenses/lens.parquet` does the same
for the stored tuned lenses (v1.lenses reads `<root>/*/*/lens.parquet`).

Several processes may write them at once (the first queries on a new warehouse, extracts):
each writes a temporary file of its own and renames it into place.
"""

from __future__ import annotations

import time
from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import WarehouseError
from lensdb.files import replace_whole
from lensdb.warehouse import paths
from lensdb.warehouse.schema import LENSES, TABLES, parquet_bytes, with_metadata

# Typical rows per file of each table (planner estimates only; never read).
ANCHOR_ROWS = {
    "manifest": 1,
    "prompts": 1_000,
    "records": 100_000,
    "records_mid": 100_000,
    "finals": 1_000,
    "consistency": 1_000,
    "legacy_raw_lens_samples": 1_000,
    "residuals": 100_000,
    "residuals_mid": 100_000,
    "vocab": 50_000,
    "group_tokens": 100,
    "token_groups": 100_000,
    "answer_tokens": 1_000,
    "answer_mass": 100_000,
    "attributions": 100_000,
    "lenses": 10,
}
# Every schema file: the run tables, and the stored lenses' table.
SCHEMAS = {**TABLES, "lenses": LENSES}
ANCHOR_FOLDER = ("model=_", "run=_")
STALE_SECONDS = 600


def anchor_path(root: Path | PurePosixPath, table: str) -> Path | PurePosixPath:
    if table == "lenses":
        return root / paths.SCHEMA_DIR / paths.LENSES_DIR / "lens.parquet"
    return root / paths.SCHEMA_DIR / ANCHOR_FOLDER[0] / ANCHOR_FOLDER[1] / table / "part-00000.parquet"


def anchor_table(table: str) -> pa.Table:
    schema = with_metadata(SCHEMAS[table], table)
    rows = ANCHOR_ROWS[table]
    return pa.table([pa.nulls(rows, field.type) for field in schema], schema=schema)


def anchors_current(root: Path) -> bool:
    """Whether every schema file exists, reads, and has the wanted schema and row count."""
    return all(_current(anchor_path(root, table), table) for table in SCHEMAS)


def write_schema_anchors(root: Path) -> None:
    """Write the schema files that are missing, damaged or out of date (OSError if it cannot)."""
    for table in SCHEMAS:
        path = anchor_path(root, table)
        if _current(path, table):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(path.parent)
        replace_whole(path, lambda temporary, table=table: pq.write_table(anchor_table(table), temporary, compression="zstd"))


def ensure_store_anchors(store, *, writer: bool) -> None:
    """The schema files of an object store (remote.RemoteWarehouse), from one listing: those it
    lacks are written, and by a `writer` also those that differ from this lensdb's (a new
    schema version). A reader that cannot write a missing one gets one line."""
    present = store.listing(paths.SCHEMA_DIR)
    for table in SCHEMAS:
        relative = str(anchor_path(PurePosixPath(""), table))
        entry = present.get(relative)
        if entry is not None and not writer:
            continue
        data = parquet_bytes(anchor_table(table), compression="zstd")
        if entry is not None and entry.size == len(data):
            continue
        try:
            store.write_bytes(relative, data)
        except WarehouseError as exc:
            if writer or entry is None:
                raise WarehouseError(f"the warehouse {store.url} lacks its schema files and they cannot be written: {exc}") from None


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary files of writers killed mid-write (a write takes milliseconds)."""
    for leftover in folder.glob("*.tmp"):
        try:
            if time.time() - leftover.stat().st_mtime > STALE_SECONDS:
                leftover.unlink()
        except OSError:
            pass


def _current(path: Path, table: str) -> bool:
    try:
        metadata = pq.read_metadata(path)
        schema, wanted = metadata.schema.to_arrow_schema(), with_metadata(SCHEMAS[table], table)
        # Field metadata (Parquet field ids) differs after a round trip; the schema's own does not.
        return metadata.num_rows == ANCHOR_ROWS[table] and schema.equals(wanted) and schema.metadata == wanted.metadata
    except Exception:  # noqa: BLE001 - missing or damaged: written again
        return False

"""Reading one run folder directly (not through the views), in any warehouse: its manifest,
its files and their sizes, a table's row count from the Parquet footers."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import WarehouseError
from lensdb.warehouse.layout import open_warehouse
from lensdb.warehouse.paths import table_files  # noqa: F401 - callers read it from here too


def folder_files(warehouse, folder: Path | PurePosixPath) -> dict[str, int]:
    """Every file of a run folder: path relative to the folder -> bytes."""
    return open_warehouse(warehouse).folder_files(folder)


def read_manifest(warehouse, folder: Path | PurePosixPath, files: dict[str, int] | None = None) -> dict | None:
    """The manifest's one row, or None when it is missing or unreadable."""
    names = table_files(files if files is not None else folder_files(warehouse, folder), "manifest")
    if not names:
        return None
    try:
        return _read(warehouse, folder, next(iter(names)), lambda source: pq.read_table(source).to_pylist()[0])
    except (OSError, ValueError, IndexError, WarehouseError, pa.ArrowException):
        return None


def table_rows(warehouse, folder: Path | PurePosixPath, table: str, files: dict[str, int] | None = None) -> int | None:
    """Rows of a table from its files' footers (None: a footer could not be read)."""
    names = table_files(files if files is not None else folder_files(warehouse, folder), table)
    rows = 0
    for name in names:
        try:
            rows += _read(warehouse, folder, name, lambda source: pq.read_metadata(source).num_rows)
        except (OSError, ValueError, WarehouseError, pa.ArrowException):
            return None
    return rows


def _read(warehouse, folder, name: str, reader):
    with open_warehouse(warehouse).open_file(folder, name) as source:
        return reader(source)

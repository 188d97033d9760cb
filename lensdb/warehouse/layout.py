"""Where things live in a warehouse folder.

    <warehouse>/
      runs/model=<model key>/run=<run id>/<table>/part-NNNNN.parquet   committed runs
      _staging/<token>/<table>/...                                      runs being written
      _trash/<token>/<table>/...                                        runs being removed
      _schema/model=_/run=_/<table>/part-00000.parquet                  empty files giving the
                                                                        views their columns
      lensdb.duckdb                                                     the DuckDB catalog (views)

A run is written under `_staging/` and renamed into `runs/` in one step; its manifest is
written last, and the views only read runs that have one.
"""

from __future__ import annotations

import os
import re
import secrets
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import quote, unquote

from lensdb.errors import WarehouseError

DEFAULT_WAREHOUSE = "warehouse"
WAREHOUSE_ENV = "LENSDB_WAREHOUSE"
CATALOG_FILE = "lensdb.duckdb"
RUNS_DIR = "runs"
STAGING_DIR = "_staging"
TRASH_DIR = "_trash"  # `lensdb rm` renames a run here (out of every view) before deleting it
SCHEMA_DIR = "_schema"

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_warehouse(warehouse: str | os.PathLike | None) -> Path:
    """The warehouse folder: the argument, else $LENSDB_WAREHOUSE, else ./warehouse."""
    chosen = warehouse if warehouse is not None else os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE
    return Path(chosen).expanduser().resolve()


def model_key(model: str) -> str:
    """A path segment for a model id: percent-encoded, so 'org/name' stays readable and unique."""
    return quote(model, safe="-_.")


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(3)}"


def check_run_id(run_id: str) -> str:
    if not _RUN_ID.match(run_id):
        raise WarehouseError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return run_id


def run_dir(warehouse: Path, model: str, run_id: str) -> Path:
    return warehouse / RUNS_DIR / f"model={model_key(model)}" / f"run={run_id}"


def find_run_dirs(warehouse: Path, run_id: str) -> list[Path]:
    return sorted((warehouse / RUNS_DIR).glob(f"model=*/run={run_id}"))



def run_folders(warehouse: Path) -> list[Path]:
    """Every runs/model=*/run=* folder (committed or not: its manifest decides), sorted."""
    return sorted(path for path in (warehouse / RUNS_DIR).glob("model=*/run=*") if path.is_dir())


def model_of_folder(run_folder: Path) -> str:
    """The model id of a runs/model=<key>/run=<id> folder (the key decoded)."""
    return unquote(run_folder.parent.name.removeprefix("model="))


def run_id_of_folder(run_folder: Path) -> str:
    return run_folder.name.removeprefix("run=")

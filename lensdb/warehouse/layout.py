"""The warehouse as the rest of lensdb sees it: where it is (`resolve_warehouse`), its one
interface (`open_warehouse`, a base.Warehouse: lensdb/warehouse/base.py says where to add a
store), and the names of its folders and files (paths.py, re-exported here).

Nothing below lensdb/warehouse/ asks whether a warehouse is a folder or an object store: it
opens the warehouse and calls the interface.
"""

from __future__ import annotations

import os
from pathlib import Path

from lensdb.errors import WarehouseError
from lensdb.warehouse.paths import (
    RUNS_DIR,
    STAGING_DIR,
    TRASH_DIR,
    SCHEMA_DIR,
    LENSES_DIR,
    CATALOG_FILE,
    MODEL_PREFIX,
    RUN_PREFIX,
    SHORTENED_MARK,
    MODEL_KEY_MAX,
    DEFAULT_WAREHOUSE,
    WAREHOUSE_ENV,
    RunFolder,
    check_model_name,
    check_run_id,
    glob_literal,
    glob_safe,
    is_utf8,
    linked_data_paths,
    list_run_folders,
    model_from_key,
    model_key,
    model_of_folder,
    new_run_id,
    run_dir,
    run_id_of_folder,
    sql_string,
)

# paths.py's names, which callers read from here, and this module's own.
__all__ = [
    "CATALOG_FILE", "DEFAULT_WAREHOUSE", "LENSES_DIR", "MODEL_KEY_MAX", "MODEL_PREFIX",
    "RUN_PREFIX", "RUNS_DIR", "SCHEMA_DIR", "SHORTENED_MARK", "STAGING_DIR", "TRASH_DIR",
    "WAREHOUSE_ENV", "check_model_name", "check_run_id", "find_run_dirs", "glob_literal",
    "glob_safe", "is_utf8", "linked_data_paths", "list_run_folders", "model_from_key", "model_key",
    "model_of_folder", "new_run_id", "open_warehouse", "resolve_warehouse", "run_dir",
    "run_folders", "run_id_of_folder", "RunFolder", "sql_string",
]


def resolve_warehouse(warehouse):
    """The warehouse's location: the argument, else $LENSDB_WAREHOUSE, else ./warehouse. A folder
    (a Path), or for a URL such as s3://bucket/prefix a remote.RemoteWarehouse (file:// URLs
    are folders)."""
    from lensdb.warehouse import base, remote, urls

    if isinstance(warehouse, base.Warehouse):
        return warehouse.location
    chosen = warehouse if warehouse is not None else os.environ.get(WAREHOUSE_ENV) or DEFAULT_WAREHOUSE
    if str(chosen) == "":
        raise WarehouseError("the warehouse path is empty (pass --warehouse DIR or set $LENSDB_WAREHOUSE)")
    if isinstance(chosen, str) and urls.is_url(chosen):
        chosen = remote.open_url(chosen)
        if isinstance(chosen, remote.RemoteWarehouse):
            return chosen
    path = Path(chosen).expanduser().resolve()
    if not is_utf8(str(path)):
        raise WarehouseError(f"the warehouse path {str(path)!r} is not valid UTF-8; choose a folder whose name is")
    return path


def open_warehouse(warehouse):
    """The warehouse's interface (base.Warehouse) for a location, an argument as
    resolve_warehouse takes it, or a Warehouse (returned as it is)."""
    from lensdb.warehouse import base, local

    if isinstance(warehouse, base.Warehouse):
        return warehouse
    location = warehouse if isinstance(warehouse, Path) else resolve_warehouse(warehouse)
    return location if isinstance(location, base.Warehouse) else local.LocalWarehouse(location)


def run_folders(warehouse) -> list[RunFolder]:
    """Every run folder of the warehouse, sorted (committed or damaged; base.Warehouse.run_folders)."""
    return open_warehouse(warehouse).run_folders()


def find_run_dirs(warehouse, run_id: str) -> list:
    """The folders of `run_id` under every model (a committed run id is unique: at most one)."""
    return [folder.path for folder in run_folders(warehouse) if folder.run_id == run_id]

"""Changing a warehouse's runs: `lensdb rm` and `lensdb cleanup`, each through the
warehouse's interface (base.Warehouse.remove_runs, leftovers), which does it the store's way:
a folder's run leaves every view in one rename into _trash/, an object store's when its
manifest is deleted."""

from __future__ import annotations

from lensdb.runs.listing import RunInfo, existing_warehouse, folder_path, runs_to_remove
from lensdb.warehouse.base import LeftoverInfo
from lensdb.warehouse.layout import open_warehouse


def remove_runs(warehouse, run_ids: list[str], model: str | None = None) -> list[RunInfo]:
    """Remove runs: each leaves every view in one rename, then its files are deleted.

    Every id is checked first (runs_to_remove): with an unknown or ambiguous id nothing is removed.
    """
    path = existing_warehouse(warehouse)
    runs = runs_to_remove(path, run_ids, model)
    open_warehouse(path).remove_runs([(run.run_id, folder_path(path, run)) for run in runs])
    return runs


def leftovers(warehouse=None, older_than_seconds: float = 3600.0) -> list[LeftoverInfo]:
    """What crashed writers left: staging and trash folders of a local warehouse, run prefixes
    without a manifest and files no manifest lists in an object store (Warehouse.leftovers)."""
    return open_warehouse(existing_warehouse(warehouse)).leftovers(older_than_seconds)


def cleanup(warehouse=None, older_than_seconds: float = 3600.0, *, dry_run: bool = False) -> list[LeftoverInfo]:
    """Remove the removable leftovers (see `leftovers`); returns them."""
    path = existing_warehouse(warehouse)
    removed = [left for left in leftovers(path, older_than_seconds) if left.removable]
    if dry_run:
        return removed
    store = open_warehouse(path)
    for left in removed:
        store.remove_leftover(left)
    return removed

"""Listing runs: every run folder of a warehouse from the folder tree, the manifests and the
Parquet footers directly, not the views, so that a damaged run is listed (status `damaged`)
and never hides the others."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from lensdb.errors import WarehouseError
from lensdb.warehouse import layout, reading
from lensdb.warehouse.layout import open_warehouse

DAMAGED = "damaged"


@dataclass(frozen=True)
class RunInfo:
    """One run folder as `lensdb runs` lists it."""

    run_id: str
    model: str
    source: str | None  # extract or legacy
    status: str  # the manifest's status (committed), or damaged
    prompt_set: str | None
    prompts: int | None  # rows of the prompts table (None: unreadable)
    records: int | None
    created_at: datetime | None  # UTC
    bytes_on_disk: int
    damaged: str | None  # why the run cannot be read; None when it can
    path: Path

    @property
    def size(self) -> str:
        return human_size(self.bytes_on_disk)


@dataclass(frozen=True)
class TableStats:
    rows: int | None  # None: a footer could not be read
    files: int
    bytes_on_disk: int


def list_runs(warehouse=None, model: str | None = None) -> list[RunInfo]:
    """Every run folder of the warehouse (damaged ones included), by model then creation time.

    `model` keeps one model's runs: its id, or the part after its last '/'.
    """
    path = existing_warehouse(warehouse)
    folders, damaged = _folders_and_damage(path)
    runs = [_run_info(path, folder.path, damaged.get((folder.model, folder.run_id))) for folder in folders]
    if model is not None:
        runs = [run for run in runs if _is_model(run.model, model)]
    return sorted(runs, key=lambda run: (run.model, run.created_at or datetime.min, run.run_id))


def _is_model(folder_model: str, model: str) -> bool:
    """`model` names the folder's model: its id, or the part after its last '/'."""
    return model in (folder_model, folder_model.rsplit("/", 1)[-1])


def find_runs(warehouse, run_ids: list[str], model: str | None = None) -> list[RunInfo]:
    """The runs named by `run_ids`, in that order (of `model` only, when given); an unknown id
    is an error naming every unknown id. An id may be found under several model folders (a
    damaged copy): each is listed."""
    path = existing_warehouse(warehouse)
    wanted = list(dict.fromkeys(run_ids))
    for run_id in wanted:
        layout.check_run_id(run_id)  # also keeps glob characters out of the lookup below
    every, damaged = _folders_and_damage(path)
    folders = {run_id: [f.path for f in every if f.run_id == run_id and (model is None or _is_model(f.model, model))] for run_id in wanted}
    unknown = [run_id for run_id, found in folders.items() if not found]
    if unknown:
        of_model = f" of model {model}" if model is not None else ""
        raise WarehouseError(f"no run {', '.join(unknown)}{of_model} in {path} (see `lensdb runs`)")
    return [_run_info(path, folder, damaged.get(_key(folder))) for run_id in wanted for folder in folders[run_id]]


def runs_to_remove(warehouse, run_ids: list[str], model: str | None = None) -> list[RunInfo]:
    """find_runs, where each id must name one run folder: an id under several model folders
    is an error naming them (give the model), and nothing is removed."""
    runs = find_runs(warehouse, run_ids, model)
    for run_id in dict.fromkeys(run.run_id for run in runs):
        found = [run for run in runs if run.run_id == run_id]
        if len(found) > 1:
            listed = ", ".join(f"{run.model} ({run.status})" for run in found)
            raise WarehouseError(f"run id {run_id} is in {len(found)} model folders: {listed}; give --model to remove one; nothing was removed")
    return runs


def existing_warehouse(warehouse):
    from lensdb import catalog

    return catalog.existing_warehouse(warehouse)


def _folders_and_damage(warehouse) -> tuple[list[layout.RunFolder], dict[tuple[str, str], str]]:
    """The run folders (committed or damaged) and why each damaged one is, from one survey."""
    surveyed = open_warehouse(warehouse).survey()
    return surveyed.folders, {(d.model, d.run_id): d.reason for d in surveyed.damaged}


def _key(folder) -> tuple[str, str]:
    return (layout.model_of_folder(folder), layout.run_id_of_folder(folder))


def folder_path(warehouse, info: RunInfo):
    """The run folder of a listed run (its `path` is as shown: a folder, or a URL)."""
    return open_warehouse(warehouse).folder_of_shown(info.path)


def _run_info(warehouse, folder, damaged: str | None) -> RunInfo:
    files = reading.folder_files(warehouse, folder)
    manifest = reading.read_manifest(warehouse, folder, files)
    if manifest is None and not damaged:
        damaged = "unreadable manifest"
    return RunInfo(
        run_id=layout.run_id_of_folder(folder),
        model=layout.model_of_folder(folder),
        source=manifest.get("source") if manifest else None,
        status=DAMAGED if damaged else manifest.get("status") or "unknown",
        prompt_set=manifest.get("prompt_set") if manifest else None,
        prompts=reading.table_rows(warehouse, folder, "prompts", files),
        records=reading.table_rows(warehouse, folder, "records", files),
        created_at=manifest.get("created_at") if manifest else None,
        bytes_on_disk=sum(files.values()),
        damaged=damaged,
        path=open_warehouse(warehouse).shown_folder(folder),
    )


def table_stats(warehouse, folder, files: dict[str, int], table: str) -> TableStats:
    parquet = reading.table_files(files, table)
    return TableStats(rows=reading.table_rows(warehouse, folder, table, files), files=len(parquet), bytes_on_disk=sum(parquet.values()))


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"

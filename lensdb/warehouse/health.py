"""Damaged runs: run folders in runs/ that the views cannot read whole.

A committed run folder holds a manifest with one row (its run id, model, status 'committed')
and Parquet files the views read (`<table>/*.parquet`). A folder is damaged when its manifest
is missing, unreadable or names another run or model (the views read the model from the
folder name), or when one of its Parquet files is not a file or its footer cannot be read (a
truncated, emptied or overwritten file, no permission).
lensdb leaves damaged runs out of every view and reports them (`v1.damaged_runs`, one
warning line per query), so that one damaged run never hides the others.

The check is quick (about a millisecond a run): it reads each manifest, and of the other
files their size and Parquet magic bytes (a truncated, emptied or overwritten file loses
its footer). Damage inside a file is found when a query reads it: lensdb.query then reads
that run's files to the end (`run_data_damage`), leaves it out too, and records the finding
(`record_data_damage`: `<run>/_damage.json`, else this user's cache), so that from then on
this check, `v1.damaged_runs` and `lensdb runs` list the run, for as long as its files keep
their sizes and times.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb import files
from lensdb.errors import folded
from lensdb.warehouse import paths
from lensdb.warehouse.schema import TABLES

MANIFEST_TABLE = "manifest"
# Tables every run has (extract and import-legacy write them; consistency may be absent).
REQUIRED_TABLES = ("prompts", "records", "finals")
COMMITTED = "committed"
MAGIC = b"PAR1"
_PARALLEL_FROM = 16  # runs; below this a thread pool costs more than it saves


DAMAGE_RECORD = "_damage.json"  # in a run folder: damage a query found inside its files


@dataclass(frozen=True)
class DamagedRun:
    model: str  # the model id (decoded from the model= folder)
    run_id: str
    path: Path  # the run folder
    reason: str  # one line, e.g. "manifest unreadable: <why>"
    recorded: bool = True  # False: found by a query and not recorded (the next check misses it)

    @property
    def folder_key(self) -> str:
        """'model=<key>/run=<id>', as the views name the folder."""
        return f"{self.path.parent.name}/{self.path.name}"


def damaged_runs(warehouse: Path, folders: list[paths.RunFolder] | None = None) -> list[DamagedRun]:
    """Every damaged run folder of a local warehouse (of `folders`, its run folders listed
    already), sorted by model folder and run id. (An object store's: remote_survey.survey,
    from its manifests' file lists and one listing.)"""
    folders = paths.list_run_folders(Path(warehouse)) if folders is None else folders
    recorded = user_damage_records(warehouse)

    def damage(folder: paths.RunFolder) -> str | None:
        return run_damage(folder) or recorded_damage(folder.path, recorded.get(folder.key))

    if len(folders) >= _PARALLEL_FROM:
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            reasons = list(pool.map(damage, folders))
    else:
        reasons = [damage(folder) for folder in folders]
    return [
        DamagedRun(model=folder.model, run_id=folder.run_id, path=folder.path, reason=reason)
        for folder, reason in zip(folders, reasons)
        if reason is not None
    ]


def run_damage(folder: paths.RunFolder) -> str | None:
    """Why the run folder cannot be read whole, in one line; None if it can."""
    reason = _manifest_damage(folder)
    if reason is not None:
        return reason
    for table in TABLES:
        if table == MANIFEST_TABLE:
            continue
        try:
            paths = _parquet_entries(folder.path / table)
        except OSError as exc:
            return f"{table}/ unreadable: {one_line(exc)}"
        if not paths and table in REQUIRED_TABLES:
            return f"{table}/ missing"
        for path in paths:
            reason = file_damage(path)
            if reason is not None:
                return f"{table}/{path.name} {reason}"
    return None


# ---------------------------------------------------------------- damage found by queries


def record_data_damage(store, run: DamagedRun) -> bool:
    """Remember damage a query found inside a run's files (the quick check reads no data
    pages), so that the warehouse's survey lists the run from now on: in `<run>/_damage.json`
    where the store keeps records in run folders and the folder is writable, else in this
    user's cache. The record holds while every file it saw keeps its size and time. False if
    it could be written nowhere. `store`: a base.Warehouse."""
    record = {"run": run.folder_key, "reason": run.reason, "files": store.file_signature(run.path)}
    if store.keeps_records_in_runs:
        try:
            _write_json(Path(run.path) / DAMAGE_RECORD, record)
            return True
        except OSError:
            pass
    try:
        records = user_damage_records(store)
        records[run.folder_key] = record
        _write_json(_user_records_path(store), records)
        return True
    except (OSError, TypeError, ValueError):
        return False


def recorded_damage(folder: Path, user_record: dict | None = None) -> str | None:
    """The damage a query recorded for this run folder (in it, or `user_record`), if it still holds."""
    try:
        with open(Path(folder) / DAMAGE_RECORD, encoding="utf-8") as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = user_record
    if not isinstance(record, dict) or not isinstance(record.get("files"), dict) or not record["files"]:
        return None
    if record["files"] != local_file_signature(folder, only=record["files"]):
        return None  # a file changed since: the finding no longer stands
    reason = record.get("reason")
    return reason if isinstance(reason, str) and reason else None


def user_damage_records(warehouse) -> dict[str, dict]:
    """folder key -> record, of the findings kept in this user's cache for this warehouse."""
    try:
        with open(_user_records_path(warehouse), encoding="utf-8") as handle:
            records = json.load(handle)
    except (OSError, ValueError):
        return {}
    return records if isinstance(records, dict) else {}


def _user_records_path(warehouse) -> Path:
    digest = hashlib.sha256(str(warehouse).encode("utf-8", "surrogateescape")).hexdigest()[:16]
    return files.cache_dir() / "damage" / f"{digest}.json"


def local_file_signature(folder, only: dict | None = None) -> dict[str, list]:
    """A local run's Parquet files (or those of `only`): path relative to the run -> [size, mtime_ns]."""
    names = list(only) if only is not None else [f"{table}/{path.name}" for table in TABLES for path in _parquet_entries(Path(folder) / table)]
    signature = {}
    for name in names:
        try:
            info = os.stat(Path(folder) / name)
        except OSError:
            continue
        signature[name] = [info.st_size, info.st_mtime_ns]
    return signature


def _write_json(path: Path, value) -> None:
    """Write a small JSON file whole (a temporary file renamed over it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    files.write_atomic(path, json.dumps(value, sort_keys=True).encode("utf-8"), durable=False)


def run_data_damage(folder: Path) -> str | None:
    """Why a run's Parquet files cannot be read to the end (their columns checked, every
    page decoded), or None. Slow: for a run whose files a query failed to read."""
    for table in TABLES:
        try:
            paths = _parquet_entries(Path(folder) / table)
        except OSError as exc:
            return f"{table}/ unreadable: {one_line(exc)}"
        for path in paths:
            reason = parquet_damage(table, path)
            if reason is not None:
                return f"{table}/{path.name} {reason}"
    return None


def parquet_damage(table: str, source) -> str | None:
    """Why one Parquet file (a path or an open file) of `table` cannot be read to the end, or None."""
    try:
        parquet = pq.ParquetFile(source)
        reason = schema_damage(table, parquet.schema_arrow)
        if reason is not None:
            return reason
        for _batch in parquet.iter_batches(batch_size=65_536):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure to decode is damage
        return f"unreadable: {one_line(exc)}"
    return None


def schema_damage(table: str, schema) -> str | None:
    """How a file's columns differ from its table's (lensdb/warehouse/schema.py), or None."""
    for expected in TABLES[table]:
        if expected.name not in schema.names:
            return f"lacks column {expected.name}"
        got = schema.field(expected.name).type
        if table in ("residuals", "residuals_mid") and expected.name == "resid":
            if not (pa.types.is_list(got) or pa.types.is_fixed_size_list(got) or pa.types.is_large_list(got)):
                return f"has column resid of type {got}, expected a list"
        elif not got.equals(expected.type):
            return f"has column {expected.name} of type {got}, expected {expected.type}"
    return None


def file_damage(path: Path) -> str | None:
    """Why a Parquet file of a run cannot be read ("unreadable: ..."), or None: its magic
    bytes at both ends and a footer length that fits the file."""
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if size < 12:
                return f"unreadable: {size} bytes, too small for a Parquet file"
            head = handle.read(4)
            handle.seek(size - 8)
            tail = handle.read(8)
    except IsADirectoryError:
        return "is not a file"
    except OSError as exc:
        return f"unreadable: {one_line(exc)}"
    if head != MAGIC or tail[4:] != MAGIC:
        return "unreadable: no Parquet magic bytes (truncated or not a Parquet file)"
    if int.from_bytes(tail[:4], "little") > size - 12:
        return "unreadable: its footer length exceeds the file (truncated)"
    return None


def _manifest_damage(folder: paths.RunFolder) -> str | None:
    try:
        files = _parquet_entries(folder.path / MANIFEST_TABLE)
    except OSError as exc:
        return f"manifest unreadable: {one_line(exc)}"
    if not files:
        return "manifest missing"
    rows = []
    for path in files:
        reason = file_damage(path)
        if reason is not None:
            return f"manifest {reason}"
        try:
            parquet = pq.ParquetFile(path)
            reason = schema_damage(MANIFEST_TABLE, parquet.schema_arrow)
            if reason is not None:
                return f"manifest {reason}"
            rows += parquet.read(columns=["run_id", "status", "model"]).to_pylist()
        except Exception as exc:  # noqa: BLE001 - magic bytes that read but a file that does not
            return f"manifest unreadable: {one_line(exc)}"
    if len(rows) != 1:
        return f"manifest has {len(rows)} rows, expected 1"
    if rows[0]["run_id"] != folder.run_id:
        return f"manifest names run {rows[0]['run_id']!r}, the folder run {folder.run_id!r}"
    # The views take the model from the folder name (v1_base.model_of), so the folder must
    # be the one lensdb names for the manifest's model.
    model = rows[0]["model"]
    if not isinstance(model, str):
        return f"manifest names no model ({model!r})"
    if paths.model_key(model) != folder.model_key:
        return f"manifest names model {model!r}, whose folder is {paths.MODEL_PREFIX}{paths.model_key(model)}"
    if rows[0]["status"] != COMMITTED:
        return f"manifest status is {rows[0]['status']!r}, not {COMMITTED!r}"
    return None


def _parquet_entries(table_dir: Path) -> list[Path]:
    """The entries the views read from a table folder (`*.parquet`), files or not."""
    try:
        with os.scandir(table_dir) as entries:
            return sorted(Path(entry.path) for entry in entries if entry.name.endswith(".parquet"))
    except (FileNotFoundError, NotADirectoryError):
        return []


def one_line(exc: BaseException) -> str:
    """Why a file is unreadable, in one line: an OSError by its strerror."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror[:300]
    return folded(exc, 300)

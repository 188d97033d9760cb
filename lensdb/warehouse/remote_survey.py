"""The runs of an object-store warehouse, from one listing and one read per manifest.

A run prefix `runs/model=<key>/run=<id>/` is committed when its manifest
(manifest/part-00000.parquet) is there; its Parquet key-value metadata `lensdb.files` lists
every data file of the run and its size. A run is damaged when its manifest does not mark
this run (unreadable, another run or model, not committed), when a file it lists is missing
or has another size, or when a query found damage inside its files (recorded in this user's
cache: health.record_data_damage). A prefix without a manifest is uncommitted, and files a
committed run's manifest does not list are stray: both are leftovers for `lensdb cleanup`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePosixPath

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.warehouse import health, paths
from lensdb.warehouse.base import Survey
from lensdb.warehouse.health import COMMITTED, REQUIRED_TABLES, DamagedRun, one_line, parquet_damage, schema_damage
from lensdb.warehouse.schema import TABLES

FILES_KEY = b"lensdb.files"  # manifest metadata: {"<table>/<file>": size, ...}
MANIFEST_FILE = "manifest/part-00000.parquet"


@dataclass(frozen=True)
class Entry:
    """A file of the store as one listing shows it."""

    size: int
    modified: float | None  # seconds since the epoch


def modified_time(info: dict) -> float | None:
    """A listed file's time, from whichever key the filesystem uses."""
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


@dataclass
class Leftover:
    """What a crashed or losing writer left: a run prefix without a manifest, or files in a
    committed run's prefix that its manifest does not list."""

    kind: str  # "uncommitted" or "stray"
    model: str
    run_id: str
    folder_key: str
    files: list[str]  # relative to the warehouse
    bytes: int
    newest: float | None  # the newest file's time, seconds since the epoch

    @property
    def age_seconds(self) -> float | None:
        return None if self.newest is None else max(0.0, time.time() - self.newest)


@dataclass
class RemoteSurvey(Survey):
    leftovers: list[Leftover] = field(default_factory=list)
    listing: dict[str, Entry] = field(default_factory=dict)  # runs/... -> entry


def survey(warehouse) -> RemoteSurvey:
    """Every run prefix of the warehouse, classified, from one listing and one read per manifest
    (and the damage queries found inside files, recorded in this user's cache)."""
    listing = warehouse.listing(paths.RUNS_DIR)
    groups: dict[str, dict[str, Entry]] = {}
    for rel, entry in listing.items():
        parts = rel.split("/")
        if len(parts) < 5 or not parts[1].startswith(paths.MODEL_PREFIX) or not parts[2].startswith(paths.RUN_PREFIX):
            continue
        groups.setdefault(f"{parts[1]}/{parts[2]}", {})["/".join(parts[3:])] = entry
    manifests = {key: f"{paths.RUNS_DIR}/{key}/{MANIFEST_FILE}" for key, files in groups.items() if MANIFEST_FILE in files}
    contents = warehouse.read_many(list(manifests.values()))
    recorded = health.user_damage_records(warehouse)
    result = RemoteSurvey(listing=listing)
    for key in sorted(groups):
        files = groups[key]
        model_part, run_part = key.split("/")
        folder = paths.RunFolder(
            path=PurePosixPath(warehouse.path(paths.RUNS_DIR, key)),
            model_key=model_part[len(paths.MODEL_PREFIX) :],
            run_id=run_part[len(paths.RUN_PREFIX) :],
        )
        relative = {f"{paths.RUNS_DIR}/{key}/{name}": entry for name, entry in files.items()}
        if key not in manifests:
            result.leftovers.append(_leftover("uncommitted", folder, relative))
            continue
        result.folders.append(folder)
        reason, listed = _manifest_check(contents.get(manifests[key]), folder)
        if reason is None and listed is not None:
            stray = {rel: entry for rel, entry in relative.items() if rel.split(f"{key}/", 1)[1] not in listed and not rel.endswith(MANIFEST_FILE)}
            if stray:
                result.leftovers.append(_leftover("stray", folder, stray))
                reason = f"holds {len(stray)} file(s) its manifest does not list (a writer that lost the commit or crashed; `lensdb cleanup` removes them)"
            else:
                reason = _listed_damage(files, listed)
        elif reason is None:
            reason = _unlisted_damage(files)
        if reason is None:
            reason = recorded.get(folder.key, {}).get("reason") if _record_holds(recorded.get(folder.key), relative) else None
        if reason is not None:
            result.damaged.append(DamagedRun(model=folder.model, run_id=folder.run_id, path=folder.path, reason=reason))
    return result


def _leftover(kind: str, folder: paths.RunFolder, files: dict[str, Entry]) -> Leftover:
    times = [entry.modified for entry in files.values() if entry.modified is not None]
    return Leftover(
        kind=kind,
        model=folder.model,
        run_id=folder.run_id,
        folder_key=folder.key,
        files=sorted(files),
        bytes=sum(entry.size for entry in files.values()),
        newest=max(times) if times else None,
    )


def _manifest_check(data, folder: paths.RunFolder) -> tuple[str | None, dict[str, int] | None]:
    """(why the manifest is not a commit marker of this run, or None; the files it lists)."""
    if data is None or isinstance(data, Exception):
        return f"manifest unreadable: {one_line(data) if data is not None else 'missing'}", None
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        reason = schema_damage("manifest", parquet.schema_arrow)
        if reason is not None:
            return f"manifest {reason}", None
        rows = parquet.read(columns=["run_id", "status", "model"]).to_pylist()
        metadata = parquet.schema_arrow.metadata or {}
        listed = json.loads(metadata[FILES_KEY]) if FILES_KEY in metadata else None
    except Exception as exc:  # noqa: BLE001 - any failure to decode is damage
        return f"manifest unreadable: {one_line(exc)}", None
    if len(rows) != 1:
        return f"manifest has {len(rows)} rows, expected 1", None
    if rows[0]["run_id"] != folder.run_id:
        return f"manifest names run {rows[0]['run_id']!r}, the folder run {folder.run_id!r}", None
    model = rows[0]["model"]  # the views read the model from the folder name (health._manifest_damage)
    if not isinstance(model, str):
        return f"manifest names no model ({model!r})", None
    if paths.model_key(model) != folder.model_key:
        return f"manifest names model {model!r}, whose folder is {paths.MODEL_PREFIX}{paths.model_key(model)}", None
    if rows[0]["status"] != COMMITTED:
        return f"manifest status is {rows[0]['status']!r}, not {COMMITTED!r}", None
    return None, listed


def _listed_damage(files: dict[str, Entry], listed: dict[str, int]) -> str | None:
    for name, size in sorted(listed.items()):
        entry = files.get(name)
        if entry is None:
            return f"{name} missing"
        if entry.size != size:
            return f"{name} has {entry.size} bytes, its manifest says {size} (overwritten or truncated)"
    return _required_tables(files)


def _unlisted_damage(files: dict[str, Entry]) -> str | None:
    """A run copied in from a local warehouse (its manifest lists no files): sizes only."""
    for name, entry in sorted(files.items()):
        if name.endswith(".parquet") and entry.size < 12:
            return f"{name} unreadable: {entry.size} bytes, too small for a Parquet file"
    return _required_tables(files)


def _required_tables(files: dict[str, Entry]) -> str | None:
    tables = {name.split("/", 1)[0] for name in files if name.endswith(".parquet")}
    missing = [table for table in REQUIRED_TABLES if table not in tables]
    return f"{missing[0]}/ missing" if missing else None


def file_signature(warehouse, folder: PurePosixPath) -> dict[str, list]:
    """The run's files as one listing shows them: path relative to the warehouse -> [size, time]."""
    prefix = warehouse.relative(str(folder))
    return {rel: [entry.size, entry.modified] for rel, entry in sorted(warehouse.listing(prefix).items())}


def _record_holds(record: dict | None, files: dict[str, Entry]) -> bool:
    """A recorded finding still stands: every file it saw is there with the same size and time."""
    if not record or not record.get("files"):
        return False
    return all(rel in files and [files[rel].size, files[rel].modified] == seen for rel, seen in record["files"].items())


def run_data_damage(warehouse, folder: PurePosixPath) -> str | None:
    """Why a run's Parquet files cannot be read to the end, or None (health.run_data_damage, remotely)."""
    prefix = warehouse.relative(str(folder))
    for rel in sorted(name[len(prefix) + 1 :] for name in warehouse.listing(prefix)):
        table = rel.split("/", 1)[0]
        if table not in TABLES or not rel.endswith(".parquet"):
            continue
        try:
            with warehouse.fs.open(warehouse.path(prefix, rel), "rb") as handle:
                reason = parquet_damage(table, handle)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be opened is damage too
            reason = f"unreadable: {one_line(exc)}"
        if reason is not None:
            return f"{rel} {reason}"
    return None

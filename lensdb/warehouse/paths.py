"""Where things live in a warehouse folder.

    <warehouse>/
      runs/model=<model key>/run=<run id>/<table>/part-NNNNN.parquet   committed runs
      _staging/<token>/<table>/...                                      runs being written
      _trash/<token>/<table>/...                                        runs being removed
      _schema/model=_/run=_/<table>/part-00000.parquet                  schema files giving the
                                                                        views their columns
      lensdb.duckdb                                                     the DuckDB catalog (views)

A run is written under `_staging/` and renamed into `runs/` in one step; its manifest is
written last, and the views only read runs that have one.

Paths are data: the functions here never treat a warehouse path, model id or run id as a
pattern (no glob), and `glob_literal` turns a path into a DuckDB glob that matches exactly it.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from dataclasses import dataclass
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
LENSES_DIR = "lenses"  # stored tuned lenses: lenses/<name>/lens.parquet (v1.lenses)
MODEL_PREFIX = "model="
RUN_PREFIX = "run="

_RUN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A folder name holds at most 255 bytes (NAME_MAX on Linux and macOS).
MODEL_KEY_MAX = 255 - len(MODEL_PREFIX)
# Marks a shortened model key: quote() never leaves '@' unencoded.
SHORTENED_MARK = "@"
_DIGEST_CHARS = 16


def is_utf8(text: str) -> bool:
    """False for strings holding lone surrogates (undecodable bytes of a file name or argument)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def model_key(model: str) -> str:
    """A folder name for a model id: percent-encoded, so 'org/name' stays readable and unique.

    Ids whose encoding does not fit one folder name are shortened to a prefix and a hash of
    the whole id (marked by '@', which the encoding never produces), so two long ids never
    share a folder; the manifest keeps the id itself.
    """
    key = quote(model, safe="-_.")
    if len(key) <= MODEL_KEY_MAX:
        return key
    digest = hashlib.sha256(model.encode("utf-8")).hexdigest()[:_DIGEST_CHARS]
    prefix = key[: MODEL_KEY_MAX - len(digest) - len(SHORTENED_MARK)]
    prefix = re.sub(r"%[0-9A-F]?$", "", prefix)  # never cut a %XX escape in half
    return f"{prefix}{SHORTENED_MARK}{digest}"


def check_model_name(model: str) -> str:
    """A model id lensdb can store: non-empty, printable, valid UTF-8 (any length)."""
    if not isinstance(model, str) or not model.strip():
        raise WarehouseError(f"invalid model name {model!r}: it must not be empty")
    if not is_utf8(model):
        raise WarehouseError(f"invalid model name {model!r}: it is not valid UTF-8 (pass --model-name)")
    if any(ord(char) < 32 or ord(char) == 127 for char in model):
        raise WarehouseError(f"invalid model name {model!r}: it holds control characters (pass --model-name)")
    return model


def model_from_key(key: str) -> str:
    """The model id a folder name stands for (a shortened key gives its readable prefix and hash)."""
    return unquote(key, errors="replace")


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now:%Y%m%dT%H%M%SZ}-{secrets.token_hex(6)}"


def check_run_id(run_id: str) -> str:
    if not isinstance(run_id, str) or not _RUN_ID.match(run_id):
        raise WarehouseError(f"invalid run id {run_id!r}: use letters, digits, '.', '_' and '-' (at most 128)")
    return run_id


def run_dir(warehouse: Path, model: str, run_id: str) -> Path:
    return warehouse / RUNS_DIR / f"{MODEL_PREFIX}{model_key(model)}" / f"{RUN_PREFIX}{run_id}"


@dataclass(frozen=True)
class RunFolder:
    """A folder runs/model=<key>/run=<id>/, committed or not."""

    path: Path
    model_key: str
    run_id: str

    @property
    def key(self) -> str:
        """'model=<key>/run=<id>': how the views name the folder (v1_base.folder_of)."""
        return f"{MODEL_PREFIX}{self.model_key}/{RUN_PREFIX}{self.run_id}"

    @property
    def model(self) -> str:
        return model_from_key(self.model_key)


def list_run_folders(warehouse: Path) -> list[RunFolder]:
    """Every runs/model=*/run=* folder of a local warehouse, sorted; listed with os.scandir, never a glob."""
    folders = []
    for model_entry in _subfolders(warehouse / RUNS_DIR):
        if not model_entry.name.startswith(MODEL_PREFIX):
            continue
        for run_entry in _subfolders(Path(model_entry.path)):
            if run_entry.name.startswith(RUN_PREFIX):
                folders.append(
                    RunFolder(
                        path=Path(run_entry.path),
                        model_key=model_entry.name[len(MODEL_PREFIX) :],
                        run_id=run_entry.name[len(RUN_PREFIX) :],
                    )
                )
    return sorted(folders, key=lambda f: (f.model_key, f.run_id))


def _subfolders(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as entries:
            return [entry for entry in entries if entry.is_dir(follow_symlinks=True)]
    except (FileNotFoundError, NotADirectoryError):
        return []


# The names of the data the views read, level by level below the warehouse:
# runs/model=*/run=*/<table>/*.parquet and lenses/<name>/*.parquet.
_DATA_LEVELS = {
    RUNS_DIR: (lambda n: n.startswith(MODEL_PREFIX), lambda n: n.startswith(RUN_PREFIX), lambda n: not n.startswith("."), lambda n: n.endswith(".parquet")),
    LENSES_DIR: (lambda n: not n.startswith("."), lambda n: n.endswith(".parquet")),
}


def linked_data_paths(warehouse: Path) -> list[Path]:
    """The symbolic links among the warehouse's data: runs/ or lenses/ themselves, a model,
    run or table folder, a Parquet file (data kept on another disk). Links elsewhere in the
    warehouse (or with other names) are not data and are not listed. Listed with os.scandir,
    following the links; never a glob."""
    found: list[Path] = []

    def visit(folder: Path, levels) -> None:
        try:
            with os.scandir(folder) as scan:
                entries = [entry for entry in scan if levels[0](entry.name)]
        except OSError:
            return
        for entry in entries:
            if entry.is_symlink():
                found.append(Path(entry.path))
            if len(levels) > 1 and entry.is_dir(follow_symlinks=True):
                visit(Path(entry.path), levels[1:])

    for name, levels in _DATA_LEVELS.items():
        top = warehouse / name
        if top.is_symlink():
            found.append(top)
        if top.is_dir():
            visit(top, levels)
    return sorted(found)


# DuckDB globs treat these as patterns; a backslash is a path separator to DuckDB everywhere.
_GLOB_SPECIAL = frozenset("*?[")


def table_files(files: dict[str, int], table: str) -> dict[str, int]:
    """The `<table>/*.parquet` files among a run folder's files (path relative to the folder -> bytes)."""
    return {name: size for name, size in sorted(files.items()) if name.startswith(f"{table}/") and name.endswith(".parquet") and name.count("/") == 1}


def glob_safe(path: str) -> bool:
    """Whether `glob_literal(path)` can stand for the path in a DuckDB glob."""
    return "\\" not in path


def glob_literal(path: str) -> str:
    """`path` as a DuckDB glob that matches exactly it: each *, ? and [ inside brackets."""
    if not glob_safe(path):
        raise ValueError(f"a DuckDB glob cannot hold the path {path!r}")
    return "".join(f"[{char}]" if char in _GLOB_SPECIAL else char for char in path)


def sql_string(text: str) -> str:
    """A SQL string literal."""
    return "'" + text.replace("'", "''") + "'"


def model_of_folder(run_folder: Path) -> str:
    """The model id of a runs/model=<key>/run=<id> folder (the key decoded)."""
    return model_from_key(run_folder.parent.name.removeprefix(MODEL_PREFIX))


def run_id_of_folder(run_folder: Path) -> str:
    return run_folder.name.removeprefix(RUN_PREFIX)

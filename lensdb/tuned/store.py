"""Tuned lenses stored in the warehouse, and `tuned:DIR|NAME` lookups.

    <warehouse>/lenses/<name>/config.json     the tuned-lens format (lensdb.tuned.format)
                              params.pt
                              training.json   training settings and per-layer KL, for people
                              lens.parquet    the same as a table (schema LENSES): v1.lenses
    <warehouse>/_lens_training/<name>/        checkpoints of a training in progress, and the
                                              finished lens staged before its rename

A stored lens appears in one rename of its complete folder, like a run.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import TunedLensError
from lensdb.files import replace_whole, write_atomic
from lensdb.warehouse import layout
from lensdb.warehouse.schema import LENSES, with_metadata

LENSES_DIR = layout.LENSES_DIR
TRAINING_DIR = "_lens_training"
TABLE_FILE = "lens.parquet"
SETTINGS_FILE = "training.json"
# Lens names end up as folder names and, in records, next to the built-in lenses: train-lens
# also refuses the lens kinds' names (lensdb.lenses.check_not_a_kind; the lens family reads
# this store, so the store does not import it).
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_lens_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise TunedLensError(f"invalid lens name {name!r}: use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit")
    return name


REMOTE_STORE = "stored tuned lenses live in local warehouses only (pass tuned:DIR with a lens folder, or store it in a local warehouse)"


def local_store(warehouse) -> Path:
    """The warehouse folder that stores lenses; one line for an object-store warehouse."""
    if layout.open_warehouse(warehouse).lens_root() is None:
        raise TunedLensError(f"{warehouse}: {REMOTE_STORE}")
    return warehouse


def stored_lens_dir(warehouse: Path, name: str) -> Path:
    return local_store(warehouse) / LENSES_DIR / check_lens_name(name)


def training_dir(warehouse: Path, name: str) -> Path:
    return warehouse / TRAINING_DIR / check_lens_name(name)


def stored_lens_names(warehouse: str | os.PathLike | None = None) -> list[str]:
    resolved = layout.resolve_warehouse(warehouse)
    if layout.open_warehouse(resolved).lens_root() is None:
        return []
    root = resolved / LENSES_DIR
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "config.json").is_file() and _NAME.match(p.name))


def resolve_tuned_spec(spec: str, warehouse: str | os.PathLike | None = None):
    """The lens of `tuned:SPEC`: SPEC is a lens folder (tried first) or the name of a lens
    stored in the warehouse. Returns a `TunedTranslators` (its `name` set for a stored lens)."""
    from lensdb.tuned.format import load_tuned_lens

    if not spec:
        raise TunedLensError("tuned lens: give a folder or a stored lens name (tuned:DIR or tuned:NAME)")
    path = Path(spec).expanduser()
    if path.is_dir():
        return load_tuned_lens(path)
    warehouse_path = layout.resolve_warehouse(warehouse)
    if layout.open_warehouse(warehouse_path).lens_root() is None:
        raise TunedLensError(f"no tuned lens folder {spec!r}; {REMOTE_STORE}")
    if _NAME.match(spec):  # train-lens stores no lens under a lens kind's name
        stored = warehouse_path / LENSES_DIR / spec
        if (stored / "config.json").is_file():
            return load_tuned_lens(stored, name=spec)
    known = stored_lens_names(warehouse_path)
    listing = f"stored lenses: {', '.join(known)}" if known else "the warehouse stores no lenses"
    raise TunedLensError(f"no tuned lens folder {spec!r} and no lens named {spec!r} in {warehouse_path} ({listing})")


def lens_table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=LENSES)


def write_lens_folder(folder: Path, translators, rows: list[dict], settings: dict):
    """A complete lens folder: lens.parquet and training.json, then params.pt, config.json
    last (each file by an atomic rename). `lens_sha256` is filled in the rows and settings.
    Returns the translators as written."""
    from lensdb.tuned.format import lens_sha256, save_tuned_lens

    sha256 = lens_sha256(translators)  # params.pt's sha256 (combined with params_mid.pt's for a lens with mid sites)
    rows = [{**row, "lens_sha256": sha256} for row in rows]
    settings = {**settings, "lens_sha256": sha256}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        table = lens_table(rows).replace_schema_metadata(with_metadata(LENSES, "lenses").metadata)
        replace_whole(folder / TABLE_FILE, lambda temporary: pq.write_table(table, temporary))
        write_atomic(folder / SETTINGS_FILE, (json.dumps(settings, indent=2, default=str) + "\n").encode())
    except OSError as exc:
        raise TunedLensError(f"cannot write the tuned lens to {folder}: {exc.strerror or exc}") from None
    return save_tuned_lens(translators, folder)


def commit_stored_lens(staged: Path, warehouse: Path, name: str) -> Path:
    """Move a complete staged lens folder to `lenses/<name>/` in one rename."""
    target = stored_lens_dir(warehouse, name)
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(staged, target)
    except OSError as exc:
        if target.exists():
            raise TunedLensError(f"the warehouse already stores a lens named {name!r} ({target})") from None
        raise TunedLensError(f"could not store lens {name!r}: {exc.strerror or exc}") from None
    return target

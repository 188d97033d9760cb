"""Run management: list, show and remove the runs of a warehouse (`lensdb runs`, `show`, `rm`).

Listing reads the folder tree, the manifests and the Parquet footers directly, not the
views, so a damaged run is listed (status `damaged`) and never hides the others.

Removing a run is two steps: one os.rename moves its folder from runs/ into _trash/,
which no view reads, so the run leaves every view at once; then its files are deleted. A
process killed between the two leaves the whole run in _trash/ (invisible), which the
next `lensdb rm` on this host deletes; killed before the rename, it leaves the whole run.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath

import pyarrow as pa

from lensdb.errors import WarehouseError
from lensdb.warehouse import health, layout, reading, remote
from lensdb.warehouse.writer import fsync_dir, pid_alive, remove_stale_folders

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


@dataclass
class RunDetails:
    """`lensdb show RUN`: the manifest, each table's size, and a summary of the run's diagnostics."""

    info: RunInfo
    manifest: dict | None
    tables: dict[str, TableStats]
    diagnostics: list[dict] = field(default_factory=list)  # per lens x role
    last_layer: list[dict] = field(default_factory=list)  # per lens: the last layer vs the model head
    raw_lens: list[dict] = field(default_factory=list)  # prompts per lens_artifact_risk
    note: str | None = None  # why diagnostics are missing


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


def remove_runs(warehouse, run_ids: list[str], model: str | None = None) -> list[RunInfo]:
    """Remove runs: each leaves every view in one rename, then its files are deleted.

    Every id is checked first (runs_to_remove): with an unknown or ambiguous id nothing is removed.
    """
    path = existing_warehouse(warehouse)
    runs = runs_to_remove(path, run_ids, model)
    if layout.is_remote(path):
        for run in runs:
            folder = _folder_path(path, run)
            prefix, files = path.relative(str(folder)), reading.folder_files(path, folder)
            manifest = reading.table_files(files, "manifest")
            # The manifest first: the run leaves every view here (readers require it).
            path.remove([f"{prefix}/{name}" for name in manifest])
            path.remove([f"{prefix}/{name}" for name in files if name not in manifest])
        return runs
    trash = path / layout.TRASH_DIR
    try:
        trash.mkdir(exist_ok=True)
        remove_stale_folders(trash)
    except OSError as exc:
        raise WarehouseError(f"warehouse is not writable: {path} ({exc.strerror or exc})") from None
    for run in runs:
        target = trash / f"{run.run_id}.{secrets.token_hex(4)}@{os.getpid()}@{socket.gethostname()}"
        try:
            os.rename(run.path, target)  # the run leaves every view here
        except OSError as exc:
            raise WarehouseError(f"could not remove run {run.run_id}: {exc.strerror or exc}") from None
        fsync_dir(run.path.parent)
        shutil.rmtree(target, ignore_errors=True)
    return runs


def show_run(warehouse, run_id: str) -> RunDetails:
    """The run's manifest, its tables' rows and sizes, and its diagnostics summarised (from the v1 views)."""
    path = existing_warehouse(warehouse)
    info = find_runs(path, [run_id])[0]
    folder = _folder_path(path, info)
    files = reading.folder_files(path, folder)
    manifest = reading.read_manifest(path, folder, files)
    names = sorted({name.split("/", 1)[0] for name in files if "/" in name})
    tables = {table: _table_stats(path, folder, files, table) for table in names}
    details = RunDetails(info=info, manifest=manifest, tables=tables)
    if info.damaged:
        details.note = f"damaged ({info.damaged}): no diagnostics"
        return details
    _add_diagnostics(path, details)
    return details


def existing_warehouse(warehouse):
    from lensdb import catalog

    return catalog.existing_warehouse(warehouse)


# ---------------------------------------------------------------- reading a run folder


def _folders_and_damage(warehouse) -> tuple[list[layout.RunFolder], dict[tuple[str, str], str]]:
    """The run folders (committed or damaged) and why each damaged one is, from one survey."""
    if layout.is_remote(warehouse):
        surveyed = remote.survey(warehouse)
        folders, damaged = surveyed.folders, surveyed.damaged
    else:
        folders, damaged = layout.run_folders(warehouse), health.damaged_runs(warehouse)
    return folders, {(d.model, d.run_id): d.reason for d in damaged}


def _key(folder) -> tuple[str, str]:
    return (layout.model_of_folder(folder), layout.run_id_of_folder(folder))


def _folder_path(warehouse, info: "RunInfo"):
    return PurePosixPath(warehouse.fs._strip_protocol(str(info.path))) if layout.is_remote(warehouse) else info.path


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
        path=warehouse.url_of(str(folder)) if layout.is_remote(warehouse) else folder,
    )


def _table_stats(warehouse, folder, files: dict[str, int], table: str) -> TableStats:
    parquet = reading.table_files(files, table)
    return TableStats(rows=reading.table_rows(warehouse, folder, table, files), files=len(parquet), bytes_on_disk=sum(parquet.values()))


# ---------------------------------------------------------------- what crashed writers left


@dataclass(frozen=True)
class LeftoverInfo:
    """What a crashed (or losing) writer left, as `lensdb runs --uncommitted` lists it."""

    kind: str  # staging / trash (a local folder), uncommitted (a remote run prefix without a manifest), stray
    run_id: str
    model: str | None
    files: int
    bytes_on_disk: int
    age_seconds: float | None
    removable: bool  # False: a writer on this host still runs, or it is younger than --older-than
    location: str
    _paths: tuple = ()


def leftovers(warehouse=None, older_than_seconds: float = 3600.0) -> list[LeftoverInfo]:
    """Staging and trash folders of a local warehouse, run prefixes without a manifest and files
    no manifest lists in a remote one."""
    path = existing_warehouse(warehouse)
    if layout.is_remote(path):
        return [
            LeftoverInfo(
                kind=left.kind,
                run_id=left.run_id,
                model=left.model,
                files=len(left.files),
                bytes_on_disk=left.bytes,
                age_seconds=left.age_seconds,
                removable=left.age_seconds is None or left.age_seconds >= older_than_seconds,
                location=path.url_of(path.path(f"{layout.RUNS_DIR}/{left.folder_key}")),
                _paths=tuple(left.files),
            )
            for left in remote.survey(path).leftovers
        ]
    found = []
    for kind, folder in (("staging", layout.STAGING_DIR), ("trash", layout.TRASH_DIR)):
        for entry in sorted((path / folder).iterdir()) if (path / folder).is_dir() else []:
            if not entry.is_dir():
                continue
            files = [p for p in entry.rglob("*") if p.is_file()]
            times = [p.stat().st_mtime for p in files] or [entry.stat().st_mtime]
            age = max(0.0, time.time() - max(times))
            parts = entry.name.split("@")
            alive = len(parts) == 3 and parts[2] == socket.gethostname() and parts[1].isdigit() and pid_alive(int(parts[1]))
            found.append(
                LeftoverInfo(
                    kind=kind,
                    run_id=parts[0].split(".")[0],
                    model=None,
                    files=len(files),
                    bytes_on_disk=sum(p.stat().st_size for p in files),
                    age_seconds=age,
                    removable=not alive and (age >= older_than_seconds or _dead_here(parts)),
                    location=str(entry),
                    _paths=(entry,),
                )
            )
    return found


def _dead_here(parts: list[str]) -> bool:
    """A folder of a process of this host that no longer runs (removable whatever its age)."""
    return len(parts) == 3 and parts[2] == socket.gethostname() and parts[1].isdigit() and not pid_alive(int(parts[1]))


def cleanup(warehouse=None, older_than_seconds: float = 3600.0, *, dry_run: bool = False) -> list[LeftoverInfo]:
    """Remove the removable leftovers (see `leftovers`); returns them."""
    path = existing_warehouse(warehouse)
    removed = [left for left in leftovers(path, older_than_seconds) if left.removable]
    if dry_run:
        return removed
    for left in removed:
        if layout.is_remote(path):
            path.remove(list(left._paths))
        else:
            shutil.rmtree(left._paths[0], ignore_errors=True)
    return removed


def leftovers_table(found: list[LeftoverInfo]) -> pa.Table:
    rows = [
        {
            "kind": left.kind,
            "run_id": left.run_id,
            "model": left.model,
            "files": left.files,
            "size": human_size(left.bytes_on_disk),
            "age": _age(left.age_seconds),
            "removable": left.removable,
            "location": left.location,
        }
        for left in found
    ]
    schema = pa.schema(
        [("kind", pa.string()), ("run_id", pa.string()), ("model", pa.string()), ("files", pa.int64()), ("size", pa.string()),
         ("age", pa.string()), ("removable", pa.bool_()), ("location", pa.string())]
    )
    return pa.Table.from_pylist(rows, schema=schema)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.1f} {unit}"
    return f"{seconds:.0f} s"


# ---------------------------------------------------------------- diagnostics of one run

DIAGNOSTICS_SQL = """
SELECT lens, role, count(*) AS prompts,
       count(L_semantic) AS answered, median(L_semantic) AS L_semantic,
       count(L_copy) AS copied, median(L_copy) AS L_copy,
       median(first_kl_below_1_0) AS kl_below_1, median(first_rank_le_5) AS rank_le_5
FROM v1.diagnostics WHERE run_id = $run
GROUP BY lens, role ORDER BY lens, role
"""

LAST_LAYER_SQL = """
SELECT lens, count(*) AS prompts,
       count(*) FILTER (WHERE warn_high_last_layer_kl) AS kl_above_0_5_bits,
       max(kl_to_final_bits) AS max_kl_bits,
       count(*) FILTER (WHERE NOT top1_agree) AS top1_disagrees
FROM v1.last_layer_consistency WHERE run_id = $run
GROUP BY lens ORDER BY lens
"""

RAW_LENS_SQL = """
SELECT lens_artifact_risk AS risk, count(*) AS prompts
FROM v1.raw_lens_summary WHERE run_id = $run
GROUP BY risk ORDER BY list_position(['high', 'medium', 'low'], risk)
"""


def _add_diagnostics(warehouse: Path, details: RunDetails) -> None:
    from lensdb import catalog
    from lensdb.errors import LensdbError

    try:
        con = catalog.connect(warehouse, read_only=True)
    except LensdbError as exc:
        details.note = f"no diagnostics: {exc}"
        return
    try:
        details.diagnostics = _rows(con, DIAGNOSTICS_SQL, details.info.run_id)
        details.last_layer = _rows(con, LAST_LAYER_SQL, details.info.run_id)
        details.raw_lens = _rows(con, RAW_LENS_SQL, details.info.run_id)
    except Exception as exc:  # noqa: BLE001 - a query error must not hide the manifest
        details.note = f"no diagnostics: {' '.join(str(exc).split())[:200]}"
    finally:
        con.close()


def _rows(con, sql: str, run_id: str) -> list[dict]:
    cursor = con.execute(sql, {"run": run_id})
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


# ---------------------------------------------------------------- presentation

def runs_table(runs: list[RunInfo], *, for_humans: bool = True) -> pa.Table:
    """The listing as an Arrow table. For people the columns most worth a narrow terminal come
    first and `size` is text; for scripts `bytes_on_disk` and `path` instead."""
    columns: list[tuple[str, pa.DataType]] = [
        ("run_id", pa.string()),
        ("model", pa.string()),
        ("status", pa.string()),
        ("prompt_set", pa.string()),
        ("prompts", pa.int64()),
        ("records", pa.int64()),
    ]
    if for_humans:
        columns += [("size", pa.string()), ("created_at", pa.timestamp("s")), ("source", pa.string()), ("damaged", pa.string())]
    else:
        columns += [("bytes_on_disk", pa.int64()), ("created_at", pa.timestamp("s")), ("source", pa.string()), ("damaged", pa.string()), ("path", pa.string())]
    rows = [
        {
            "run_id": run.run_id,
            "model": run.model,
            "status": run.status,
            "prompt_set": run.prompt_set,
            "prompts": run.prompts,
            "records": run.records,
            "size": run.size,
            "bytes_on_disk": run.bytes_on_disk,
            "created_at": run.created_at,
            "source": run.source,
            "damaged": (run.damaged or "") if for_humans else run.damaged,
            "path": str(run.path),
        }
        for run in runs
    ]
    return pa.Table.from_pylist(rows, schema=pa.schema(columns))


def details_as_dict(details: RunDetails) -> dict:
    info = asdict(details.info) | {"path": str(details.info.path)}
    return {
        "run": info,
        "manifest": details.manifest,
        "tables": {name: asdict(stats) for name, stats in details.tables.items()},
        "diagnostics": details.diagnostics,
        "last_layer": details.last_layer,
        "raw_lens": details.raw_lens,
        "note": details.note,
    }


def format_details(details: RunDetails, width: int | None = None) -> str:
    """`lensdb show` as text: the run, its settings and versions, tables, then the diagnostics tables."""
    from lensdb.output import render_table

    info, m = details.info, details.manifest or {}
    lines = [f"run          {info.run_id}"]
    lines.append(f"model        {info.model}" + _joined(m, "model_revision", "model_class", "architecture"))
    if m:
        shape = ", ".join(f"{key} {m[key]:,}" for key in ("n_layers", "d_model", "n_heads", "d_vocab", "n_ctx") if m.get(key) is not None)
        if shape:
            lines.append(f"             {shape}")
    lines.append(f"status       {info.status}" + (f": {info.damaged}" if info.damaged else "") + (f"   source {info.source}" if info.source else ""))
    if m.get("created_at"):
        finished = f"   finished {m['finished_at']:%Y-%m-%d %H:%M:%S}" if m.get("finished_at") else ""
        lines.append(f"created      {m['created_at']:%Y-%m-%d %H:%M:%S} UTC{finished}")
    if m:
        prompt_set = m.get("prompt_set") or "?"
        sha = f" (sha256 {m['prompt_set_sha256'][:12]})" if m.get("prompt_set_sha256") else ""
        lines.append(f"prompt set   {prompt_set}{sha}, {_count(info.prompts)} prompts")
        settings = [
            f"lenses {','.join(m.get('lenses') or [])}",
            f"top-k {m.get('top_k')}",
            f"dtype {m.get('dtype')}",
            f"device {m.get('device')}",
            f"seed {m.get('seed')}",
        ]
        lines.append("settings     " + ", ".join(s for s in settings if not s.endswith(" None")))
        versions = [
            f"{name} {m.get(key)}"
            for name, key in (("lensdb", "lensdb_version"), ("torch", "torch_version"), ("transformers", "transformers_version"), ("transformer-lens", "transformer_lens_version"))
            if m.get(key)
        ]
        lines.append("versions     " + ", ".join(versions))
        if m.get("last_layer_max_kl_bits") is not None:
            check = "FLAGGED" if m.get("last_layer_flagged") else "ok"
            agreement = m.get("last_layer_top1_agreement")
            agree = f", top-1 agreement {agreement:.2f}" if agreement is not None else ""
            lines.append(f"last layer   final_ln vs head: max KL {m['last_layer_max_kl_bits']:.2e} bits{agree}, {check}")
        if m.get("source_files_sha256"):
            lines.append(f"imported     files sha256 {m['source_files_sha256'][:12]}")
    lines.append(f"path         {shown_path(info.path)}  ({info.size})")
    table_parts = [f"{name} {_count(stats.rows)}" for name, stats in details.tables.items()]
    lines.append("rows         " + ", ".join(table_parts))
    text = "\n".join(lines) + "\n"
    if details.diagnostics:
        text += (
            "\nDiagnostics (v1.diagnostics): layers are medians over the prompts; answered / copied:\n"
            "prompts with an L_semantic / L_copy; kl_below_1: first_kl_below_1_0; rank_le_5: first_rank_le_5\n"
        ) + render_table(_table(details.diagnostics), width, types=False)
    if details.last_layer:
        text += "\nLast layer vs the model head (v1.last_layer_consistency):\n" + render_table(_table(details.last_layer), width, types=False)
    if details.raw_lens:
        risks = ", ".join(f"{row['prompts']:,} {row['risk']}" for row in details.raw_lens)
        text += f"\nRaw-lens artifact risk (v1.raw_lens_summary): prompts {risks}\n"
    if details.note:
        text += f"\n{details.note}\n"
    return text


def _joined(manifest: dict, *keys: str) -> str:
    parts = [str(manifest[key]) for key in keys if manifest.get(key)]
    return f"  ({', '.join(parts)})" if parts else ""


def _count(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _table(rows: list[dict]) -> pa.Table:
    return pa.Table.from_pylist(rows)


def shown_path(path: Path) -> str:
    """Relative to the working directory when inside it (as the user named the warehouse), else absolute."""
    try:
        return str(Path(path).relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def human_size(n: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"

"""`import-legacy`: the legacy output files of a folder -> one committed run per model.

Data flow: folder -> the three files of each model -> parsed, checked rows (errors name
the file and line; lensdb.legacy.reader) -> the warehouse tables (prompts, records, finals,
consistency, legacy_raw_lens_samples, manifest; lensdb.legacy.tables) -> RunWriter, which
commits the run atomically (this module).

Every model of the folder is read and converted (every value checked) before anything is
written, all runs are staged before any is committed, and a failed commit takes back the
runs this import committed: on any error nothing is imported. Values are stored as the files hold them: probabilities, entropies,
p_answer and cos_to_final are float32-exact in the files and go to float32 columns; the
derived columns (flags, p_top1, p_top5, rest_mass, the JSON's diagnostics and summaries)
are not stored, the v1 views recompute them. Token ids are unknown (NULL). A control
row's p_paired_answer is float32(p_answer - control_margin), from which the view's
control_margin (p_answer - p_paired_answer in float64) comes back exactly.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from lensdb.errors import LegacyFormatError, LensdbError
from lensdb.legacy.reader import LegacyFiles, LegacyModel, LensRow, files_sha256, find_legacy_files, read_model
from lensdb.legacy.tables import legacy_tables, manifest_table
from lensdb.warehouse import layout, schema
from lensdb.warehouse.reading import read_manifest, table_rows
from lensdb.warehouse.writer import RunWriter

__all__ = ["ImportedRun", "LegacyFiles", "LegacyModel", "LensRow", "PreparedRun", "find_legacy_files", "import_legacy",
           "read_model", "stage_run", "write_runs"]


@dataclass(frozen=True)
class ImportedRun:
    model: str
    run_id: str
    path: Path
    rows: dict[str, int]
    already_imported: bool = False  # the same files were imported before: run_id is that run


@dataclass
class PreparedRun:
    """A model's run, converted and checked, not yet written."""

    model: LegacyModel
    run_id: str
    started: datetime
    tables: dict[str, pa.Table]


def import_legacy(folder: str | Path, warehouse: str | Path | None = None, *, force: bool = False) -> list[ImportedRun]:
    """Import every model of a legacy output folder, one committed run each; all or nothing.

    A model whose three files (by content) were imported before is not imported again
    unless `force`: its entry names the earlier run, with already_imported set.
    """
    models = [read_model(files) for files in find_legacy_files(Path(folder))]
    warehouse_path = layout.resolve_warehouse(warehouse)
    earlier = {} if force else imported_file_hashes(warehouse_path)
    previous = [earlier.get((model.model, files_sha256(model.files))) for model in models]
    prepared = [prepare_run(m) for m, p in zip(models, previous) if p is None]
    written = iter(write_runs(warehouse_path, prepared, skip_imported=not force))
    return [p if p is not None else next(written) for p in previous]


def prepare_run(model: LegacyModel) -> PreparedRun:
    """Convert every table and the manifest, so that a bad value stops the import before any write."""
    try:
        layout.check_model_name(model.model)
    except LensdbError as exc:
        raise LegacyFormatError(f"{model.files.json}: diagnostics.model: {exc}") from None
    run_id, started = layout.new_run_id(), _utc_now()
    tables = legacy_tables(model)
    manifest_table(model, run_id, started, started)  # checked now, written at the commit
    return PreparedRun(model=model, run_id=run_id, started=started, tables=tables)


def write_runs(warehouse: Path, runs: list[PreparedRun], *, skip_imported: bool = False) -> list[ImportedRun]:
    """Stage every run, then commit them one after another under the warehouse's commit lock;
    if a commit fails, the runs committed before it are taken back. `skip_imported`: the
    content check (files imported before) runs again under the lock, so that of two imports
    of the same files at once only the first commits them; the other's entries name its runs."""
    with contextlib.ExitStack() as stack:
        writers = []
        for run in runs:
            writer = stack.enter_context(layout.open_warehouse(warehouse).writer(run.model.model, run.run_id))
            stage_run(writer, run.tables)
            writers.append(writer)
        imported = []
        # Object stores have no lock: there the check narrows the window, it cannot close it.
        with layout.open_warehouse(warehouse).commit_lock():
            earlier = imported_file_hashes(warehouse) if skip_imported else {}
            try:
                for writer, run in zip(writers, runs):
                    before = earlier.get((run.model.model, files_sha256(run.model.files)))
                    if before is not None:
                        writer.abort()
                        imported.append(before)
                        continue
                    path = writer.commit(manifest_table(run.model, run.run_id, run.started, _utc_now()), schema.MANIFEST)
                    imported.append(ImportedRun(model=run.model.model, run_id=run.run_id, path=path, rows=dict(writer.rows_written)))
            except BaseException:
                for writer in writers:
                    writer.retract()
                raise
    return imported


def imported_file_hashes(warehouse) -> dict[tuple[str, str], ImportedRun]:
    """(model, files hash) -> the committed run imported from those files, read from the manifests."""
    found: dict[tuple[str, str], ImportedRun] = {}
    for run_folder in layout.run_folders(warehouse):
        folder = run_folder.path
        manifest = read_manifest(warehouse, folder)
        sha = manifest.get("source_files_sha256") if manifest else None
        if sha and manifest.get("status") == "committed":
            records = table_rows(warehouse, folder, "records") or 0
            found[(manifest["model"], sha)] = ImportedRun(manifest["model"], manifest["run_id"], folder, {"records": records}, already_imported=True)
    return found


# ---------------------------------------------------------------- rows -> the warehouse


def stage_run(writer: RunWriter, tables: dict[str, pa.Table]) -> None:
    writer.write("prompts", tables["prompts"], schema.PROMPTS)
    last = tables["records"].column("is_last_pos")
    # Last-position records in a file of their own, as extract writes them.
    writer.append("records", tables["records"].filter(last), schema.RECORDS, part="next")
    writer.append("records", tables["records"].filter(pc.invert(last)), schema.RECORDS)
    for name in ("finals", "consistency", "legacy_raw_lens_samples"):
        writer.write(name, tables[name], schema.TABLES[name])


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)

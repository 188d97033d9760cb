"""`export`: committed runs -> the legacy output files (JSON + records CSV + pure CSV).

Data flow: v1 views and macros -> rows -> files. Every derived value (flags, p_top1,
p_top5, rest_mass, control_margin, the JSON's diagnostics and summaries) is read from
the v1 views; stored values (tokens, probabilities, prompts, final predictions, the run's
provenance) from v1.records, v1.prompts, v1.final_predictions and v1.runs. This module
only arranges them as the legacy files have them (lensdb.legacy.format).

Imported runs write exactly the JSON blocks their file had (manifest.legacy_blocks);
extract runs write every block they have data for (lensdb.legacy.export_json builds them).
The SQL is in lensdb/queries/export/.

A run's files are written only when its folder is the same after every read as before
(a run removed by `lensdb rm` meanwhile fails the export), each to a temporary file beside
it and then renamed: no legacy file is ever partial, and a full disk is one line.
"""

from __future__ import annotations

import json
from pathlib import Path

from lensdb import catalog, queries
from lensdb.errors import LensdbError, WarehouseError
from lensdb.legacy import format as fmt
from lensdb.legacy.export_json import legacy_json
from lensdb.legacy.export_run import ExportRun
from lensdb.output import write_files_whole
from lensdb.warehouse import layout, reading


def export(
    out: str | Path,
    *,
    warehouse: str | Path | None = None,
    run_id: str | None = None,
    model: str | None = None,
    lens: str = fmt.LENS,
    with_variant: bool = True,
) -> list[Path]:
    """Write the legacy files of one run (--run), a model's latest run (--model) or every model's latest run."""
    if run_id and model:
        raise LensdbError("give --run or --model, not both")
    warehouse_path = layout.resolve_warehouse(warehouse)
    con = catalog.connect(warehouse_path, read_only=True)
    try:
        runs = select_runs(con, warehouse_path, run_id, model)
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        written = []
        for run in runs:
            # The views read the files anew at every query: a run removed (or replaced) while it
            # is read gives empty rows, not an error. Its folder is the same before and after.
            before = _run_state(warehouse_path, run["run_id"])
            removed = WarehouseError(f"run {run['run_id']} was removed or changed while it was exported; its files were not written")
            try:
                files = legacy_files(ExportRun.load(con, run, lens), out_dir, with_variant)
            except LensdbError:
                if _run_state(warehouse_path, run["run_id"]) != before:
                    raise removed from None  # what the rows missing made of it would mislead
                raise
            if not before or _run_state(warehouse_path, run["run_id"]) != before:
                raise removed
            write_files_whole(files)
            written += list(files)
        return written
    finally:
        con.close()


def _run_state(warehouse, run_id: str) -> dict:
    """The folders holding `run_id` now, each with its files and their sizes (and, locally, the
    folder's inode): what a removal, or a new run under the same id, changes."""
    state = {}
    for folder in layout.run_folders(warehouse):
        if folder.run_id == run_id:
            try:
                inode = layout.open_warehouse(warehouse).folder_inode(folder.path)
            except OSError:
                continue
            state[str(folder.path)] = (inode, sorted(reading.folder_files(warehouse, folder.path).items()))
    return state


def select_runs(con, warehouse: Path, run_id: str | None, model: str | None) -> list[dict]:
    if catalog.committed_run_count(warehouse) == 0:
        raise WarehouseError(f"warehouse {warehouse} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)")
    if run_id:
        runs = queries.rows(con, "plot/run", run=run_id)
        if not runs:
            raise WarehouseError(f"no committed run {run_id!r} in {warehouse}")
    else:
        runs = queries.rows(con, "export/latest_runs", model=model)
        if not runs:
            raise WarehouseError(f"no committed run of model {model!r} in {warehouse}")
    stems = [fmt.file_stem(run["model"]) for run in runs]
    clash = next((stem for stem in stems if stems.count(stem) > 1), None)
    if clash:
        raise WarehouseError(f"several models would be written as {fmt.json_name(clash)}: export them one at a time with --run")
    return runs


def legacy_files(run: ExportRun, out_dir: Path, with_variant: bool) -> dict[Path, bytes]:
    """The run's three legacy files: path -> content."""
    stem = fmt.file_stem(run.manifest["model"])
    files = {
        out_dir / fmt.json_name(stem): json.dumps(legacy_json(run), ensure_ascii=False, indent=2),
        out_dir / fmt.records_name(stem): records_csv(run, with_variant),
        out_dir / fmt.pure_name(stem): pure_csv(run, with_variant),
    }
    return {path: text.encode("utf-8") for path, text in files.items()}


# ---------------------------------------------------------------- CSV files


def records_csv(run: ExportRun, with_variant: bool) -> str:
    lines = [fmt.csv_line(fmt.records_header(with_variant))]
    for row in run.rows("export/records_csv", lens=run.lens, role=fmt.POS_ROLE, variant=fmt.ORIG_VARIANT,
                        narrow_k=fmt.NARROW_TOP_K, wide_k=fmt.WIDE_TOP_K):
        verbose = fmt.is_verbose(row["token"], row["is_last_pos"])
        listed = fmt.WIDE_TOP_K if verbose else fmt.NARROW_TOP_K
        tops = fmt.top_columns(row["topk_tokens"][:listed], row["topk_probs"][:listed])
        rest_mass = row["rest_mass_wide"] if verbose else row["rest_mass_narrow"]
        lines.append(fmt.csv_line(_leading(row, row["token"], with_variant) + tops + [rest_mass]))
    return "".join(lines)


def pure_csv(run: ExportRun, with_variant: bool) -> str:
    lines = [fmt.csv_line(fmt.pure_header(with_variant))]
    for row in run.rows("export/pure_csv", metric_columns=list(fmt.PURE_METRIC_COLUMNS), lens=run.lens,
                        test_role=fmt.TEST_ROLE, narrow_k=fmt.NARROW_TOP_K):
        tops = fmt.top_columns(row["topk_tokens"], row["topk_probs"])
        metrics = [row[column] for column in fmt.PURE_METRIC_COLUMNS]
        lines.append(fmt.csv_line(_leading(row, fmt.NEXT_TOKEN, with_variant) + tops + [row["rest_mass"], *metrics]))
    return "".join(lines)


def _leading(row: dict, token: str, with_variant: bool) -> list:
    variant = [row["prompt_variant"]] if with_variant else []
    return [row["prompt_id"], *variant, row["layer"], row["pos"], token, row["entropy_bits"]]

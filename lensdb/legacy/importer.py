"""`import-legacy`: the legacy output files of a folder -> one committed run per model.

Data flow: folder -> the three files of each model -> parsed, checked rows (errors name
the file and line) -> the warehouse tables (prompts, records, finals, consistency,
legacy_raw_lens_samples, manifest) -> RunWriter, which commits the run atomically.

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
import csv
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

import lensdb as lensdb_package
from lensdb.errors import LegacyFormatError, LensdbError, folded
from lensdb.legacy import format as fmt
from lensdb.warehouse import layout, schema
from lensdb.warehouse.reading import read_manifest, table_rows
from lensdb.warehouse.writer import RunWriter

# Without a prompt_variant column, the pure CSV's blocks of one prompt id (each starting
# again at layer 0) are these variants, in this order.
VARIANTS_BY_BLOCK = {fmt.POS_ID: (fmt.ORIG_VARIANT, fmt.NO_FILLER_VARIANT), fmt.CTL_ID: (fmt.ORIG_VARIANT,)}

PRIMARY = (fmt.POS_ID, fmt.ORIG_VARIANT)  # the prompt the records CSV and the JSON describe

_PURE_NUMBERS = {
    "p_top1": float,
    "p_top5": float,
    "p_answer": float,
    "kl_to_final_bits": float,
    "answer_rank": int,
    "cos_to_final": float,
    "control_margin": float,
}
_PURE_FLAGS = ("copy_collapse", "entropy_collapse", "is_answer")


@dataclass(frozen=True)
class LegacyFiles:
    stem: str
    json: Path
    records: Path
    pure: Path


@dataclass
class LensRow:
    """One row of either CSV; `metrics` (the parsed metric columns) only on pure rows."""

    line: int
    prompt_id: str
    prompt_variant: str | None
    layer: int
    pos: int
    token: str
    entropy: float | None
    top_tokens: list[str]
    top_probs: list[float]
    metrics: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.prompt_id, self.prompt_variant, self.layer, self.pos)


@dataclass
class LegacyModel:
    files: LegacyFiles
    doc: dict
    records: list[LensRow]
    pure: list[LensRow]

    @property
    def model(self) -> str:
        return self.doc["diagnostics"]["model"]


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


def files_sha256(files: LegacyFiles) -> str:
    """One hash of the three files' bytes (JSON, records CSV, pure CSV, in that order)."""
    digest = hashlib.sha256()
    for path in (files.json, files.records, files.pure):
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError as exc:
            raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()


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


# ---------------------------------------------------------------- legacy files -> rows


def find_legacy_files(folder: Path) -> list[LegacyFiles]:
    if not folder.is_dir():
        raise LegacyFormatError(f"{folder}: no such folder")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        named = fmt.legacy_file(path.name)
        if named is not None and path.is_file():
            stem, kind = named
            found.setdefault(stem, {})[kind] = path
    if not found:
        raise LegacyFormatError(
            f"{folder}: no legacy files ({fmt.json_name('<model>')}, {fmt.records_name('<model>')}, {fmt.pure_name('<model>')})"
        )
    return [_complete(folder, stem, paths) for stem, paths in found.items()]


def _complete(folder: Path, stem: str, paths: dict[str, Path]) -> LegacyFiles:
    names = {"json": fmt.json_name(stem), "records": fmt.records_name(stem), "pure": fmt.pure_name(stem)}
    missing = [name for kind, name in names.items() if kind not in paths]
    if missing:
        found = " and ".join(path.name for path in paths.values())
        raise LegacyFormatError(f"{folder}: {found} without {' and '.join(missing)}")
    return LegacyFiles(stem=stem, **paths)


def read_model(files: LegacyFiles) -> LegacyModel:
    doc = read_json(files.json)
    records = read_lens_csv(files.records, fmt.records_header, with_metrics=False)
    pure = read_lens_csv(files.pure, fmt.pure_header, with_metrics=True)
    for row in records:
        row.prompt_variant = row.prompt_variant or fmt.ORIG_VARIANT
        if (row.prompt_id, row.prompt_variant) != PRIMARY:
            raise LegacyFormatError(f"{files.records}: line {row.line}: expected only rows of prompt 'pos' variant 'orig'")
    if any(row.prompt_variant is None for row in pure):
        _assign_variants(files.pure, pure)
    return LegacyModel(files=files, doc=doc, records=records, pure=pure)


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LegacyFormatError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise LegacyFormatError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(doc, dict):
        raise LegacyFormatError(f"{path}: line 1: expected a JSON object")
    for block in fmt.REQUIRED_JSON_BLOCKS:
        if not isinstance(doc.get(block), dict):
            raise LegacyFormatError(f"{path}: no {block!r} block")
    for key in ("context_prompt", "ground_truth"):
        _required(path, doc, "prompt", key)
    if not isinstance(_required(path, doc, "diagnostics", "model"), str):
        raise LegacyFormatError(f"{path}: diagnostics.model is not a string")
    for key, _column in fmt.MODEL_STATS:
        _required(path, doc, "model_stats", key)
    return doc


def _required(path: Path, doc: dict, *keys: str):
    value = doc
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise LegacyFormatError(f"{path}: missing key {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def read_lens_csv(path: Path, header_of, *, with_metrics: bool) -> list[LensRow]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, escapechar=fmt.CSV_ESCAPE)
            header = _check_header(path, next(reader, None), header_of)
            rows, start = [], reader.line_num + 1
            for values in reader:
                rows.append(_lens_row(path, start, header, values, with_metrics))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise LegacyFormatError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise LegacyFormatError(f"{path}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise LegacyFormatError(f"{path}: no rows")
    return rows


def _check_header(path: Path, header: list[str] | None, header_of) -> tuple[str, ...]:
    for with_variant in (True, False):
        if header is not None and tuple(header) == header_of(with_variant):
            return header_of(with_variant)
    expected = header_of(True)
    got = header or []
    column = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    shown = repr(got[column]) if column < len(got) else "missing"
    wanted = repr(expected[column]) if column < len(expected) else "nothing"
    raise LegacyFormatError(f"{path}: line 1: not a legacy header: column {column + 1} is {shown}, expected {wanted}")


class _Cells:
    """The fields of one CSV row by column name, parsed with errors naming file, line and column."""

    def __init__(self, path: Path, line: int, header: tuple[str, ...], values: list[str]):
        if len(values) != len(header):
            raise LegacyFormatError(f"{path}: line {line}: {len(values)} fields, expected {len(header)}")
        self.where = f"{path}: line {line}"
        self.cells = dict(zip(header, values))

    def text(self, column: str) -> str | None:
        return self.cells.get(column)

    def number(self, column: str, kind=float):
        text = self.cells[column]
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise LegacyFormatError(f"{self.where}: {column}: not a number: {text!r}") from None

    def required(self, column: str, kind=int):
        value = self.number(column, kind)
        if value is None:
            raise LegacyFormatError(f"{self.where}: {column} is empty")
        return value

    def flag(self, column: str) -> bool | None:
        text = self.cells[column]
        if text not in ("True", "False", ""):
            raise LegacyFormatError(f"{self.where}: {column}: expected True or False, got {text!r}")
        return None if text == "" else text == "True"


def _lens_row(path: Path, line: int, header: tuple[str, ...], values: list[str], with_metrics: bool) -> LensRow:
    cells = _Cells(path, line, header, values)
    tokens, probs = _top_tokens(cells)
    row = LensRow(
        line=line,
        prompt_id=cells.text("prompt_id"),
        prompt_variant=cells.text("prompt_variant"),
        layer=cells.required("layer"),
        pos=cells.required("pos"),
        token=cells.text("token"),
        entropy=cells.number("entropy"),
        top_tokens=tokens,
        top_probs=probs,
    )
    cells.number("rest_mass")  # derived (v1.rest_mass); checked only
    if with_metrics:
        row.metrics = {name: cells.number(name, kind) for name, kind in _PURE_NUMBERS.items()}
        row.metrics |= {name: cells.flag(name) for name in _PURE_FLAGS}
    return row


def _top_tokens(cells: _Cells) -> tuple[list[str], list[float]]:
    """The listed top tokens: a prefix of the 20 column pairs, the rest empty."""
    probs = [cells.number(f"prob{i}") for i in range(1, fmt.WIDE_TOP_K + 1)]
    listed = next((i for i, p in enumerate(probs) if p is None), len(probs))
    if any(p is not None for p in probs[listed:]):
        raise LegacyFormatError(f"{cells.where}: prob{listed + 1} is empty but a later prob is not")
    return [cells.text(f"top{i}") for i in range(1, listed + 1)], probs[:listed]


def _assign_variants(path: Path, rows: list[LensRow]) -> None:
    """Without a prompt_variant column: each prompt id's blocks (layer restarting) in VARIANTS_BY_BLOCK order."""
    blocks: dict[str, int] = {}
    previous = None
    for row in rows:
        if previous is None or row.prompt_id != previous.prompt_id or row.layer <= previous.layer:
            blocks[row.prompt_id] = blocks.get(row.prompt_id, -1) + 1
        variants = VARIANTS_BY_BLOCK.get(row.prompt_id, ())
        if blocks[row.prompt_id] >= len(variants):
            raise LegacyFormatError(f"{path}: line {row.line}: unexpected rows of prompt {row.prompt_id!r} (no prompt_variant column)")
        row.prompt_variant = variants[blocks[row.prompt_id]]
        previous = row


# ---------------------------------------------------------------- rows -> tables


def stage_run(writer: RunWriter, tables: dict[str, pa.Table]) -> None:
    writer.write("prompts", tables["prompts"], schema.PROMPTS)
    last = tables["records"].column("is_last_pos")
    # Last-position records in a file of their own, as extract writes them.
    writer.append("records", tables["records"].filter(last), schema.RECORDS, part="next")
    writer.append("records", tables["records"].filter(pc.invert(last)), schema.RECORDS)
    for name in ("finals", "consistency", "legacy_raw_lens_samples"):
        writer.write(name, tables[name], schema.TABLES[name])


def legacy_tables(model: LegacyModel) -> dict[str, pa.Table]:
    """The run's tables (without the manifest); JSON values of the wrong type name the JSON file."""
    try:
        return {
            "prompts": pa.Table.from_pylist(prompt_rows(model), schema=schema.PROMPTS),
            "records": pa.Table.from_pylist(record_rows(model), schema=schema.RECORDS),
            "finals": pa.Table.from_pylist(final_rows(model), schema=schema.FINALS),
            "consistency": pa.Table.from_pylist(consistency_rows(model), schema=schema.CONSISTENCY),
            "legacy_raw_lens_samples": pa.Table.from_pylist(raw_lens_rows(model), schema=schema.LEGACY_RAW_LENS_SAMPLES),
        }
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, AttributeError, KeyError) as exc:
        raise LegacyFormatError(f"{model.files.json}: unexpected value ({type(exc).__name__}: {folded(exc, 200)})") from None


def prompt_rows(model: LegacyModel) -> list[dict]:
    """pos/orig, then the other prompts of the pure CSV in file order, then the test prompts."""
    doc = model.doc
    primary = _gold_fields(doc.get("gold_answer"), doc["diagnostics"].get("gold_alignment"))
    primary |= {"prompt_id": fmt.POS_ID, "prompt_variant": fmt.ORIG_VARIANT, "role": fmt.POS_ROLE}
    primary |= {"text": doc["prompt"]["context_prompt"], "gold": doc["prompt"]["ground_truth"]}
    primary |= {"temperatures": [t["temperature"] for t in doc.get("temperature_exploration", [])]}
    primary |= {"n_tokens": _n_tokens(model.records, *PRIMARY), "tokens": _prompt_tokens(model)}
    rows = [primary]
    for prompt_id, variant, line in _pure_prompts(model):
        if (prompt_id, variant) != PRIMARY:
            rows.append(_related_prompt(model, primary, prompt_id, variant, line))
    for index, test in enumerate(doc.get("test_prompts", [])):
        test_id = fmt.seed_test_id(index)
        rows.append({"prompt_id": test_id, "prompt_variant": fmt.ORIG_VARIANT, "role": fmt.TEST_ROLE, "text": test["prompt"], "temperatures": []})
    return [row | {"prompt_index": index} for index, row in enumerate(rows)]


def _related_prompt(model: LegacyModel, primary: dict, prompt_id: str, variant: str, line: int) -> dict:
    """The no-filler ablation or the control prompt, from the positive prompt and the JSON."""
    row = {"prompt_id": prompt_id, "prompt_variant": variant, "temperatures": [], "n_tokens": _n_tokens(model.pure, prompt_id, variant)}
    if (prompt_id, variant) == (fmt.POS_ID, fmt.NO_FILLER_VARIANT):
        gold = {k: primary[k] for k in ("gold", "gold_alignment", "gold_variant", "gold_first_id", "gold_answer_ids", "gold_pieces")}
        return row | gold | {"role": fmt.POS_ROLE, "text": fmt.without_filler(primary["text"])}
    if (prompt_id, variant) == (fmt.CTL_ID, fmt.ORIG_VARIANT):
        control = model.doc.get("control_prompt")
        if not isinstance(control, dict):
            raise LegacyFormatError(f"{model.files.pure}: line {line}: control rows but {model.files.json} has no control_prompt block")
        gold = _gold_fields(_required(model.files.json, model.doc, "control_prompt", "gold_answer"), control.get("gold_alignment"))
        return row | gold | {
            "role": fmt.CTL_ROLE,
            "text": _required(model.files.json, model.doc, "control_prompt", "context_prompt"),
            "gold": control["gold_answer"].get("string"),
            "control_of": fmt.POS_ID,
            "paired_variant": fmt.ORIG_VARIANT,
            "paired_gold_first_id": primary.get("gold_first_id"),
        }
    raise LegacyFormatError(f"{model.files.pure}: line {line}: unknown prompt {prompt_id!r} variant {variant!r}")


def _gold_fields(gold: dict | None, alignment: str | None) -> dict:
    """The prompts table's gold alignment columns from a gold_answer block (older files: none)."""
    gold = gold or {}
    first_id = gold.get("first_id")
    if alignment is None and gold:
        alignment = "ok" if first_id is not None else "unresolved"
    return {
        "gold_alignment": alignment,
        "gold_variant": gold.get("variant"),
        "gold_first_id": first_id,
        "gold_answer_ids": gold.get("answer_ids"),
        "gold_pieces": gold.get("pieces"),
    }


def _pure_prompts(model: LegacyModel) -> list[tuple[str, str, int]]:
    """(prompt id, variant, first line) of each prompt of the pure CSV, in file order."""
    seen: dict[tuple[str, str], int] = {}
    for row in model.pure:
        seen.setdefault((row.prompt_id, row.prompt_variant), row.line)
    return [(prompt_id, variant, line) for (prompt_id, variant), line in seen.items()]


def _n_tokens(rows: list[LensRow], prompt_id: str, variant: str) -> int | None:
    """1 + the last position of the prompt's rows."""
    positions = [row.pos for row in rows if (row.prompt_id, row.prompt_variant) == (prompt_id, variant)]
    return max(positions) + 1 if positions else None


def _prompt_tokens(model: LegacyModel) -> list[str]:
    first_layer = min(row.layer for row in model.records)
    by_pos = {row.pos: row.token for row in model.records if row.layer == first_layer}
    return [by_pos.get(pos) for pos in range(max(by_pos) + 1)]


def record_rows(model: LegacyModel) -> list[dict]:
    """One record per (prompt, layer, pos): the records CSV, with the pure CSV's rows merged in."""
    last_pos = max(row.pos for row in model.records)
    records = {row.key: _record(row, is_last_pos=row.pos == last_pos, token=row.token) for row in model.records}
    for row in model.pure:
        where = f"{model.files.pure}: line {row.line}"
        if (row.prompt_id, row.prompt_variant) != PRIMARY:
            records[row.key] = _record(row, is_last_pos=True, token=None)
        elif row.pos != last_pos or row.key not in records:
            raise LegacyFormatError(f"{where}: layer {row.layer} pos {row.pos} is not a last position of the records file")
        elif not _same_distribution(records[row.key], row):
            raise LegacyFormatError(f"{where}: entropy or top tokens differ from the records file's row")
        records[row.key] |= _pure_metrics(row)
    return list(records.values())


def _record(row: LensRow, *, is_last_pos: bool, token: str | None) -> dict:
    return {
        "prompt_id": row.prompt_id,
        "prompt_variant": row.prompt_variant,
        "lens": fmt.LENS,
        "layer": row.layer,
        "pos": row.pos,
        "is_last_pos": is_last_pos,
        "token": token,
        "entropy_bits": row.entropy,
        "topk_tokens": row.top_tokens,
        "topk_probs": row.top_probs,
    }


def _same_distribution(record: dict, row: LensRow) -> bool:
    n = len(row.top_probs)
    return (
        record["entropy_bits"] == row.entropy
        and record["topk_tokens"][:n] == row.top_tokens
        and record["topk_probs"][:n] == row.top_probs
    )


def _pure_metrics(row: LensRow) -> dict:
    metrics = row.metrics
    margin, p_answer = metrics["control_margin"], metrics["p_answer"]
    paired = None
    if margin is not None and p_answer is not None:
        paired = float(np.float32(p_answer - margin))
    return {
        "p_answer": p_answer,
        "answer_rank": metrics["answer_rank"],
        "p_paired_answer": paired,
        "kl_to_final_bits": metrics["kl_to_final_bits"],
        "cos_to_final": metrics["cos_to_final"],
        "legacy_copy_collapse": metrics["copy_collapse"],
    }


def final_rows(model: LegacyModel) -> list[dict]:
    doc = model.doc
    rows = [_final(fmt.POS_ID, 1.0, doc["final_prediction"])]
    rows += [_final(fmt.POS_ID, t["temperature"], t) for t in doc.get("temperature_exploration", [])]
    rows += [_final(fmt.seed_test_id(i), 1.0, t) for i, t in enumerate(doc.get("test_prompts", []))]
    return rows


def _final(prompt_id: str, temperature: float, block: dict) -> dict:
    return {
        "prompt_id": prompt_id,
        "prompt_variant": fmt.ORIG_VARIANT,
        "temperature": temperature,
        "entropy_bits": block["entropy"],
        "topk_tokens": [token for token, _prob in block["topk"]],
        "topk_probs": [prob for _token, prob in block["topk"]],
    }


def consistency_rows(model: LegacyModel) -> list[dict]:
    check = model.doc["diagnostics"].get("last_layer_consistency")
    if check is None:
        return []
    cfg, after = check.get("cfg_transform") or {}, check.get("kl_after_transform_bits") or {}
    return [
        {
            "prompt_id": fmt.POS_ID,
            "prompt_variant": fmt.ORIG_VARIANT,
            "lens": fmt.LENS,
            "temp_est": check.get("temp_est"),
            "kl_after_temp_bits": check.get("kl_after_temp_bits"),
            "cfg_scale": cfg.get("scale"),
            "cfg_softcap": cfg.get("softcap"),
            "kl_after_scale_bits": after.get("scale"),
            "kl_after_softcap_bits": after.get("softcap"),
            "kl_after_scale_then_softcap_bits": after.get("scale_then_softcap"),
        }
    ]


def raw_lens_rows(model: LegacyModel) -> list[dict]:
    samples = (model.doc.get("raw_lens_check") or {}).get("samples") or []
    return [{"prompt_id": fmt.POS_ID, "prompt_variant": fmt.ORIG_VARIANT} | sample for sample in samples]


def manifest_table(model: LegacyModel, run_id: str, started: datetime, finished: datetime) -> pa.Table:
    diagnostics, stats = model.doc["diagnostics"], model.doc["model_stats"]
    row = {
        "run_id": run_id,
        "model": model.model,
        "source": "legacy",
        "status": "committed",
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": started,
        "finished_at": finished,
        "lensdb_version": lensdb_package.__version__,
        "lenses": [fmt.LENS],
        "top_k": fmt.WIDE_TOP_K,
        "prompt_set": "legacy",
        "target_prediction": diagnostics.get("target_prediction"),
        "legacy_blocks": legacy_blocks(model.doc),
        "source_files_sha256": files_sha256(model.files),
    }
    row |= {column: stats[key] for key, column in fmt.MODEL_STATS}
    row |= {key: diagnostics.get(key) for key in fmt.PROVENANCE_KEYS}
    try:
        return pa.Table.from_pylist([row], schema=schema.MANIFEST)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise LegacyFormatError(f"{model.files.json}: unexpected value in diagnostics or model_stats ({folded(exc, 200)})") from None


def legacy_blocks(doc: dict) -> list[str]:
    """The known JSON blocks the file has, in file order (export writes exactly these)."""
    blocks = []
    for key in doc:
        if key in fmt.JSON_BLOCKS:
            blocks.append(key)
        if key == "diagnostics" and "last_layer_consistency" in doc[key]:
            blocks.append(fmt.LAST_LAYER_BLOCK)
    return blocks


def _utc_now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)

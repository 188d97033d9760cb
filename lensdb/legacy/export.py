"""`export`: committed runs -> the legacy output files (JSON + records CSV + pure CSV).

Data flow: v1 views and macros -> rows -> files. Every derived value (flags, p_top1,
p_top5, rest_mass, control_margin, the JSON's diagnostics and summaries) is read from
the v1 views; stored values (tokens, probabilities, prompts, final predictions, the run's
provenance) from v1.records, v1.prompts, v1.final_predictions and v1.runs. This module
only arranges them as the legacy files have them (lensdb.legacy.format).

Imported runs write exactly the JSON blocks their file had (manifest.legacy_blocks);
extract runs write every block they have data for.

A run's files are written only when its folder is the same after every read as before
(a run removed by `lensdb rm` meanwhile fails the export), each to a temporary file beside
it and then renamed: no legacy file is ever partial, and a full disk is one line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from lensdb import catalog
from lensdb.errors import LensdbError, QueryError, WarehouseError
from lensdb.legacy import format as fmt
from lensdb.output import write_files_whole
from lensdb.warehouse import layout, reading

# JSON key -> v1.diagnostics column
DIAGNOSTIC_KEYS = (
    ("L_copy", "L_copy"),
    ("L_copy_H", "L_copy_H"),
    ("L_semantic", "L_semantic"),
    ("delta_layers", "delta_layers"),
    ("copy_thresh", "copy_thresh"),
    ("copy_window_k", "copy_window_k"),
    ("copy_match_level", "copy_match_level"),
    ("first_kl_below_0.5", "first_kl_below_0_5"),
    ("first_kl_below_1.0", "first_kl_below_1_0"),
    ("first_rank_le_1", "first_rank_le_1"),
    ("first_rank_le_5", "first_rank_le_5"),
    ("first_rank_le_10", "first_rank_le_10"),
    ("gold_alignment", "gold_alignment"),
)
ABLATION_KEYS = ("L_copy_orig", "L_sem_orig", "L_copy_nf", "L_sem_nf", "delta_L_copy", "delta_L_sem")
RAW_LENS_SUMMARY_KEYS = ("first_norm_only_semantic_layer", "max_kl_norm_vs_raw_bits", "lens_artifact_risk")

RECORDS_SQL = f"""
SELECT r.prompt_id, r.prompt_variant, r.layer, r.pos, r.token, r.entropy_bits, r.is_last_pos,
       r.topk_tokens, r.topk_probs,
       v1.rest_mass(list_slice(r.topk_probs, 1, {fmt.NARROW_TOP_K})) AS rest_mass_narrow,
       v1.rest_mass(list_slice(r.topk_probs, 1, {fmt.WIDE_TOP_K})) AS rest_mass_wide
FROM v1.records r
JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE r.run_id = $run AND r.lens = $lens AND r.site = 'post' AND p.role = '{fmt.POS_ROLE}' AND p.prompt_variant = '{fmt.ORIG_VARIANT}'
ORDER BY p.prompt_index, r.layer, r.pos
"""

PURE_SQL = f"""
SELECT n.prompt_id, n.prompt_variant, n.layer, n.pos, n.entropy_bits,
       list_slice(n.topk_tokens, 1, {fmt.NARROW_TOP_K}) AS topk_tokens,
       list_slice(n.topk_probs, 1, {fmt.NARROW_TOP_K}) AS topk_probs,
       v1.rest_mass(list_slice(n.topk_probs, 1, {fmt.NARROW_TOP_K})) AS rest_mass,
       {", ".join(f"n.{column}" for column in fmt.PURE_METRIC_COLUMNS)}
FROM v1.pure_next_token n
JOIN v1.prompts p USING (run_id, prompt_id, prompt_variant)
WHERE n.run_id = $run AND n.lens = $lens AND n.site = 'post' AND p.role <> '{fmt.TEST_ROLE}'
ORDER BY p.prompt_index, n.layer
"""

LATEST_RUNS_SQL = """
SELECT * FROM v1.runs
WHERE $model IS NULL OR $model IN (model, string_split(model, '/')[-1])
QUALIFY row_number() OVER (PARTITION BY model ORDER BY created_at DESC, finished_at DESC, run_id DESC) = 1
ORDER BY model
"""


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
                files = legacy_files(_Run.load(con, run, lens), out_dir, with_variant)
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
                inode = None if layout.is_remote(warehouse) else os.stat(folder.path).st_ino
            except OSError:
                continue
            state[str(folder.path)] = (inode, sorted(reading.folder_files(warehouse, folder.path).items()))
    return state


def select_runs(con, warehouse: Path, run_id: str | None, model: str | None) -> list[dict]:
    if catalog.committed_run_count(warehouse) == 0:
        raise WarehouseError(f"warehouse {warehouse} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)")
    if run_id:
        runs = _rows(con, "SELECT * FROM v1.runs WHERE run_id = $run", run=run_id)
        if not runs:
            raise WarehouseError(f"no committed run {run_id!r} in {warehouse}")
    else:
        runs = _rows(con, LATEST_RUNS_SQL, model=model)
        if not runs:
            raise WarehouseError(f"no committed run of model {model!r} in {warehouse}")
    stems = [fmt.file_stem(run["model"]) for run in runs]
    clash = next((stem for stem in stems if stems.count(stem) > 1), None)
    if clash:
        raise WarehouseError(f"several models would be written as {fmt.json_name(clash)}: export them one at a time with --run")
    return runs


def _rows(con, sql: str, **params) -> list[dict]:
    import duckdb

    try:
        cursor = con.execute(sql, params)
        names = [column[0] for column in cursor.description]
        return [dict(zip(names, values)) for values in cursor.fetchall()]
    except duckdb.Error as exc:
        raise QueryError(str(exc).strip().splitlines()[0]) from None


@dataclass
class _Run:
    """What the export reads once about a run: its manifest, the prompts the JSON describes (`primary`,
    its `control`) and the final predictions."""

    con: object
    manifest: dict
    lens: str
    primary: dict
    control: dict | None
    finals: list[dict]

    @classmethod
    def load(cls, con, manifest: dict, lens: str) -> "_Run":
        run_id = manifest["run_id"]
        if lens not in (manifest["lenses"] or []):
            raise WarehouseError(f"run {run_id} has no {lens!r} lens (it has {', '.join(manifest['lenses'] or [])})")
        prompts = _rows(con, "SELECT * FROM v1.prompts WHERE run_id = $run ORDER BY prompt_index", run=run_id)
        primary = next((p for p in prompts if p["role"] == fmt.POS_ROLE and p["prompt_variant"] == fmt.ORIG_VARIANT), None)
        if primary is None:
            raise WarehouseError(f"run {run_id} has no prompt with role 'pos' and variant 'orig', which the legacy files describe")
        control = next(
            (p for p in prompts if p["control_of"] == primary["prompt_id"] and p["paired_variant"] == primary["prompt_variant"]),
            None,
        )
        finals = _rows(con, "SELECT * FROM v1.final_predictions WHERE run_id = $run ORDER BY prompt_index, temperature", run=run_id)
        return cls(con=con, manifest=manifest, lens=lens, primary=primary, control=control, finals=finals)

    @property
    def run_id(self) -> str:
        return self.manifest["run_id"]

    @property
    def blocks(self) -> tuple[str, ...]:
        """The JSON blocks to write: an imported file's own, else all."""
        recorded = self.manifest["legacy_blocks"]
        return tuple(recorded) if recorded is not None else (*fmt.JSON_BLOCKS, fmt.LAST_LAYER_BLOCK)

    def rows(self, sql: str, **params) -> list[dict]:
        return _rows(self.con, sql, run=self.run_id, **params)

    def row(self, sql: str, **params) -> dict | None:
        found = self.rows(sql, **params)
        return found[0] if found else None

    def of_prompt(self, view: str, prompt: dict, *, lens: bool = True) -> dict | None:
        """The row of a per-prompt view for `prompt` (and the export's lens)."""
        lens_filter = " AND lens = $lens" if lens else ""
        extra = {"lens": self.lens} if lens else {}
        return self.row(
            f"SELECT * FROM {view} WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant{lens_filter}",
            id=prompt["prompt_id"],
            variant=prompt["prompt_variant"],
            **extra,
        )


def legacy_files(run: _Run, out_dir: Path, with_variant: bool) -> dict[Path, bytes]:
    """The run's three legacy files: path -> content."""
    stem = fmt.file_stem(run.manifest["model"])
    files = {
        out_dir / fmt.json_name(stem): json.dumps(legacy_json(run), ensure_ascii=False, indent=2),
        out_dir / fmt.records_name(stem): records_csv(run, with_variant),
        out_dir / fmt.pure_name(stem): pure_csv(run, with_variant),
    }
    return {path: text.encode("utf-8") for path, text in files.items()}


# ---------------------------------------------------------------- CSV files


def records_csv(run: _Run, with_variant: bool) -> str:
    lines = [fmt.csv_line(fmt.records_header(with_variant))]
    for row in run.rows(RECORDS_SQL, lens=run.lens):
        verbose = fmt.is_verbose(row["token"], row["is_last_pos"])
        listed = fmt.WIDE_TOP_K if verbose else fmt.NARROW_TOP_K
        tops = fmt.top_columns(row["topk_tokens"][:listed], row["topk_probs"][:listed])
        rest_mass = row["rest_mass_wide"] if verbose else row["rest_mass_narrow"]
        lines.append(fmt.csv_line(_leading(row, row["token"], with_variant) + tops + [rest_mass]))
    return "".join(lines)


def pure_csv(run: _Run, with_variant: bool) -> str:
    lines = [fmt.csv_line(fmt.pure_header(with_variant))]
    for row in run.rows(PURE_SQL, lens=run.lens):
        tops = fmt.top_columns(row["topk_tokens"], row["topk_probs"])
        metrics = [row[column] for column in fmt.PURE_METRIC_COLUMNS]
        lines.append(fmt.csv_line(_leading(row, fmt.NEXT_TOKEN, with_variant) + tops + [row["rest_mass"], *metrics]))
    return "".join(lines)


def _leading(row: dict, token: str, with_variant: bool) -> list:
    variant = [row["prompt_variant"]] if with_variant else []
    return [row["prompt_id"], *variant, row["layer"], row["pos"], token, row["entropy_bits"]]


# ---------------------------------------------------------------- JSON file


def legacy_json(run: _Run) -> dict:
    doc = {}
    for block in run.blocks:
        if block in JSON_BUILDERS:
            value = JSON_BUILDERS[block](run)
            if value is not None:
                doc[block] = value
    return doc


def prompt_block(run: _Run) -> dict:
    return {"type": "prompt", "context_prompt": run.primary["text"], "ground_truth": run.primary["gold"]}


def _topk(final: dict, k: int) -> list[list]:
    return [[token, prob] for token, prob in zip(final["topk_tokens"][:k], final["topk_probs"][:k])]


def tests_block(run: _Run) -> list[dict]:
    tests = [f for f in run.finals if f["role"] == fmt.TEST_ROLE and f["temperature"] == 1.0]
    return [
        {"type": "test_prompt", "prompt": f["text"], "entropy": f["entropy_bits"], "topk": _topk(f, fmt.TEST_PROMPT_TOP_K)}
        for f in tests
    ]


def temperature_block(run: _Run) -> list[dict]:
    temperatures = list(run.primary["temperatures"] or [])
    finals = [f for f in run.finals if _is_primary(run, f) and f["temperature"] in temperatures]
    finals.sort(key=lambda f: temperatures.index(f["temperature"]))
    return [
        {
            "type": "temperature_exploration",
            "temperature": f["temperature"],
            "entropy": f["entropy_bits"],
            "topk": _topk(f, fmt.TEMPERATURE_TOP_K),
        }
        for f in finals
    ]


def final_prediction_block(run: _Run) -> dict | None:
    final = next((f for f in run.finals if _is_primary(run, f) and f["temperature"] == 1.0), None)
    if final is None:
        return None
    return {"type": "final_prediction", "entropy": final["entropy_bits"], "topk": _topk(final, fmt.FINAL_TOP_K)}


def _is_primary(run: _Run, row: dict) -> bool:
    return (row["prompt_id"], row["prompt_variant"]) == (run.primary["prompt_id"], run.primary["prompt_variant"])


def diagnostics_block(run: _Run) -> dict:
    manifest, found = run.manifest, run.of_prompt("v1.diagnostics", run.primary) or {}
    block = {"type": "diagnostics", "model": manifest["model"]}
    block |= {key: manifest[key] for key in fmt.PROVENANCE_KEYS}
    block |= {"context_prompt": run.primary["text"], "target_prediction": manifest["target_prediction"]}
    block |= {key: found.get(column) for key, column in DIAGNOSTIC_KEYS}
    if fmt.LAST_LAYER_BLOCK in run.blocks:
        block["last_layer_consistency"] = last_layer_block(run)
    return block


def last_layer_block(run: _Run) -> dict | None:
    check = run.of_prompt("v1.last_layer_consistency", run.primary)
    if check is None:
        return None
    plain = ("kl_to_final_bits", "top1_agree", "p_top1_lens", "p_top1_model", "p_answer_lens", "answer_rank_lens", "temp_est", "kl_after_temp_bits")
    return {key: check[key] for key in plain} | {
        "cfg_transform": {"scale": check["cfg_scale"], "softcap": check["cfg_softcap"]},
        "kl_after_transform_bits": {
            "scale": check["kl_after_scale_bits"],
            "softcap": check["kl_after_softcap_bits"],
            "scale_then_softcap": check["kl_after_scale_then_softcap_bits"],
        },
        "warn_high_last_layer_kl": check["warn_high_last_layer_kl"],
    }


def model_stats_block(run: _Run) -> dict:
    return {"type": "model_stats"} | {key: run.manifest[column] for key, column in fmt.MODEL_STATS}


def raw_lens_check_block(run: _Run) -> dict | None:
    samples = run.rows(
        "SELECT * FROM v1.raw_lens_check WHERE run_id = $run AND prompt_id = $id AND prompt_variant = $variant AND sampled ORDER BY layer",
        id=run.primary["prompt_id"],
        variant=run.primary["prompt_variant"],
    )
    if not samples:
        return None
    summary = run.of_prompt("v1.raw_lens_summary", run.primary, lens=False)
    return {
        "mode": "sample",
        "samples": [{key: sample[key] for key in fmt.RAW_LENS_SAMPLE_KEYS} for sample in samples],
        "summary": {key: summary[key] for key in RAW_LENS_SUMMARY_KEYS},
    }


def ablation_block(run: _Run) -> dict | None:
    found = run.row(
        """SELECT a.* FROM v1.ablation_summary a
           JOIN v1.prompts p ON p.run_id = a.run_id AND p.prompt_id = a.prompt_id AND p.prompt_variant = a.ablation_variant
           WHERE a.run_id = $run AND a.lens = $lens AND a.prompt_id = $id
           ORDER BY p.prompt_index LIMIT 1""",
        lens=run.lens,
        id=run.primary["prompt_id"],
    )
    return {key: found[key] for key in ABLATION_KEYS} if found else None


def control_prompt_block(run: _Run) -> dict | None:
    if run.control is None:
        return None
    return {
        "context_prompt": run.control["text"],
        "gold_answer": gold_block(run.control),
        "gold_alignment": run.control["gold_alignment"],
    }


def control_summary_block(run: _Run) -> dict | None:
    if run.control is None:
        return None
    found = run.of_prompt("v1.control_summary", run.control) or {}
    return {"first_control_margin_pos": found.get("first_control_margin_pos"), "max_control_margin": found.get("max_control_margin")}


def gold_answer_block(run: _Run) -> dict | None:
    return gold_block(run.primary)


def gold_block(prompt: dict) -> dict | None:
    if prompt["gold"] is None:
        return None
    if prompt["gold_alignment"] != "ok":
        return {"string": prompt["gold"], "pieces": [], "first_id": None, "answer_ids": [], "variant": "unknown"}
    return {
        "string": prompt["gold"],
        "pieces": list(prompt["gold_pieces"] or []),
        "first_id": prompt["gold_first_id"],
        "answer_ids": list(prompt["gold_answer_ids"] or []),
        "variant": prompt["gold_variant"],
    }


JSON_BUILDERS = {
    "prompt": prompt_block,
    "test_prompts": tests_block,
    "temperature_exploration": temperature_block,
    "diagnostics": diagnostics_block,
    "final_prediction": final_prediction_block,
    "model_stats": model_stats_block,
    "raw_lens_check": raw_lens_check_block,
    "ablation_summary": ablation_block,
    "control_prompt": control_prompt_block,
    "control_summary": control_summary_block,
    "gold_answer": gold_answer_block,
}

"""Parsed legacy files -> the warehouse tables of one run (prompts, records, finals,
consistency, legacy_raw_lens_samples) and its manifest row.

Values are stored as the files hold them; the derived columns (flags, p_top1, p_top5,
rest_mass, the JSON's diagnostics and summaries) are not stored, the v1 views recompute
them (see lensdb.legacy.importer).
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pyarrow as pa

import lensdb as lensdb_package
from lensdb.errors import LegacyFormatError, folded
from lensdb.legacy import format as fmt
from lensdb.legacy.reader import PRIMARY, LegacyModel, LensRow, files_sha256, required_value
from lensdb.warehouse import schema


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
        gold = _gold_fields(required_value(model.files.json, model.doc, "control_prompt", "gold_answer"), control.get("gold_alignment"))
        return row | gold | {
            "role": fmt.CTL_ROLE,
            "text": required_value(model.files.json, model.doc, "control_prompt", "context_prompt"),
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

"""The legacy JSON file of a run: one builder per block, from the v1 views (lensdb.legacy.export
reads the run and writes the files; the SQL is in lensdb/queries/export/)."""

from __future__ import annotations

from lensdb.legacy import format as fmt
from lensdb.legacy.export_run import ExportRun

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


def legacy_json(run: ExportRun) -> dict:
    doc = {}
    for block in run.blocks:
        if block in JSON_BUILDERS:
            value = JSON_BUILDERS[block](run)
            if value is not None:
                doc[block] = value
    return doc


def prompt_block(run: ExportRun) -> dict:
    return {"type": "prompt", "context_prompt": run.primary["text"], "ground_truth": run.primary["gold"]}


def _topk(final: dict, k: int) -> list[list]:
    return [[token, prob] for token, prob in zip(final["topk_tokens"][:k], final["topk_probs"][:k])]


def tests_block(run: ExportRun) -> list[dict]:
    tests = [f for f in run.finals if f["role"] == fmt.TEST_ROLE and f["temperature"] == 1.0]
    return [
        {"type": "test_prompt", "prompt": f["text"], "entropy": f["entropy_bits"], "topk": _topk(f, fmt.TEST_PROMPT_TOP_K)}
        for f in tests
    ]


def temperature_block(run: ExportRun) -> list[dict]:
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


def final_prediction_block(run: ExportRun) -> dict | None:
    final = next((f for f in run.finals if _is_primary(run, f) and f["temperature"] == 1.0), None)
    if final is None:
        return None
    return {"type": "final_prediction", "entropy": final["entropy_bits"], "topk": _topk(final, fmt.FINAL_TOP_K)}


def _is_primary(run: ExportRun, row: dict) -> bool:
    return (row["prompt_id"], row["prompt_variant"]) == (run.primary["prompt_id"], run.primary["prompt_variant"])


def diagnostics_block(run: ExportRun) -> dict:
    manifest, found = run.manifest, run.of_prompt("export/diagnostics", run.primary) or {}
    block = {"type": "diagnostics", "model": manifest["model"]}
    block |= {key: manifest[key] for key in fmt.PROVENANCE_KEYS}
    block |= {"context_prompt": run.primary["text"], "target_prediction": manifest["target_prediction"]}
    block |= {key: found.get(column) for key, column in DIAGNOSTIC_KEYS}
    if fmt.LAST_LAYER_BLOCK in run.blocks:
        block["last_layer_consistency"] = last_layer_block(run)
    return block


def last_layer_block(run: ExportRun) -> dict | None:
    check = run.of_prompt("export/last_layer", run.primary)
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


def model_stats_block(run: ExportRun) -> dict:
    return {"type": "model_stats"} | {key: run.manifest[column] for key, column in fmt.MODEL_STATS}


def raw_lens_check_block(run: ExportRun) -> dict | None:
    samples = run.rows("export/raw_lens_samples", id=run.primary["prompt_id"], variant=run.primary["prompt_variant"])
    if not samples:
        return None
    summary = run.of_prompt("export/raw_lens_summary", run.primary, lens=False)
    return {
        "mode": "sample",
        "samples": [{key: sample[key] for key in fmt.RAW_LENS_SAMPLE_KEYS} for sample in samples],
        "summary": {key: summary[key] for key in RAW_LENS_SUMMARY_KEYS},
    }


def ablation_block(run: ExportRun) -> dict | None:
    found = run.row("export/ablation", lens=run.lens, id=run.primary["prompt_id"])
    return {key: found[key] for key in ABLATION_KEYS} if found else None


def control_prompt_block(run: ExportRun) -> dict | None:
    if run.control is None:
        return None
    return {
        "context_prompt": run.control["text"],
        "gold_answer": gold_block(run.control),
        "gold_alignment": run.control["gold_alignment"],
    }


def control_summary_block(run: ExportRun) -> dict | None:
    if run.control is None:
        return None
    found = run.of_prompt("export/control_summary", run.control) or {}
    return {"first_control_margin_pos": found.get("first_control_margin_pos"), "max_control_margin": found.get("max_control_margin")}


def gold_answer_block(run: ExportRun) -> dict | None:
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

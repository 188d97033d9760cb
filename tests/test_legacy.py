"""Legacy compatibility: import the real legacy files, export them back byte for byte, and
export complete legacy files from a fresh extract."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import pytest

import lensdb
from lensdb.legacy import format as fmt
from tests.conftest import LEGACY_RUN
from tests.cli_helpers import assert_one_line_error, run_cli

MODELS = ("Meta-Llama-3-8B", "gemma-2-9b", "Qwen3-8B")

needs_legacy_run = pytest.mark.skipif(not LEGACY_RUN.is_dir(), reason="../shared/fixtures/legacy-run-2025-08-30 is not available")

TOP_LEVEL_KEYS = [
    "prompt", "test_prompts", "temperature_exploration", "diagnostics", "final_prediction", "model_stats",
    "raw_lens_check", "ablation_summary", "control_prompt", "control_summary", "gold_answer",
]
DIAGNOSTICS_KEYS = [
    "type", "model", "device", "use_norm_lens", "use_fp32_unembed", "unembed_dtype", "first_block_ln1_type",
    "final_ln_type", "layernorm_bias_fix", "norm_alignment_fix", "layer0_norm_fix", "mixed_precision_fix",
    "layer0_position_info", "context_prompt", "target_prediction", "L_copy", "L_copy_H", "L_semantic",
    "delta_layers", "copy_thresh", "copy_window_k", "copy_match_level", "first_kl_below_0.5",
    "first_kl_below_1.0", "first_rank_le_1", "first_rank_le_5", "first_rank_le_10", "gold_alignment",
    "last_layer_consistency",
]
LAST_LAYER_KEYS = [
    "kl_to_final_bits", "top1_agree", "p_top1_lens", "p_top1_model", "p_answer_lens", "answer_rank_lens",
    "temp_est", "kl_after_temp_bits", "cfg_transform", "kl_after_transform_bits", "warn_high_last_layer_kl",
]
BLOCK_KEYS = {
    "prompt": ["type", "context_prompt", "ground_truth"],
    "final_prediction": ["type", "entropy", "topk"],
    "model_stats": ["type", "num_layers", "d_model", "n_heads", "d_vocab", "n_ctx", "architecture"],
    "raw_lens_check": ["mode", "samples", "summary"],
    "ablation_summary": ["L_copy_orig", "L_sem_orig", "L_copy_nf", "L_sem_nf", "delta_L_copy", "delta_L_sem"],
    "control_prompt": ["context_prompt", "gold_answer", "gold_alignment"],
    "control_summary": ["first_control_margin_pos", "max_control_margin"],
    "gold_answer": ["string", "pieces", "first_id", "answer_ids", "variant"],
}
# JSON diagnostics key -> v1.diagnostics column
DIAGNOSTICS_COLUMNS = {
    "L_copy": "L_copy", "L_copy_H": "L_copy_H", "L_semantic": "L_semantic", "delta_layers": "delta_layers",
    "copy_thresh": "copy_thresh", "copy_window_k": "copy_window_k", "copy_match_level": "copy_match_level",
    "first_kl_below_0.5": "first_kl_below_0_5", "first_kl_below_1.0": "first_kl_below_1_0",
    "first_rank_le_1": "first_rank_le_1", "first_rank_le_5": "first_rank_le_5",
    "first_rank_le_10": "first_rank_le_10", "gold_alignment": "gold_alignment",
}


def assert_ok(result):
    assert result.exit_code == 0, result.stderr


def committed_runs(warehouse: Path) -> list[Path]:
    return sorted((warehouse / "runs").glob("model=*/run=*"))


def legacy_names(stem: str) -> list[str]:
    return [f"output-{stem}.json", f"output-{stem}-records.csv", f"output-{stem}-pure-next-token.csv"]


def copy_model(stem: str, folder: Path, names: list[str] | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names or legacy_names(stem):
        shutil.copyfile(LEGACY_RUN / name, folder / name)
    return folder


def assert_same_bytes(expected: Path, got: Path):
    want, have = expected.read_bytes(), got.read_bytes()
    if want == have:
        return
    offset = next((i for i, (a, b) in enumerate(zip(want, have)) if a != b), min(len(want), len(have)))
    pytest.fail(
        f"{got.name} differs from {expected} at byte {offset} (sizes {len(want)} / {len(have)}):\n"
        f"  expected ...{want[max(0, offset - 60):offset + 60]!r}\n"
        f"  got      ...{have[max(0, offset - 60):offset + 60]!r}"
    )


def view_row(warehouse: Path, sql: str, *params) -> dict:
    con = lensdb.connect(warehouse, read_only=True)
    try:
        cursor = con.execute(sql, list(params))
        rows = cursor.fetchall()
        assert len(rows) == 1, rows
        return dict(zip([c[0] for c in cursor.description], rows[0]))
    finally:
        con.close()


# ---------------------------------------------------------------- the CSV dialect


def test_csv_field_formats_like_the_legacy_writer():
    assert fmt.csv_line(["a", 1, 0.1, True, None, ""]) == "a,1,0.1,True,,\n"
    assert fmt.csv_field("x,y") == '"x,y"'
    assert fmt.csv_field('say "hi"') == '"say ""hi"""'
    assert fmt.csv_field("two\nlines") == '"two\nlines"'
    assert fmt.csv_field("\r") == '"\r"'
    assert fmt.csv_field("\\core") == "\\\\core"
    assert fmt.csv_field('\\",') == '"\\\\"","'
    assert fmt.csv_field(float("1e-05")) == "1e-05"


@needs_legacy_run
@pytest.mark.parametrize("name", [n for stem in MODELS for n in legacy_names(stem)[1:]])
def test_csv_formatter_rewrites_every_fixture_byte(name):
    raw = (LEGACY_RUN / name).read_bytes()
    rows = csv.reader(io.StringIO(raw.decode("utf-8"), newline=""), escapechar="\\")
    assert "".join(fmt.csv_line(row) for row in rows).encode("utf-8") == raw


# ---------------------------------------------------------------- round trip of the real files


@pytest.fixture(scope="module", params=MODELS)
def imported(request, tmp_path_factory):
    """One fixture model imported into a fresh warehouse: (stem, warehouse)."""
    if not LEGACY_RUN.is_dir():
        pytest.skip("../shared/fixtures/legacy-run-2025-08-30 is not available")
    stem = request.param
    root = tmp_path_factory.mktemp(f"legacy-{stem}")
    warehouse = root / "warehouse"
    assert_ok(run_cli("import-legacy", copy_model(stem, root / "in"), "--warehouse", warehouse))
    return stem, warehouse


def test_import_then_export_is_byte_exact(imported, tmp_path):
    stem, warehouse = imported
    assert_ok(run_cli("export", "--out", tmp_path, "--warehouse", warehouse))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(legacy_names(stem))
    for name in legacy_names(stem):
        assert_same_bytes(LEGACY_RUN / name, tmp_path / name)


def test_views_equal_the_json(imported):
    stem, warehouse = imported
    doc = json.loads((LEGACY_RUN / f"output-{stem}.json").read_text(encoding="utf-8"))
    where = "WHERE prompt_id = 'pos' AND prompt_variant = ? AND lens = 'norm'"
    diagnostics = view_row(warehouse, f"FROM v1.diagnostics {where}", "orig")
    assert {key: diagnostics[column] for key, column in DIAGNOSTICS_COLUMNS.items()} == {
        key: doc["diagnostics"][key] for key in DIAGNOSTICS_COLUMNS
    }
    control = view_row(warehouse, "FROM v1.control_summary WHERE prompt_id = 'ctl' AND lens = 'norm'")
    assert {key: control[key] for key in doc["control_summary"]} == doc["control_summary"]
    ablation = view_row(warehouse, "FROM v1.ablation_summary WHERE prompt_id = 'pos' AND ablation_variant = 'no_filler' AND lens = 'norm'")
    assert {key: ablation[key] for key in doc["ablation_summary"]} == doc["ablation_summary"]
    run = view_row(warehouse, "SELECT model, source, status, n_layers, legacy_blocks FROM v1.runs")
    assert run == {
        "model": doc["diagnostics"]["model"],
        "source": "legacy",
        "status": "committed",
        "n_layers": doc["model_stats"]["num_layers"],
        "legacy_blocks": [*TOP_LEVEL_KEYS[:4], "diagnostics.last_layer_consistency", *TOP_LEVEL_KEYS[4:]],
    }


def test_prompts_of_an_imported_run(imported):
    _stem, warehouse = imported
    con = lensdb.connect(warehouse, read_only=True)
    try:
        prompts = con.execute("SELECT prompt_id, prompt_variant, role, text, gold, control_of FROM v1.prompts ORDER BY prompt_index").fetchall()
    finally:
        con.close()
    assert prompts[0][:3] == ("pos", "orig", "pos") and prompts[0][3].endswith(" simply")
    assert prompts[1] == ("pos", "no_filler", "pos", prompts[0][3].removesuffix(" simply"), "Berlin", None)
    assert prompts[2][:3] == ("ctl", "orig", "ctl") and prompts[2][4:] == ("Paris", "pos")
    assert [p[0] for p in prompts[3:]] == [f"test_{i:02d}" for i in range(1, 15)]


@needs_legacy_run
def test_whole_folder_round_trip_exports_the_latest_run_of_each_model(tmp_path):
    warehouse = tmp_path / "warehouse"
    for force in ([], ["--force"]):  # the second import of each model (forced: same files) is the latest run
        result = run_cli("import-legacy", LEGACY_RUN, "--warehouse", warehouse, *force)
        assert_ok(result)
    assert len(committed_runs(warehouse)) == 2 * len(MODELS)
    assert_ok(run_cli("export", "--out", tmp_path / "out", "--warehouse", warehouse))
    for stem in MODELS:
        for name in legacy_names(stem):
            assert_same_bytes(LEGACY_RUN / name, tmp_path / "out" / name)
    assert_ok(run_cli("export", "--model", "google/gemma-2-9b", "--out", tmp_path / "one", "--warehouse", warehouse))
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(legacy_names("gemma-2-9b"))


def _drop_variant_column(source: Path, target: Path) -> None:
    rows = csv.reader(io.StringIO(source.read_text(encoding="utf-8"), newline=""), escapechar="\\")
    target.write_bytes("".join(fmt.csv_line(row[:1] + row[2:]) for row in rows).encode("utf-8"))


@needs_legacy_run
def test_files_without_the_variant_column_round_trip(tmp_path):
    stem = "Meta-Llama-3-8B"
    folder = copy_model(stem, tmp_path / "in", [f"output-{stem}.json"])
    for name in legacy_names(stem)[1:]:
        _drop_variant_column(LEGACY_RUN / name, folder / name)
    assert (folder / f"output-{stem}-records.csv").read_text(encoding="utf-8").startswith("prompt_id,layer,pos,token,")
    warehouse = tmp_path / "warehouse"
    assert_ok(run_cli("import-legacy", folder, "--warehouse", warehouse))
    assert_ok(run_cli("export", "--without-variant", "--out", tmp_path / "out", "--warehouse", warehouse))
    for name in legacy_names(stem):
        assert_same_bytes(folder / name, tmp_path / "out" / name)
    variants = view_row(warehouse, "SELECT list(prompt_variant ORDER BY prompt_index)[:3] AS v FROM v1.prompts")["v"]
    assert variants == ["orig", "no_filler", "orig"]


@needs_legacy_run
def test_older_files_without_the_newer_blocks_round_trip(tmp_path):
    stem = "gemma-2-9b"
    folder = copy_model(stem, tmp_path / "in", [])
    doc = json.loads((LEGACY_RUN / f"output-{stem}.json").read_text(encoding="utf-8"))
    for block in ("raw_lens_check", "ablation_summary", "control_prompt", "control_summary", "gold_answer"):
        del doc[block]
    del doc["diagnostics"]["last_layer_consistency"]
    (folder / f"output-{stem}.json").write_text(json.dumps(doc, ensure_ascii=False, indent=2), encoding="utf-8")
    for name in legacy_names(stem)[1:]:  # the older files have no control rows and no variant column
        rows = csv.reader(io.StringIO((LEGACY_RUN / name).read_text(encoding="utf-8"), newline=""), escapechar="\\")
        kept = [row[:1] + row[2:] for row in rows if row[0] != "ctl"]
        (folder / name).write_bytes("".join(fmt.csv_line(row) for row in kept).encode("utf-8"))
    warehouse = tmp_path / "warehouse"
    assert_ok(run_cli("import-legacy", folder, "--warehouse", warehouse))
    assert_ok(run_cli("export", "--without-variant", "--out", tmp_path / "out", "--warehouse", warehouse))
    for name in legacy_names(stem):
        assert_same_bytes(folder / name, tmp_path / "out" / name)


# ---------------------------------------------------------------- a fresh extract


def _expected_header(with_metrics: bool) -> list[str]:
    columns = ["prompt_id", "prompt_variant", "layer", "pos", "token", "entropy"]
    columns += [name for i in range(1, 21) for name in (f"top{i}", f"prob{i}")] + ["rest_mass"]
    if with_metrics:
        columns += ["copy_collapse", "entropy_collapse", "is_answer", "p_top1", "p_top5", "p_answer",
                    "kl_to_final_bits", "answer_rank", "cos_to_final", "control_margin"]
    return columns


def test_fresh_extract_exports_complete_files(tiny_llama, warehouse, tmp_path):
    from lensdb.extract.engine import extract

    summary = extract(str(tiny_llama), prompts="seed", warehouse=warehouse, device="cpu")
    out = tmp_path / "out"
    assert_ok(run_cli("export", "--out", out, "--warehouse", warehouse))
    stem = "tiny-llama"
    assert sorted(p.name for p in out.iterdir()) == sorted(legacy_names(stem))

    doc = json.loads((out / f"output-{stem}.json").read_text(encoding="utf-8"))
    assert list(doc) == TOP_LEVEL_KEYS
    assert list(doc["diagnostics"]) == DIAGNOSTICS_KEYS
    assert list(doc["diagnostics"]["last_layer_consistency"]) == LAST_LAYER_KEYS
    for block, keys in BLOCK_KEYS.items():
        assert list(doc[block]) == keys, block
    assert list(doc["control_prompt"]["gold_answer"]) == BLOCK_KEYS["gold_answer"]
    assert len(doc["test_prompts"]) == 14 and all(len(t["topk"]) == 10 for t in doc["test_prompts"])
    assert [t["temperature"] for t in doc["temperature_exploration"]] == [0.1, 2.0]
    assert all(len(t["topk"]) == 15 for t in doc["temperature_exploration"])
    assert len(doc["final_prediction"]["topk"]) == 20
    assert [s["layer"] for s in doc["raw_lens_check"]["samples"]] == [0, 1, 2, 3]
    assert doc["diagnostics"]["model"] == stem and doc["model_stats"]["num_layers"] == 3

    diagnostics = view_row(warehouse, "FROM v1.diagnostics WHERE prompt_id = 'pos' AND prompt_variant = 'orig' AND lens = 'norm'")
    assert {key: doc["diagnostics"][key] for key in DIAGNOSTICS_COLUMNS} == {
        key: diagnostics[column] for key, column in DIAGNOSTICS_COLUMNS.items()
    }

    n_layers, n_tokens = 3, view_row(warehouse, "SELECT n_tokens FROM v1.prompts WHERE prompt_id = 'pos' AND prompt_variant = 'orig'")["n_tokens"]
    records = list(csv.reader(io.StringIO((out / f"output-{stem}-records.csv").read_text(encoding="utf-8"), newline=""), escapechar="\\"))
    pure = list(csv.reader(io.StringIO((out / f"output-{stem}-pure-next-token.csv").read_text(encoding="utf-8"), newline=""), escapechar="\\"))
    assert records[0] == _expected_header(False) and pure[0] == _expected_header(True)
    assert len(records) - 1 == (n_layers + 1) * n_tokens
    assert len(pure) - 1 == 3 * (n_layers + 1)
    assert [(r[0], r[1]) for r in pure[1 :: n_layers + 1]] == [("pos", "orig"), ("pos", "no_filler"), ("ctl", "orig")]
    assert {r[4] for r in pure[1:]} == {"⟨NEXT⟩"}
    last = [r for r in records[1:] if int(r[3]) == n_tokens - 1]
    assert last and all(r[46] != "" for r in last)  # prob20 listed at the last position
    assert view_row(warehouse, "SELECT run_id FROM v1.runs") == {"run_id": summary.run_id}


# ---------------------------------------------------------------- bad input


@needs_legacy_run
def test_folder_without_legacy_files(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "timestamp-20250830-1851").write_text("x")
    result = run_cli("import-legacy", tmp_path / "in", "--warehouse", tmp_path / "warehouse")
    assert_one_line_error(result, str(tmp_path / "in"), "no legacy files")
    assert committed_runs(tmp_path / "warehouse") == []


@needs_legacy_run
def test_wrong_header(tmp_path):
    folder = copy_model("Qwen3-8B", tmp_path / "in")
    path = folder / "output-Qwen3-8B-records.csv"
    path.write_bytes(path.read_bytes().replace(b",entropy,", b",entropie,", 1))
    result = run_cli("import-legacy", folder, "--warehouse", tmp_path / "warehouse")
    assert_one_line_error(result, "output-Qwen3-8B-records.csv", "line 1", "'entropie'")
    assert committed_runs(tmp_path / "warehouse") == []


@needs_legacy_run
def test_unparsable_number_names_file_and_line(tmp_path):
    good = copy_model("Meta-Llama-3-8B", tmp_path / "in")
    folder = copy_model("gemma-2-9b", good)
    path = folder / "output-gemma-2-9b-pure-next-token.csv"
    rows = list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"), newline=""), escapechar="\\"))
    assert not any("\n" in field for row in rows[:5] for field in row)  # row 4 is on line 5
    rows[4][rows[0].index("kl_to_final_bits")] = "0.5.1"
    path.write_bytes("".join(fmt.csv_line(row) for row in rows).encode("utf-8"))
    result = run_cli("import-legacy", folder, "--warehouse", tmp_path / "warehouse")
    assert_one_line_error(result, "output-gemma-2-9b-pure-next-token.csv", "line 5", "kl_to_final_bits", "'0.5.1'")
    assert committed_runs(tmp_path / "warehouse") == []  # the good model is not imported either


@needs_legacy_run
def test_truncated_json(tmp_path):
    folder = copy_model("gemma-2-9b", tmp_path / "in")
    path = folder / "output-gemma-2-9b.json"
    path.write_bytes(path.read_bytes()[:5000])
    result = run_cli("import-legacy", folder, "--warehouse", tmp_path / "warehouse")
    assert_one_line_error(result, "output-gemma-2-9b.json", "line ", "invalid JSON")
    assert committed_runs(tmp_path / "warehouse") == []


@needs_legacy_run
def test_records_file_without_its_json(tmp_path):
    folder = copy_model("Qwen3-8B", tmp_path / "in", legacy_names("Qwen3-8B")[1:])
    result = run_cli("import-legacy", folder, "--warehouse", tmp_path / "warehouse")
    assert_one_line_error(result, "output-Qwen3-8B-records.csv", "without output-Qwen3-8B.json")
    assert committed_runs(tmp_path / "warehouse") == []


@needs_legacy_run
def test_export_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("export", "--out", tmp_path / "out", "--warehouse", empty), "no committed runs")
    assert_one_line_error(run_cli("export", "--out", tmp_path / "out", "--warehouse", tmp_path / "none"), "no warehouse")
    warehouse = tmp_path / "warehouse"
    assert_ok(run_cli("import-legacy", copy_model("Qwen3-8B", tmp_path / "in"), "--warehouse", warehouse))
    assert_one_line_error(run_cli("export", "--run", "no-such-run", "--out", tmp_path / "out", "--warehouse", warehouse), "'no-such-run'")
    assert_one_line_error(run_cli("export", "--model", "gpt-5", "--out", tmp_path / "out", "--warehouse", warehouse), "'gpt-5'")
    assert_one_line_error(run_cli("export", "--lens", "raw", "--out", tmp_path / "out", "--warehouse", warehouse), "no 'raw' lens")


# ---------------------------------------------------------------- export: one snapshot, whole files


@pytest.fixture(scope="module")
def seed_warehouse(tiny_llama, tmp_path_factory) -> Path:
    from lensdb.extract.engine import extract

    warehouse = tmp_path_factory.mktemp("seed") / "warehouse"
    extract(str(tiny_llama), prompts="seed", warehouse=warehouse, device="cpu")
    return warehouse


@pytest.mark.parametrize("removed_before", ["records_csv", "load"])
def test_export_of_a_run_removed_meanwhile_fails_and_writes_nothing(seed_warehouse, tmp_path, monkeypatch, removed_before):
    """Issue 21.4: `export` racing `rm` of its run exited 0 with header-only CSVs (removed
    before the CSVs are read), or said the run had no 'pos' prompt (removed before its prompts are)."""
    from lensdb import runs
    from lensdb.legacy import export as export_module

    warehouse = Path(shutil.copytree(seed_warehouse, tmp_path / "warehouse"))
    if removed_before == "records_csv":
        real_csv = export_module.records_csv

        def removed_while_read(run, with_variant):
            runs.remove_runs(warehouse, [run.run_id])
            return real_csv(run, with_variant)

        monkeypatch.setattr(export_module, "records_csv", removed_while_read)
    else:
        real_load = export_module.ExportRun.load

        def removed_before_load(cls, con, manifest, lens):
            runs.remove_runs(warehouse, [manifest["run_id"]])
            return real_load(con, manifest, lens)

        monkeypatch.setattr(export_module.ExportRun, "load", classmethod(removed_before_load))
    out = tmp_path / "out"
    assert_one_line_error(run_cli("export", "--out", out, "--warehouse", warehouse), "was removed or changed while it was exported", "not written")
    assert list(out.iterdir()) == []


def test_export_beyond_a_file_size_limit_fails_naming_the_file_and_leaves_no_truncated_file(seed_warehouse, tmp_path):
    """Issue 21.4: a full disk or a file-size limit left a truncated legacy file."""
    import os
    import subprocess
    import sys

    warehouse = Path(shutil.copytree(seed_warehouse, tmp_path / "warehouse"))
    whole = tmp_path / "whole"
    assert_ok(run_cli("export", "--out", whole, "--warehouse", warehouse))  # the catalog is installed here too
    sizes = {path.name: path.stat().st_size for path in whole.iterdir()}
    largest = max(sizes, key=sizes.get)
    limit = sizes[largest] - 1
    assert limit > sorted(sizes.values())[-2], sizes
    out = tmp_path / "out"
    out.mkdir()
    (out / largest).write_text("an older file\n")
    script = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])));"
        "from lensdb.cli import main; main(sys.argv[2:], prog_name='lensdb')"
    )
    repo = Path(__file__).resolve().parent.parent
    process = subprocess.run(
        [sys.executable, "-c", script, str(limit), "export", "--out", str(out), "--warehouse", str(warehouse)],
        capture_output=True, text=True, cwd=repo, env={**os.environ, "PYTHONPATH": str(repo), "PYTHONWARNINGS": "ignore"},
    )
    assert process.returncode != 0
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert lines == [f"lensdb: error: cannot write {out / largest}: File too large"], process.stderr
    assert sorted(p.name for p in out.iterdir()) == [largest] and (out / largest).read_text() == "an older file\n"

"""bench/gpu_check.sh, issue #18's device check: its CPU dry-run runs every step's plumbing here,
so the one prepared GPU command cannot rot between borrowings of a GPU machine."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))

import gpu_check  # noqa: E402 - bench/gpu_check.py

# What each step's entry carries in gpu_check.json, dry-run and GPU alike (values may be null in the dry-run).
STEP_FIELDS = {
    "install": ("wheels",),
    "env": ("gpu_name", "driver", "torch", "torch_cuda", "cuda_device_count", "packages", "imports", "problems"),
    "cuda_tests": ("tests", "passed", "failed", "errors", "skipped", "not_passed", "skips", "failures", "marker"),
    "float32_check": ("device", "tolerance", "models", "max_abs_prob_diff", "split"),
    "extract_capitals": ("model", "command", "extract_seconds", "load_seconds", "dtype", "unembed_precision", "records",
                         "gpu", "chunk_budget_bytes", "peak_host_rss_bytes"),
    "bench_gpt2": ("lensdb_over_floor", "lensdb_over_hardware_limit", "hardware_limit", "load", "gpu_busy", "result"),
    "bench_llama8b": ("lensdb_over_floor", "lensdb_over_hardware_limit", "hardware_limit", "load", "gpu_busy", "result"),
    "float32_8b": ("device", "tolerance", "models", "max_abs_prob_diff"),
}
GPU_FIELDS = ("source", "samples", "busy_share", "idle_sample_share", "mem_at_start_bytes", "mem_peak_bytes",
              "mem_beyond_weights_bytes", "chunk_budget_bytes", "series", "extract_window_s")
NOT_MEASURED_ON_CPU = {"capitals_gpu_busy_share", "capitals_gpu_mem_beyond_weights_bytes"}


def test_dry_run_fills_every_step_and_target(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_WORK": str(work)}
    run = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    data = json.loads((out / "gpu_check.json").read_text())
    assert data["mode"] == "dry-run" and data["ok"] and data["targets_judged"] is False
    assert data["failed_steps"] == [] and data["failed_targets"] == []
    assert list(data["steps"]) == list(gpu_check.STEPS)
    for name, step in data["steps"].items():
        assert step["status"] == "pass", (name, step)
        assert step["rc"] == 0 and step["seconds"] >= 0 and step["timeout_s"] > 0 and step["command"]
        assert (out / step["log"]).is_file(), name
        missing = [field for field in STEP_FIELDS[name] if field not in step]
        assert not missing, (name, missing)
        if name != "env":  # the dry-run says what it ran instead of the real sizes
            assert step["substitution"], name

    steps = data["steps"]
    assert steps["cuda_tests"]["tests"] >= 16 and steps["cuda_tests"]["skipped"] == steps["cuda_tests"]["tests"]
    assert steps["cuda_tests"]["not_passed"] == 0
    for name in ("float32_check", "float32_8b"):
        assert steps[name]["max_abs_prob_diff"] <= 1e-5
        assert all(model["complete"] and model["records"] > 0 for model in steps[name]["models"].values())
    assert steps["float32_check"]["split"]["max_abs_prob_diff"] <= 1e-5
    assert set(GPU_FIELDS) <= set(steps["extract_capitals"]["gpu"])
    assert steps["extract_capitals"]["records"] > 0 and steps["extract_capitals"]["n_prompts"] == 8
    assert steps["bench_llama8b"]["load"]["seconds_over_plain"] > 0  # the load comparison ran (once)

    assert set(data["targets"]) == set(gpu_check.TARGETS)
    for name, target in data["targets"].items():
        assert {"value", "limit", "kind", "met", "step", "required", "description"} <= set(target)
        if name in NOT_MEASURED_ON_CPU:
            assert target["value"] is None and target["met"] is None
        else:
            assert target["value"] is not None and target["met"] in (True, False), name

    # what the device machine returns: at most 8 plain files of at most 16 MiB, no folders
    files = list(out.iterdir())
    assert len(files) <= 8 and all(f.is_file() for f in files)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", f.name) and f.stat().st_size <= 16 << 20 for f in files)


def _steps_tsv(work: Path, rows: list[tuple]) -> None:
    work.mkdir(parents=True, exist_ok=True)
    (work / "steps.tsv").write_text("".join("\t".join(map(str, row)) + "\n" for row in rows))


def _summarize(work: Path, mode: str = "gpu") -> tuple[int, dict]:
    out = work / "gpu_check.json"
    rc = gpu_check.main(["summarize", "--work", str(work), "--out", str(out), "--mode", mode, "--wall-seconds", "1", "--budget-seconds", "470"])
    return rc, json.loads(out.read_text())


def test_summary_on_a_gpu_judges_the_targets(tmp_path, capsys):
    """On the GPU every required target must be met: a skipped CUDA test, a slow extract, a
    step out of time or a timed-out step fail the check; the optional step may be left out."""
    work = tmp_path / "work"
    _steps_tsv(work, [
        ("install", 1, 0, 3.0, 120, "setup.log", "pip install", ""),
        ("env", 1, 0, 5.0, 60, "setup.log", "env", ""),
        ("cuda_tests", 1, 0, 50.0, 150, "cuda_tests.log", "pytest -m cuda", ""),
        ("float32_check", 1, 0, 60.0, 180, "float32_check.log", "float32", ""),
        ("extract_capitals", 1, 0, 40.0, 240, "extract_capitals.log", "extract", ""),
        ("bench_gpt2", 1, 124, 200.0, 200, "bench_gpt2.log", "bench gpt2", ""),
        ("bench_llama8b", 0, "", "", "", "bench_llama8b.log", "bench 8b", "out of time: 3 s of the 470 s budget left"),
        ("float32_8b", 0, "", "", "", "float32_check.log", "float32 8b", "out of time: 3 s of the 470 s budget left"),
    ])
    (work / "env.json").write_text(json.dumps({"ok": True, "gpu_name": "NVIDIA H200", "cuda_device_count": 1}))
    (work / "cuda_tests.json").write_text(json.dumps({"ok": False, "tests": 16, "passed": 15, "skipped": 1, "not_passed": 0}))
    (work / "float32_check.json").write_text(json.dumps({"ok": True, "max_abs_prob_diff": 2e-7, "split": {"max_abs_prob_diff": 3e-7}}))
    (work / "extract_capitals.json").write_text(json.dumps(
        {"ok": True, "extract_seconds": 21.0, "chunk_budget_bytes": 512 << 20,
         "gpu": {"busy_share": 0.9, "mem_beyond_weights_bytes": 100 << 20}}))
    rc, data = _summarize(work)
    assert rc == 1 and not data["ok"] and data["targets_judged"]
    steps, targets = data["steps"], data["targets"]
    assert [steps[n]["status"] for n in gpu_check.STEPS] == ["pass", "pass", "fail", "pass", "pass", "not_run", "timeout", "not_run"]
    assert steps["bench_llama8b"]["reason"].startswith("out of time")
    assert data["failed_steps"] == ["cuda_tests", "bench_llama8b", "bench_gpt2"]  # the optional float32_8b is not one
    assert targets["cuda_tests_skipped"] == {**targets["cuda_tests_skipped"], "value": 1, "met": False}
    assert targets["capitals_extract_seconds"]["met"] is False and targets["capitals_gpu_busy_share"]["met"] is True
    assert targets["capitals_gpu_mem_beyond_weights_bytes"]["limit"] == 512 << 20 and targets["capitals_gpu_mem_beyond_weights_bytes"]["met"]
    assert targets["float32_records_max_abs_prob_diff"]["met"] and targets["split_unembedding_max_abs_prob_diff"]["met"]
    assert targets["llama8b_lensdb_over_floor"]["met"] is None  # not measured: a failed target on a GPU
    assert set(data["failed_targets"]) == {
        "cuda_tests_skipped", "capitals_extract_seconds", "gpt2_lensdb_over_floor", "llama8b_lensdb_over_floor",
        "llama8b_lensdb_over_hardware_limit", "load_seconds_over_plain", "load_peak_host_rss_over_plain",
    }
    assert "NOT met" in capsys.readouterr().out


def test_summary_of_selected_steps_fails_no_target_of_the_others(tmp_path):
    """`--steps extract_capitals` on the GPU: the targets of the steps left out are not measured, not failed."""
    work = tmp_path / "work"
    rows = [("install", 1, 0, 3.0, 120, "setup.log", "pip", ""), ("env", 1, 0, 5.0, 60, "setup.log", "env", "")]
    rows += [(name, 0, "", "", "", "", "cmd", "not selected") for name in gpu_check.STEPS if name not in ("install", "env", "extract_capitals")]
    rows.append(("extract_capitals", 1, 0, 40.0, 240, "extract_capitals.log", "extract", ""))
    _steps_tsv(work, rows)
    (work / "env.json").write_text(json.dumps({"ok": True}))
    (work / "extract_capitals.json").write_text(json.dumps(
        {"ok": True, "extract_seconds": 9.5, "chunk_budget_bytes": 512 << 20, "gpu": {"busy_share": 0.93, "mem_beyond_weights_bytes": 1 << 20}}))
    rc, data = _summarize(work)
    assert rc == 0 and data["ok"], data["failed_targets"]
    assert data["targets"]["capitals_extract_seconds"]["met"] is True
    assert data["targets"]["gpt2_lensdb_over_floor"]["met"] is None


def test_cuda_marker_selects_the_cuda_parametrised_tests():
    """`pytest -m cuda` (what gpu_check.sh runs) collects the CUDA variants and nothing else."""
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "cuda", "--collect-only", "-q", "-p", "no:cacheprovider",
         "tests/test_extract_correctness.py", "tests/test_unembedding.py", "tests/test_loading.py"],
        cwd=REPO, capture_output=True, text=True, timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    ids = [line for line in run.stdout.splitlines() if "::" in line]
    assert len(ids) == 16 and all("cuda" in line for line in ids), ids
    assert not any("two_gpus" in line for line in ids)  # multi_gpu: needs two


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))

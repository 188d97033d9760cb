"""Loading: weights placed by device maps (one device, several GPUs, CPU + disk offload), the
realised placement and the load's time and host memory in the manifest, and the options' errors."""

from __future__ import annotations

import json
import resource
import threading
import time

import psutil
import pytest
import torch

import lensdb
from lensdb.errors import ModelError
from lensdb.extract import device as device_policy
from lensdb.extract.device import Placement, choose_placement, parse_max_memory
from lensdb.extract.engine import extract
from tests.cli_helpers import assert_one_line_error, run_cli

GiB = 1 << 30
PROB_TOL = 1e-5
RECORD_COLUMNS = "entropy_bits, topk_ids, topk_probs, p_answer, answer_rank, p_paired_answer, kl_to_final_bits, cos_to_final, kl_vs_norm_bits"


def weight_bytes(model_dir) -> int:
    return sum(p.stat().st_size for p in model_dir.glob("*.safetensors"))


def compare_runs(warehouse, run_a: str, run_b: str) -> dict:
    """Largest differences between two runs' records, joined on their keys (lensdb.query)."""
    row = lensdb.query(
        f"""
        WITH a AS (SELECT * FROM v1.records WHERE run_id = '{run_a}'),
             b AS (SELECT * FROM v1.records WHERE run_id = '{run_b}')
        SELECT count(*) AS joined,
               (SELECT count(*) FROM a) AS rows_a, (SELECT count(*) FROM b) AS rows_b,
               bool_and(a.topk_ids = b.topk_ids) AS same_ids,
               bool_and(a.answer_rank IS NOT DISTINCT FROM b.answer_rank) AS same_ranks,
               max(list_max(list_transform(list_zip(a.topk_probs, b.topk_probs), lambda x: abs(x[1] - x[2])))) AS topk_probs,
               max(abs(a.entropy_bits - b.entropy_bits)) AS entropy_bits,
               max(abs(a.p_answer - b.p_answer)) AS p_answer,
               max(abs(a.kl_to_final_bits - b.kl_to_final_bits)) AS kl_to_final_bits,
               max(abs(a.cos_to_final - b.cos_to_final)) AS cos_to_final,
               max(abs(a.kl_vs_norm_bits - b.kl_vs_norm_bits)) AS kl_vs_norm_bits
        FROM a JOIN b USING (prompt_id, prompt_variant, lens, layer, pos)
        """,
        warehouse=warehouse,
    ).to_pylist()[0]
    return row


def assert_same_records(warehouse, run_a: str, run_b: str) -> None:
    diff = compare_runs(warehouse, run_a, run_b)
    assert diff["joined"] == diff["rows_a"] == diff["rows_b"] > 0
    assert diff["same_ids"] and diff["same_ranks"]
    for column in ("topk_probs", "entropy_bits", "p_answer", "kl_to_final_bits", "cos_to_final", "kl_vs_norm_bits"):
        assert (diff[column] or 0.0) <= PROB_TOL, (column, diff[column])


def manifest(warehouse, run_id: str) -> dict:
    return lensdb.query(f"SELECT * FROM v1.runs WHERE run_id = '{run_id}'", warehouse=warehouse).to_pylist()[0]


def hf_device_map(model_dir, max_memory: dict) -> dict:
    """The placement plain transformers chooses for the same budgets: the independent reference."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map="auto", max_memory=max_memory)
    return {name: f"cuda:{d}" if isinstance(d, int) else str(d) for name, d in model.hf_device_map.items()}


# --------------------------------------------------------------------------- offload


@pytest.mark.parametrize("model", ["tiny_llama", "tiny_gpt2"])
def test_partly_disk_offloaded_run_equals_a_single_device_run(model, request, tmp_path, tiny_prompts):
    model_dir = request.getfixturevalue(model)
    warehouse = tmp_path / "warehouse"
    budget = int(weight_bytes(model_dir) * 0.7)  # about two thirds stay in host memory, the rest on disk
    extract(str(model_dir), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=4, run_id="whole")
    result = run_cli(
        "extract", model_dir, "--prompts", tiny_prompts, "--warehouse", warehouse, "--batch-size", 4,
        "--max-memory", f"cpu={budget}B", "--offload-folder", tmp_path / "offload", "--run-id", "offloaded",
    )
    assert result.exit_code == 0, result.output
    assert_same_records(warehouse, "offloaded", "whole")

    realised = json.loads(manifest(warehouse, "offloaded")["device_map"])
    assert set(realised.values()) == {"cpu", "disk"}, realised
    assert realised == hf_device_map(model_dir, {"cpu": budget})
    assert json.loads(manifest(warehouse, "whole")["device_map"]) == {"": "cpu"}
    assert manifest(warehouse, "offloaded")["device"] == "cpu"  # lenses run where the unembedding executes
    # The auto-pick line and the summary say where the model went.
    assert "lensdb: auto map over cpu" in result.stderr
    assert "device map cpu" in result.stdout and "disk" in result.stdout  # the summary is on stdout


def test_a_model_wholly_on_disk_gives_the_same_records(tiny_llama, tmp_path, tiny_prompts):
    warehouse = tmp_path / "warehouse"
    extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", run_id="whole")
    summary = extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", max_memory="cpu=1KiB", run_id="disk")
    assert summary.device_map == {"": "disk"}
    assert summary.device == "cpu"
    assert_same_records(warehouse, "disk", "whole")


def test_norms_and_unembedding_of_an_offloaded_model_are_materialised_on_the_lens_device(tiny_llama):
    from lensdb.extract.model import load_config, load_model, resolve_source

    source = resolve_source(str(tiny_llama))
    placement = Placement("cpu", "auto", {"cpu": 1024})
    loaded = load_model(source, load_config(source), placement, torch.float32)
    reference = load_model(source, load_config(source), torch.device("cpu"), torch.float32)
    assert loaded.unembed_weight.device == loaded.device == torch.device("cpu")
    torch.testing.assert_close(loaded.unembed_weight, reference.unembed_weight, rtol=0, atol=0)
    assert loaded.norms.keys() == reference.norms.keys()
    for ref, norm in loaded.norms.items():
        assert norm.weight.device.type == "cpu" and norm.weight.dtype == torch.float32
        torch.testing.assert_close(norm.weight, reference.norms[ref].weight, rtol=0, atol=0)


# --------------------------------------------------------------------------- several GPUs


@pytest.mark.multi_gpu
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs at least two CUDA devices")
def test_a_model_split_over_two_gpus_equals_one_gpu(tiny_llama, tmp_path, tiny_prompts):
    warehouse = tmp_path / "warehouse"
    options = dict(prompts=str(tiny_prompts), warehouse=warehouse, dtype="float32", batch_size=4)
    extract(str(tiny_llama), device="cuda", run_id="one", **options)
    half = int(weight_bytes(tiny_llama) * 0.6)
    summary = extract(str(tiny_llama), device_map="auto", max_memory=f"0={half}B,1={4 * half}B", run_id="two", **options)
    assert {"cuda:0", "cuda:1"} <= set(summary.device_map.values())
    assert summary.device == summary.device_map.get("lm_head", summary.device)
    assert_same_records(warehouse, "two", "one")


# --------------------------------------------------------------------------- load time and host memory


def test_manifest_records_load_time_and_host_memory(tiny_gpt2, tmp_path, tiny_prompts):
    warehouse = tmp_path / "warehouse"
    process = psutil.Process()
    samples: list[tuple[float, int]] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            samples.append((time.perf_counter(), process.memory_info().rss))
            stop.wait(0.005)

    sampler = threading.Thread(target=sample)
    started = time.perf_counter()
    sampler.start()
    try:
        summary = extract(str(tiny_gpt2), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", run_id="r")
    finally:
        stop.set()
        sampler.join()
    wall = time.perf_counter() - started
    row = manifest(warehouse, "r")
    assert row["load_seconds"] == pytest.approx(summary.load_seconds)
    assert 0 < row["load_seconds"] < wall
    assert summary.timings["loaded_at"] - started == pytest.approx(row["load_seconds"], abs=2.0)
    assert row["load_peak_host_rss_bytes"] == summary.load_peak_host_rss_bytes
    assert row["peak_host_rss_bytes"] == summary.peak_host_rss_bytes
    # Peaks are bounded by what a sampler saw between loading and reading the peak, and by the process's lifetime peak.
    after_load = max(rss for t, rss in samples if summary.timings["loaded_at"] <= t <= summary.timings["peak_read_at"])
    lifetime_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    assert 0 < row["load_peak_host_rss_bytes"] <= row["peak_host_rss_bytes"] <= lifetime_peak
    assert after_load <= row["peak_host_rss_bytes"] + (1 << 20)  # within a MiB: pages counted in kB


def test_loading_leaves_the_bridge_class_as_it_was(tiny_gpt2):
    from transformer_lens.model_bridge import TransformerBridge

    from lensdb.extract.model import load_config, load_model, resolve_source

    before = TransformerBridge.__dict__["W_E_pos"]
    source = resolve_source(str(tiny_gpt2))
    loaded = load_model(source, load_config(source), torch.device("cpu"), torch.float32)
    assert TransformerBridge.__dict__["W_E_pos"] is before
    assert loaded.bridge.W_E_pos.shape[0] == loaded.d_vocab + loaded.n_ctx


def test_loaded_weights_are_the_checkpoints_own(tiny_llama):
    """No copy and no processing: the unembedding the lenses use is the loaded model's tensor."""
    from safetensors.torch import load_file

    from lensdb.extract.model import load_config, load_model, resolve_source

    source = resolve_source(str(tiny_llama))
    loaded = load_model(source, load_config(source), torch.device("cpu"), torch.float32)
    head = loaded.bridge.unembed._original_component.weight
    assert loaded.unembed_weight.data_ptr() == head.data_ptr()
    saved = load_file(tiny_llama / "model.safetensors")
    torch.testing.assert_close(loaded.unembed_weight, saved["lm_head.weight"], rtol=0, atol=0)
    fired = []
    names = loaded.residual_hooks()

    def keep(name):
        return lambda activation, hook: fired.append(name)

    loaded.bridge.run_with_hooks(torch.tensor([[1, 5, 6]]), fwd_hooks=[(n, keep(n)) for n in names])
    assert fired == names  # blocks.0.hook_resid_pre, then every block's hook_resid_post, in order


# --------------------------------------------------------------------------- placement policy


def test_max_memory_parses_devices_and_units():
    assert parse_max_memory("0=75GiB, 1=1.5GB,cpu=200MiB,disk=1TB") == {0: 75 * GiB, 1: 1_500_000_000, "cpu": 200 << 20, "disk": 10**12}
    assert parse_max_memory("cpu=1024") == {"cpu": 1024}


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("cpu", "bad entry 'cpu'"),
        ("cpu=lots", "bad entry 'cpu=lots'"),
        ("cpu=-1GiB", "bad entry"),
        ("gpu0=1GiB", "unknown device 'gpu0'"),
        ("cpu=1GiB,cpu=2GiB", "given twice"),
        (",", "no DEVICE=SIZE"),
    ],
)
def test_bad_max_memory_is_one_line(text, fragment, tiny_llama, tmp_path):
    result = run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--max-memory", text)
    assert_one_line_error(result, "--max-memory", fragment)
    assert not (tmp_path / "w" / "runs").exists()


def test_gpu_budgets_mixed_with_cpu_are_refused(tiny_llama, tmp_path):
    result = run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--max-memory", "0=10GiB,cpu=10GiB")
    assert_one_line_error(result, "mixes GPUs with cpu/disk")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without CUDA")
def test_gpu_options_without_cuda_are_one_line(tiny_llama, tmp_path):
    assert_one_line_error(run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--max-memory", "0=10GiB"), "no CUDA device")
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"": 0}))
    assert_one_line_error(run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--device-map", mapping), "no CUDA device")


def test_bad_device_map_files_are_one_line(tiny_llama, tmp_path):
    def run(value):
        return run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--device-map", value)

    assert_one_line_error(run("sideways"), "neither auto, balanced nor a JSON file")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    assert_one_line_error(run(broken), "cannot read")
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    assert_one_line_error(run(listed), "JSON object")
    odd = tmp_path / "odd.json"
    odd.write_text(json.dumps({"model": "gpu7"}))
    assert_one_line_error(run(odd), "'gpu7'")
    cpu_map = tmp_path / "cpu.json"
    cpu_map.write_text(json.dumps({"": "cpu"}))
    assert_one_line_error(run_cli("extract", tiny_llama, "--warehouse", tmp_path / "w", "--device", "mps", "--device-map", cpu_map), "contradicts")


def test_a_device_map_file_is_used_as_given(tiny_gpt2, tmp_path, tiny_prompts):
    mapping = {"transformer.wte": "cpu", "lm_head": "cpu", "transformer.wpe": "cpu", "transformer.drop": "cpu", "transformer.h": "disk", "transformer.ln_f": "disk"}
    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    warehouse = tmp_path / "warehouse"
    extract(str(tiny_gpt2), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", run_id="whole")
    summary = extract(str(tiny_gpt2), prompts=str(tiny_prompts), warehouse=warehouse, device_map=str(path), run_id="mapped")
    assert summary.device_map == mapping
    assert_same_records(warehouse, "mapped", "whole")


class FakeGpus:
    """torch.cuda and host memory as seen by the placement policy."""

    def __init__(self, monkeypatch, free: list[int], host: int):
        monkeypatch.setattr(torch.cuda, "is_available", lambda: bool(free))
        monkeypatch.setattr(torch.cuda, "device_count", lambda: len(free))
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i=0: (free[i], 80 * GiB))
        monkeypatch.setattr(device_policy, "_mps_available", lambda: False)
        monkeypatch.setattr(device_policy, "_host_available_bytes", lambda: host)


def test_auto_picks_the_gpu_with_most_free_memory(monkeypatch):
    FakeGpus(monkeypatch, [10 * GiB, 70 * GiB], host=100 * GiB)
    placement = choose_placement("auto", 16 * GiB)
    assert placement.device_map == {"": "cuda:1"} and placement.device_type == "cuda"
    assert placement.reason.startswith("device auto: cuda:1")


def test_auto_spreads_a_model_too_large_for_one_gpu_over_all(monkeypatch):
    FakeGpus(monkeypatch, [70 * GiB, 70 * GiB, 70 * GiB], host=100 * GiB)
    placement = choose_placement("auto", 130 * GiB)
    assert placement.device_map == "auto"
    assert placement.max_memory == {i: 69 * GiB for i in range(3)}  # GPUs only: the bridge runs no GPU + offload mix
    assert "3 GPUs" in placement.reason
    # The last GPU gets the unembedding: it keeps the lenses' float32 copy and logits free.
    assert choose_placement("auto", 130 * GiB, lens_bytes=5 * GiB).max_memory == {0: 69 * GiB, 1: 69 * GiB, 2: 64 * GiB}


def test_auto_falls_back_to_cpu_then_to_disk_offload(monkeypatch):
    FakeGpus(monkeypatch, [20 * GiB, 20 * GiB], host=400 * GiB)
    placement = choose_placement("auto", 140 * GiB)
    assert placement.device_map == {"": "cpu"}
    assert "does not fit the GPUs" in placement.reason
    FakeGpus(monkeypatch, [], host=64 * GiB)
    placement = choose_placement("auto", 140 * GiB, offload_folder="/tmp/x")
    assert placement.device_map == "auto" and placement.max_memory == {"cpu": 60 * GiB}
    assert placement.offload_folder == "/tmp/x"
    assert "disk offload" in placement.reason and "no CUDA device" in placement.reason


def test_explicit_device_maps_keep_to_the_requested_devices(monkeypatch):
    FakeGpus(monkeypatch, [50 * GiB, 50 * GiB], host=100 * GiB)
    gpus = choose_placement("cuda", 1 * GiB, device_map="balanced")
    assert gpus.device_map == "balanced" and gpus.max_memory == {0: 49 * GiB, 1: 49 * GiB}
    cpu = choose_placement("cpu", 1 * GiB, device_map="auto")
    assert cpu.device_type == "cpu" and cpu.max_memory == {"cpu": 100 * GiB}
    budgets = choose_placement("auto", 1 * GiB, max_memory="0=10GiB,1=20GiB")
    assert budgets.device_type == "cuda" and budgets.max_memory == {0: 10 * GiB, 1: 20 * GiB}
    assert choose_placement("auto", 1 * GiB, max_memory="cpu=1GiB").device_type == "cpu"
    with pytest.raises(ModelError, match="names GPU 2"):
        choose_placement("auto", 1 * GiB, max_memory="2=1GiB")
    with pytest.raises(ModelError, match="names a GPU"):
        choose_placement("cpu", 1 * GiB, max_memory="0=1GiB")


def test_the_auto_pick_line_leaves_bad_input_one_line(tiny_llama, tmp_path):
    from tests.conftest import write_jsonl

    prompts = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "text": " ".join(["Tom loved his dog."] * 40)}])
    result = run_cli("extract", tiny_llama, "--prompts", prompts, "--warehouse", tmp_path / "w")  # --device auto
    assert_one_line_error(result, "more than the model's context")

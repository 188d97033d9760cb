"""Bad input gives one clear line on stderr, a non-zero exit and no visible run."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lensdb.extract import engine, pipeline
from tests.conftest import write_jsonl
from tests.cli_helpers import assert_one_line_error, run_cli


def committed_runs(warehouse: Path) -> list[Path]:
    return sorted((warehouse / "runs").glob("model=*/run=*"))


def staged(warehouse: Path) -> list[Path]:
    folder = warehouse / "_staging"
    return sorted(folder.iterdir()) if folder.is_dir() else []


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so hub ids are never found locally."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_directory_without_config(tmp_path, warehouse):
    (tmp_path / "empty-model").mkdir()
    result = run_cli("extract", str(tmp_path / "empty-model"), "--warehouse", str(warehouse), "--quiet")
    assert_one_line_error(result, "no config.json")
    assert committed_runs(warehouse) == [] and staged(warehouse) == []


def test_missing_local_directory(warehouse):
    result = run_cli("extract", "./no/such/model", "--warehouse", str(warehouse))
    assert_one_line_error(result, "no such model directory")


def test_unreachable_hub_suggests_a_local_directory(warehouse, offline_cache, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr("socket.create_connection", refuse)
    result = run_cli("extract", "some-org/some-model", "--warehouse", str(warehouse))
    assert_one_line_error(result, "cannot reach the Hugging Face hub", "local model directory")
    assert committed_runs(warehouse) == [] and staged(warehouse) == []


def test_unknown_hub_id(warehouse, offline_cache, monkeypatch):
    from transformers import AutoConfig

    real = AutoConfig.from_pretrained

    def from_pretrained(name, *args, **kwargs):
        if kwargs.get("local_files_only"):
            return real(name, *args, **kwargs)
        raise OSError(f"{name} is not a local folder and is not a valid model identifier listed on 'https://huggingface.co/models'")

    monkeypatch.setattr("lensdb.extract.source._check_hub_reachable", lambda model: None)
    monkeypatch.setattr(AutoConfig, "from_pretrained", from_pretrained)
    result = run_cli("extract", "no-such-org/no-such-model", "--warehouse", str(warehouse))
    assert_one_line_error(result, "unknown model on the Hugging Face hub: no-such-org/no-such-model")


def test_not_a_causal_lm(tmp_path, warehouse):
    from transformers import BertConfig

    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(tmp_path / "bert")
    result = run_cli("extract", str(tmp_path / "bert"), "--warehouse", str(warehouse))
    assert_one_line_error(result, "not a causal language model")
    assert committed_runs(warehouse) == [] and staged(warehouse) == []


def test_prompt_longer_than_the_context(tiny_llama, tmp_path, warehouse):
    prompts = write_jsonl(tmp_path / "long.jsonl", [{"id": "long", "text": " ".join(["the capital"] * 40)}])
    result = run_cli("extract", str(tiny_llama), "--prompts", str(prompts), "--warehouse", str(warehouse), "--device", "cpu")
    assert_one_line_error(result, "'long'", "more than the model's context of 64")
    assert committed_runs(warehouse) == [] and staged(warehouse) == []


def test_empty_prompt(tiny_llama, tmp_path, warehouse):
    prompts = write_jsonl(tmp_path / "empty.jsonl", [{"id": "a", "text": "The sun"}, {"id": "b", "text": "   "}])
    result = run_cli("extract", str(tiny_llama), "--prompts", str(prompts), "--warehouse", str(warehouse))
    assert_one_line_error(result, "empty.jsonl:2", "empty prompt")


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("bad.jsonl", '{"id": "a", "text": "fine"}\n{"id": "b", "text": \n', "bad.jsonl:2: not valid JSON"),
        ("keys.jsonl", '{"id": "a", "txt": "typo"}\n', "keys.jsonl:1: unknown key(s) txt"),
        ("dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n', "dup.jsonl:2: duplicate prompt id 'a'"),
        ("ctl.jsonl", '{"id": "a", "text": "x", "control_of": "zz"}\n', "ctl.jsonl:1: control_of names unknown prompt id 'zz'"),
        ("bad.yaml", "lensdb_prompt_set: 1\nname: x\nprompts:\n  - {id: a, text: [unclosed\n", "bad.yaml:5"),
        ("noname.yaml", "lensdb_prompt_set: 1\nprompts:\n  - {id: a, text: hi}\n", "missing 'name'"),
        ("empty.yaml", "lensdb_prompt_set: 1\nname: x\nprompts:\n  - {id: a, text: hi}\n  - {id: b, text: ''}\n", "empty.yaml:5: empty prompt"),
    ],
)
def test_malformed_prompt_files(tmp_path, warehouse, name, content, fragment):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    result = run_cli("extract", "some-org/some-model", "--prompts", str(path), "--warehouse", str(warehouse))
    assert_one_line_error(result, fragment)
    assert not warehouse.exists()


def test_unknown_prompt_set(warehouse):
    result = run_cli("extract", "x/y", "--prompts", "nonexistent", "--warehouse", str(warehouse))
    assert_one_line_error(result, "prompt set not found: nonexistent", "seed")


def test_non_writable_warehouse(tiny_llama, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    result = run_cli("extract", str(tiny_llama), "--warehouse", str(blocker / "warehouse"))
    assert_one_line_error(result, "warehouse is not writable")


def test_bad_lens_and_duplicate_run_id(tiny_llama, tiny_prompts, warehouse):
    result = run_cli("extract", str(tiny_llama), "--lens", "norm,logit", "--warehouse", str(warehouse))
    assert_one_line_error(result, "unknown lens logit")
    ok = run_cli("extract", str(tiny_llama), "--prompts", str(tiny_prompts), "--warehouse", str(warehouse), "--run-id", "r1", "--quiet", "--device", "cpu")
    assert ok.exit_code == 0, ok.stderr
    again = run_cli("extract", str(tiny_llama), "--prompts", str(tiny_prompts), "--warehouse", str(warehouse), "--run-id", "r1", "--device", "cpu")
    assert_one_line_error(again, "run id r1 already exists")
    assert len(committed_runs(warehouse)) == 1 and staged(warehouse) == []


def test_unaligned_gold_is_not_an_error(tiny_llama, tiny_prompts, warehouse):
    import pyarrow.dataset as ds

    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", lenses=("norm",))
    prompts = ds.dataset(summary.path / "prompts").to_table().to_pylist()
    nogold = next(p for p in prompts if p["prompt_id"] == "nogold")
    assert (nogold["gold_alignment"], nogold["gold_variant"], nogold["gold_first_id"]) == ("unresolved", "unknown", None)
    berlin = next(p for p in prompts if p["prompt_id"] == "pos" and p["prompt_variant"] == "orig")
    assert (berlin["gold_alignment"], berlin["gold_variant"]) == ("ok", "with_space")
    records = ds.dataset(summary.path / "records").to_table().to_pylist()
    assert all(r["p_answer"] is None and r["answer_rank"] is None for r in records if r["prompt_id"] == "nogold")


def test_failure_halfway_leaves_no_run_and_the_next_extract_works(tiny_llama, tiny_prompts, warehouse, monkeypatch):
    real = pipeline.finals_and_consistency
    calls = []

    def fail_on_second_batch(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("disk on fire")
        return real(*args, **kwargs)

    monkeypatch.setattr(pipeline, "finals_and_consistency", fail_on_second_batch)
    with pytest.raises(RuntimeError, match="disk on fire"):
        engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=2)
    assert len(calls) == 2
    assert committed_runs(warehouse) == [] and staged(warehouse) == []
    monkeypatch.setattr(pipeline, "finals_and_consistency", real)
    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", batch_size=2)
    assert committed_runs(warehouse) == [summary.path]


def test_killed_process_leaves_no_visible_run(tiny_llama, tiny_prompts, warehouse):
    """A process that dies outright (no cleanup at all) leaves only an invisible staging folder."""
    script = textwrap.dedent(
        f"""
        import os
        from lensdb.extract import engine, pipeline
        real = pipeline.finals_and_consistency
        calls = []
        def die(*args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                os._exit(3)
            return real(*args, **kwargs)
        pipeline.finals_and_consistency = die
        engine.extract({str(tiny_llama)!r}, prompts={str(tiny_prompts)!r}, warehouse={str(warehouse)!r}, device="cpu", batch_size=2)
        """
    )
    process = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=Path(__file__).parent.parent)
    assert process.returncode == 3, process.stderr
    assert committed_runs(warehouse) == []
    leftovers = staged(warehouse)
    assert len(leftovers) == 1 and any(leftovers[0].rglob("*.parquet")), "the killed run had started writing"
    summary = engine.extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu")
    assert committed_runs(warehouse) == [summary.path]
    assert staged(warehouse) == [], "the dead process's staging folder is cleaned up"


def _model_with_nan(source: Path, target: Path, tensor: str) -> Path:
    """A copy of `source` whose weight `tensor` holds NaN."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(source, target)
    weights = load_file(target / "model.safetensors")
    weights[tensor][0, 0] = float("nan")
    save_file(weights, target / "model.safetensors", metadata={"format": "pt"})
    return target


def test_non_finite_logits_stop_the_run_and_commit_nothing(tiny_llama, tiny_prompts, tmp_path, warehouse):
    """Issue 21.1: NaN weights gave NaN distributions (ranking the answer first) and exit 0."""
    model = _model_with_nan(tiny_llama, tmp_path / "nan-llama", "model.layers.1.mlp.down_proj.weight")
    result = run_cli("extract", model, "--prompts", tiny_prompts, "--warehouse", warehouse, "--device", "cpu", "--quiet")
    # Block 1's output is layer 2: layers 0 and 1 are finite.
    assert_one_line_error(result, "model nan-llama gives non-finite logits", "at layer 2, lens norm", "nothing was committed")
    assert committed_runs(warehouse) == [] and staged(warehouse) == []

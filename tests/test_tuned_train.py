"""`lensdb train-lens` on tiny random models: the files it writes, the per-layer KL it
reports (against plain Hugging Face and the translator formula), storage in the warehouse,
resuming from a checkpoint, and one-line errors."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from lensdb.tuned import train as train_module
from lensdb.tuned.format import check_fits, load_tuned_lens
from lensdb.tuned.store import resolve_tuned_spec
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import CORPUS, write_jsonl
from tests.reference import load_hf, residual_stream

SEQ_LEN = 16
STEPS = 8


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    # Sentences in a seeded random order: 60 documents, about 100 windows of 16 tokens.
    rng = np.random.default_rng(0)
    docs = [{"text": " ".join(rng.permutation(CORPUS)[:2])} for _ in range(60)]
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "corpus.jsonl", docs)


def hf_unembed_hash(model_dir: Path) -> str:
    """tuned-lens's Unembed.unembedding_hash() on the Hugging Face head."""
    import hashlib

    weight = load_hf(str(model_dir)).lm_head.weight.detach().float().numpy()
    return hashlib.sha256(np.array_str(weight, precision=1).encode()).hexdigest()


def reference_windows(model_dir: Path, corpus: Path, seq_len: int) -> tuple[list[list[int]], list[list[int]]]:
    """The documented windowing: documents joined by EOS, cut into BOS + (seq_len - 1)
    tokens, the incomplete end dropped, the last 10% of windows held out."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    stream = []
    for line in corpus.read_text().splitlines():
        stream += tokenizer.encode(json.loads(line)["text"], add_special_tokens=False) + [tokenizer.eos_token_id]
    body = seq_len - 1
    windows = [[tokenizer.bos_token_id] + stream[i : i + body] for i in range(0, len(stream) - body + 1, body)]
    n_eval = max(1, round(len(windows) * 0.1))
    return windows[:-n_eval], windows[-n_eval:]


def reference_kl_bits(model_dir: Path, windows: list[list[int]], state: dict | None) -> np.ndarray:
    """Mean KL(final || lens) per layer in bits: Hugging Face residuals, the final norm
    module, lm_head, and the translator h + W h + b from params.pt's raw state dict."""
    model = load_hf(str(model_dir))
    final_norm = model.transformer.ln_f if hasattr(model, "transformer") else model.model.norm
    total, count = None, 0
    for ids in windows:
        residuals, logits = residual_stream(str(model_dir), ids)
        n_layers = len(residuals) - 1
        total = np.zeros(n_layers + 1) if total is None else total
        with torch.no_grad():
            target = torch.log_softmax(logits.double(), dim=-1)
            for layer, h in enumerate(residuals):
                if state is not None and layer < n_layers:
                    h = h + h @ state[f"{layer}.weight"].T + state[f"{layer}.bias"]
                lens = torch.log_softmax(model.lm_head(final_norm(h)).double(), dim=-1)
                total[layer] += (target.exp() * (target - lens)).sum().item()
        count += len(ids)
    return total / count / math.log(2)


@pytest.mark.parametrize("model_fixture", ["tiny_llama", "tiny_gpt2"])
def test_trained_lens_files_and_held_out_kl(model_fixture, corpus, tmp_path, request):
    model_dir = request.getfixturevalue(model_fixture)
    out = tmp_path / "lens"
    result = run_cli("train-lens", model_dir, "--text", corpus, "--out", out, "--steps", STEPS, "--seq-len", SEQ_LEN, "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "lens.parquet", "params.pt", "training.json"]
    lens = load_tuned_lens(out)
    config = json.loads((out / "config.json").read_text())
    n_layers = load_hf(str(model_dir)).config.num_hidden_layers
    assert config["unembed_hash"] == hf_unembed_hash(model_dir)
    assert config["base_model_name_or_path"] == str(Path(model_dir).resolve())
    check_fits(lens, n_layers, lens.d_model, hf_unembed_hash(model_dir))
    assert lens.weight.abs().max() > 0  # training moved the translators off the identity

    settings = json.loads((out / "training.json").read_text())
    assert settings["steps"] == STEPS and settings["seq_len"] == SEQ_LEN and settings["lens_sha256"] == lens.sha256
    assert math.isclose(settings["sgd_lr"], 0.1)
    train_windows, eval_windows = reference_windows(model_dir, corpus, SEQ_LEN)
    assert settings["train_tokens"] == len(train_windows) * SEQ_LEN
    assert settings["eval_tokens"] == len(eval_windows) * SEQ_LEN
    # Default tokens per step: the training windows spread over the steps.
    assert settings["tokens_per_step"] == (len(train_windows) // STEPS) * SEQ_LEN
    state = torch.load(out / "params.pt")
    tuned = reference_kl_bits(model_dir, eval_windows, state)
    logit = reference_kl_bits(model_dir, eval_windows, None)
    reported = settings["layers"]
    assert [row["layer"] for row in reported] == list(range(n_layers + 1))
    np.testing.assert_allclose([row["kl_bits"] for row in reported], tuned, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose([row["final_ln_kl_bits"] for row in reported], logit, rtol=1e-4, atol=1e-5)
    assert reported[-1]["kl_bits"] < 1e-5 and reported[-1]["final_ln_kl_bits"] < 1e-5


def test_stored_lens_is_queryable(tiny_llama, corpus, warehouse):
    import lensdb

    args = ("train-lens", tiny_llama, "--text", corpus, "--name", "tiny", "--warehouse", warehouse, "--steps", 4, "--seq-len", SEQ_LEN, "--quiet")
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    stored = warehouse / "lenses" / "tiny"
    assert sorted(p.name for p in stored.iterdir()) == ["config.json", "lens.parquet", "params.pt", "training.json"]
    assert not (warehouse / "_lens_training").exists()
    settings = json.loads((stored / "training.json").read_text())
    rows = lensdb.query("SELECT * FROM v1.lenses ORDER BY layer", warehouse=warehouse).to_pylist()
    assert [r["layer"] for r in rows] == [0, 1, 2, 3]
    assert {r["lens"] for r in rows} == {"tiny"} and {r["steps"] for r in rows} == {4}
    assert {r["lens_sha256"] for r in rows} == {load_tuned_lens(stored).sha256}
    assert [r["kl_bits"] for r in rows] == [layer["kl_bits"] for layer in settings["layers"]]
    assert [r["final_ln_kl_bits"] for r in rows] == [layer["final_ln_kl_bits"] for layer in settings["layers"]]
    assert resolve_tuned_spec("tiny", warehouse).name == "tiny"
    again = run_cli(*args)
    assert_one_line_error(again, "already stores a lens named 'tiny'")


@pytest.fixture(scope="module")
def loaded_tiny(tiny_llama):
    return train_module.load_for_training(str(tiny_llama), train_module.TrainSettings(device="cpu", dtype="float32"))


def test_resume_continues_the_same_training(loaded_tiny, corpus, tmp_path, monkeypatch):
    settings = train_module.TrainSettings(steps=6, seq_len=SEQ_LEN, checkpoint_every=2)
    windows = train_module.token_windows(loaded_tiny, train_module.read_corpus(corpus), SEQ_LEN)
    plan = train_module.make_plan(loaded_tiny, settings, train_windows=windows.shape[0], eval_windows=0)
    whole, whole_kl, start = train_module.fit_translators(loaded_tiny, windows, plan, settings)
    assert start == 0

    checkpoint, fingerprint = tmp_path / "checkpoint.pt", {"corpus": "a"}
    real_write = train_module._write_checkpoint

    def write_then_stop(path, step, *args):
        real_write(path, step, *args)
        if step == 4:
            raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_checkpoint", write_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_module.fit_translators(loaded_tiny, windows, plan, settings, checkpoint=checkpoint, fingerprint=fingerprint)
    monkeypatch.setattr(train_module, "_write_checkpoint", real_write)
    with pytest.raises(train_module.TunedLensError, match="another training .*corpus"):
        train_module.fit_translators(loaded_tiny, windows, plan, settings, checkpoint=checkpoint, fingerprint={"corpus": "b"})

    resumed, resumed_kl, start = train_module.fit_translators(loaded_tiny, windows, plan, settings, checkpoint=checkpoint, fingerprint=fingerprint)
    assert start == 4
    torch.testing.assert_close(resumed.weight, whole.weight, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(resumed.bias, whole.bias, atol=1e-6, rtol=1e-5)
    np.testing.assert_allclose(resumed_kl, whole_kl, rtol=1e-5)
    assert not torch.equal(whole.weight, torch.zeros_like(whole.weight))


def test_rerunning_an_interrupted_command_resumes(tiny_llama, corpus, tmp_path, monkeypatch):
    args = ("train-lens", tiny_llama, "--text", corpus, "--out", tmp_path / "lens", "--steps", 4, "--seq-len", SEQ_LEN, "--checkpoint-every", 2)
    real_write = train_module._write_checkpoint

    def write_then_stop(path, step, *rest):
        real_write(path, step, *rest)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_checkpoint", write_then_stop)
    stopped = run_cli(*args, "--quiet")
    assert stopped.exit_code == 130 and not (tmp_path / "lens" / "config.json").exists()
    monkeypatch.setattr(train_module, "_write_checkpoint", real_write)
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    assert "resumed at step 2" in result.stderr
    assert json.loads((tmp_path / "lens" / "training.json").read_text())["resumed_at_step"] == 2
    assert not (tmp_path / "lens" / train_module.CHECKPOINT_FILE).exists()
    load_tuned_lens(tmp_path / "lens")


def test_bad_input_is_one_line(tiny_llama, corpus, tmp_path, warehouse):
    base = ("train-lens", tiny_llama, "--quiet")
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "fine"}\n{"txt": "no text key"}\n')
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "config.json").write_text("{}")
    cases = [
        ((*base, "--text", corpus), "give --out DIR or --name NAME"),
        ((*base, "--text", corpus, "--out", tmp_path / "a", "--name", "a"), "give --out DIR or --name NAME"),
        ((*base, "--text", tmp_path / "missing.jsonl", "--out", tmp_path / "b"), "no such file"),
        ((*base, "--text", tmp_path / "corpus.csv", "--out", tmp_path / "b"), ".txt or a .jsonl"),
        ((*base, "--text", bad_json, "--out", tmp_path / "b"), "line 2"),
        ((*base, "--text", corpus, "--out", tmp_path / "taken"), "already holds a tuned lens"),
        ((*base, "--text", corpus, "--name", "a/b", "--warehouse", warehouse), "invalid lens name"),
        ((*base, "--text", corpus, "--name", "norm", "--warehouse", warehouse), "built-in lens"),
        ((*base, "--text", corpus, "--out", tmp_path / "b", "--seq-len", 4096), "exceeds the model's context"),
        ((*base, "--text", corpus, "--out", tmp_path / "b", "--seq-len", SEQ_LEN, "--tokens-per-step", 8), "less than one window"),
    ]
    for args, fragment in cases:
        assert_one_line_error(run_cli(*args), fragment)
    assert not (tmp_path / "b").exists() and not warehouse.exists()


def test_window_order_is_a_sequence_of_permutations():
    order = train_module._window_order
    n = 7
    whole = order(n, 42, 0, 3 * n + 2)
    assert len(whole) == 3 * n + 2
    for epoch in range(3):  # every pass over the data sees each training window once
        assert sorted(whole[epoch * n : (epoch + 1) * n].tolist()) == list(range(n))
    assert whole[:n].tolist() != whole[n : 2 * n].tolist()  # reshuffled each pass
    # Any step's slice is the same slice of the whole sequence (what resuming relies on).
    for start, count in [(0, 5), (5, 4), (6, 9), (20, 3)]:
        assert order(n, 42, start, count).tolist() == whole[start : start + count].tolist()
    assert order(n, 43, 0, n).tolist() != whole[:n].tolist()


def test_lens_logits_of_a_hand_made_lens_equal_the_formula(loaded_tiny, tiny_llama, tmp_path):
    """What extract's tuned lens computes (lens_logits on the engine's residuals) against
    Hugging Face residuals, the translator formula, the final norm module and lm_head."""
    from lensdb.extract import capture
    from lensdb.tuned.format import check_fits_model, lens_logits
    from tests.test_tuned_format import random_state, write_lens

    n_layers, d_model = loaded_tiny.n_layers, loaded_tiny.d_model
    state = random_state(8, n=n_layers, d=d_model)
    config = {"d_model": d_model, "num_hidden_layers": n_layers, "unembed_hash": hf_unembed_hash(tiny_llama)}
    lens = load_tuned_lens(write_lens(tmp_path / "lens", state, config))
    check_fits_model(lens, loaded_tiny)
    ids = [1, 5, 9, 4, 12, 7, 3, 8]
    output = capture.run_pass(loaded_tiny.bridge, loaded_tiny.residual_hooks(), [ids], 0, loaded_tiny.device)
    model = load_hf(str(tiny_llama))
    residuals, _ = residual_stream(str(tiny_llama), ids)
    with torch.no_grad():
        for layer in range(n_layers + 1):
            h = residuals[layer]
            if layer < n_layers:
                h = h + h @ state[f"{layer}.weight"].T + state[f"{layer}.bias"]
            expected = model.lm_head(model.model.norm(h))
            got = lens_logits(lens, loaded_tiny, output.residuals[layer], layer)
            torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    other = load_tuned_lens(write_lens(tmp_path / "other", random_state(9, n=n_layers, d=d_model), {**config, "unembed_hash": "0" * 64}))
    with pytest.raises(train_module.TunedLensError, match="another unembedding"):
        check_fits_model(other, loaded_tiny)


def test_a_diverging_training_fails_and_writes_nothing(tiny_llama, corpus, tmp_path, warehouse):
    """Issue 21.2: `--lr 1e30` exited 0 and wrote a NaN lens. With a checkpoint every step, the
    first (finite) step is checkpointed before the second diverges: that checkpoint goes too."""
    common = ("train-lens", tiny_llama, "--text", corpus, "--steps", 4, "--seq-len", SEQ_LEN, "--checkpoint-every", 1, "--lr", "1e30", "--quiet")
    out = tmp_path / "lens"
    assert_one_line_error(run_cli(*common, "--out", out), "training diverged at step 2 of 4", "lower --lr", "nothing was written")
    assert not out.exists()
    assert_one_line_error(run_cli(*common, "--name", "wild", "--warehouse", warehouse), "training diverged", "nothing was written")
    assert not (warehouse / "lenses" / "wild").exists() and not (warehouse / "_lens_training").exists()
    # A folder that was there before stays, without a checkpoint.
    out.mkdir()
    assert_one_line_error(run_cli(*common, "--out", out), "training diverged")
    assert list(out.iterdir()) == []


def test_a_checkpoint_of_weights_changed_in_place_is_not_resumed(tiny_llama, corpus, tmp_path, warehouse, monkeypatch):
    """Issue 21.3: killed, then rerun after the model's weights changed in place (same sizes),
    `train-lens --name` resumed the old checkpoint and mixed two models. It refuses in one line."""
    import shutil

    from tests.conftest import rewrite_tensor_in_place

    model = shutil.copytree(tiny_llama, tmp_path / "tiny-llama")
    args = ("train-lens", model, "--text", corpus, "--name", "moving", "--warehouse", warehouse, "--steps", 4, "--seq-len", SEQ_LEN, "--checkpoint-every", 2, "--quiet")
    real_write = train_module._write_checkpoint

    def write_then_stop(path, step, *rest):
        real_write(path, step, *rest)
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "_write_checkpoint", write_then_stop)
    assert run_cli(*args).exit_code == 130
    monkeypatch.setattr(train_module, "_write_checkpoint", real_write)
    rewrite_tensor_in_place(model, "model.layers.1.mlp.up_proj.weight")
    assert_one_line_error(run_cli(*args), "is of another training (different model_revision)", "delete it to start over")
    assert not (warehouse / "lenses" / "moving").exists()

"""`lensdb extract --lens tuned:DIR`: records of a tuned lens written by hand in the tuned-lens
format equal an independent computation (plain Hugging Face, float64) within 1e-5."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.dataset as ds
import pytest
import torch

from lensdb.extract.engine import extract
from tests.conftest import write_jsonl
from tests.reference import load_hf, residual_stream

PROB_TOL = 1e-5
PROMPTS = [
    {"id": "lily", "text": "Once upon a time, there was a little girl named Lily. Lily loved her mom. One day,", "gold": "Lily"},
    {"id": "ball", "text": "One day, she saw a big, red ball.", "role": "test"},
]


def write_tuned_lens(folder, n_layers: int, d_model: int, seed: int = 5):
    """A lens folder as tuned-lens's TunedLens.save writes it: config.json and params.pt with
    the translators' state dict ({i}.weight (out, in), {i}.bias), random translators."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for i in range(n_layers):
        state[f"{i}.weight"] = torch.randn(d_model, d_model, generator=generator) * 0.05
        state[f"{i}.bias"] = torch.randn(d_model, generator=generator) * 0.05
    folder.mkdir(parents=True)
    torch.save(state, folder / "params.pt")
    config = {"base_model_name_or_path": "stories260K", "d_model": d_model, "num_hidden_layers": n_layers, "bias": True, "lens_type": "linear_tuned_lens"}
    (folder / "config.json").write_text(json.dumps(config))
    return state


def independent_tuned_probs(model_dir, token_ids, state) -> np.ndarray:
    """(n_layers + 1, tokens, vocab) float64: softmax(lm_head(final_norm(h + W h + b))), identity at the last layer."""
    model = load_hf(str(model_dir))
    residuals, _ = residual_stream(str(model_dir), token_ids)
    n_layers = len(residuals) - 1
    out = []
    with torch.no_grad():
        for layer, h in enumerate(residuals):
            if layer < n_layers:
                w, b = state[f"{layer}.weight"].double(), state[f"{layer}.bias"].double()
                h = (h.double() + h.double() @ w.T + b).float()
            logits = model.lm_head(model.model.norm(h)).double()
            out.append(torch.softmax(logits, dim=-1).numpy())
    return np.stack(out)


def test_tuned_records_equal_the_formula(stories_model, tmp_path):
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(stories_model)
    state = write_tuned_lens(tmp_path / "lens", config.num_hidden_layers, config.hidden_size)
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    summary = extract(
        str(stories_model), prompts=str(prompts), warehouse=tmp_path / "w", device="cpu", dtype="float32",
        lenses=f"norm,final_ln,tuned:{tmp_path / 'lens'}",
    )
    manifest = ds.dataset(summary.path / "manifest").to_table().to_pylist()[0]
    details = {d["name"]: d for d in json.loads(manifest["lens_details"])}
    assert details["tuned"]["origin"].endswith("lens") and len(details["tuned"]["sha256"]) == 64
    assert manifest["reference_lens"] == "norm"
    prompts_rows = {p["prompt_id"]: p for p in ds.dataset(summary.path / "prompts").to_table().to_pylist()}
    records = [r for r in ds.dataset(summary.path / "records").to_table().to_pylist() if r["lens"] == "tuned"]
    assert len(records) == sum(p["n_tokens"] for p in prompts_rows.values()) * (config.num_hidden_layers + 1)
    expected = {pid: independent_tuned_probs(stories_model, p["token_ids"], state) for pid, p in prompts_rows.items()}
    final_ln = {(r["prompt_id"], r["layer"], r["pos"]): r for r in ds.dataset(summary.path / "records").to_table().to_pylist() if r["lens"] == "final_ln"}
    worst = 0.0
    for r in records:
        p = expected[r["prompt_id"]][r["layer"], r["pos"]]
        worst = max(worst, np.abs(np.array(r["topk_probs"]) - p[r["topk_ids"]]).max())
        assert r["topk_ids"][0] == int(np.argmax(p)) or p[r["topk_ids"][0]] == pytest.approx(p.max(), abs=PROB_TOL)
        if r["layer"] == config.num_hidden_layers:  # identity translator: the tuned lens is final_ln there
            twin = final_ln[(r["prompt_id"], r["layer"], r["pos"])]
            assert r["topk_ids"] == twin["topk_ids"] and r["kl_to_final_bits"] == pytest.approx(twin["kl_to_final_bits"], abs=1e-9)
    assert worst <= PROB_TOL
    # the translators matter below the last layer
    assert any(r["layer"] < config.num_hidden_layers and r["kl_vs_norm_bits"] > 1e-3 for r in records)


def test_misfit_tuned_lens_is_one_line_error(stories_model, tmp_path):
    from lensdb.errors import LensdbError
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(stories_model)
    write_tuned_lens(tmp_path / "lens", config.num_hidden_layers + 1, config.hidden_size)
    prompts = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    with pytest.raises(LensdbError) as raised:
        extract(str(stories_model), prompts=str(prompts), warehouse=tmp_path / "w", device="cpu", lenses=f"tuned:{tmp_path / 'lens'}")
    assert "\n" not in str(raised.value) and "layers" in str(raised.value)
    assert not list((tmp_path / "w").glob("runs/*/*")), "nothing committed"

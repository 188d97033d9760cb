"""Tuned lenses at mid sites (`train-lens --sites all`, `extract --sites all --lens tuned:...`):
the files (params.pt stays a tuned-lens lens), the held-out KL at every site and the mid
records against plain Hugging Face (the block's input plus its attention output, then the
translator formula, the final norm and lm_head), the stored lens's rows, and one-line refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

import lensdb
from lensdb.errors import LensdbError
from lensdb.extract.engine import extract
from lensdb.tuned.format import load_tuned_lens
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.reference import layers_and_norms, load_hf, mid_residuals, residual_stream
from tests.test_sites import build_tiny_neox
from tests.test_tuned_train import SEQ_LEN, corpus, reference_windows  # noqa: F401 - corpus is a fixture

STEPS = 6
PROB_TOL = 1e-5


def translate(h: torch.Tensor, state: dict, index: int) -> torch.Tensor:
    return h + h @ state[f"{index}.weight"].T + state[f"{index}.bias"]


def reference_site_kl_bits(model_dir, windows, post_state, mid_state) -> dict[tuple[int, str], float]:
    """Mean KL(final || tuned lens) per (layer, site) in bits from Hugging Face residuals and
    the raw state dicts of params.pt and params_mid.pt (mid translator b at layer b + 1)."""
    model = load_hf(str(model_dir))
    final_norm = layers_and_norms(model)[4]
    totals: dict[tuple[int, str], float] = {}
    count = 0
    with torch.no_grad():
        for ids in windows:
            posts, logits = residual_stream(str(model_dir), ids)
            n_layers = len(posts) - 1
            target = torch.log_softmax(logits.double(), dim=-1)
            sites = [((layer, "post"), translate(h, post_state, layer) if layer < n_layers else h) for layer, h in enumerate(posts)]
            sites += [((b + 1, "mid"), translate(h, mid_state, b)) for b, h in enumerate(mid_residuals(str(model_dir), ids))]
            for key, h in sites:
                lens = torch.log_softmax(model.lm_head(final_norm(h)).double(), dim=-1)
                totals[key] = totals.get(key, 0.0) + (target.exp() * (target - lens)).sum().item()
            count += len(ids)
    return {key: total / count / math.log(2) for key, total in totals.items()}


@pytest.fixture(scope="module")
def trained_all_sites(tiny_llama, corpus, tmp_path_factory):  # noqa: F811 - the corpus fixture
    out = tmp_path_factory.mktemp("lens") / "lens"
    result = run_cli("train-lens", tiny_llama, "--text", corpus, "--out", out, "--steps", STEPS, "--seq-len", SEQ_LEN, "--sites", "all", "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    return out


def test_all_sites_lens_files_and_held_out_kl(tiny_llama, corpus, trained_all_sites):  # noqa: F811
    out = trained_all_sites
    n_layers = json.loads((tiny_llama / "config.json").read_text())["num_hidden_layers"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "lens.parquet", "params.pt", "params_mid.pt", "training.json"]
    config = json.loads((out / "config.json").read_text())
    assert config["lensdb_sites"] == ["post", "mid"] and config["num_hidden_layers"] == n_layers
    post_state = torch.load(out / "params.pt")
    mid_state = torch.load(out / "params_mid.pt")
    # params.pt is what tuned-lens's TunedLens.load reads: the post translators, nothing else.
    assert sorted(post_state) == sorted(f"{i}.{p}" for i in range(n_layers) for p in ("weight", "bias"))
    assert sorted(mid_state) == sorted(post_state)
    assert all(mid_state[f"{i}.weight"].abs().max() > 0 for i in range(n_layers))  # every mid translator was trained
    lens = load_tuned_lens(out)
    assert lens.sites == ("post", "mid") and lens.content_sha256 != lens.sha256
    settings = json.loads((out / "training.json").read_text())
    assert settings["sites"] == "all" and settings["lens_sha256"] == lens.content_sha256
    reported = {(row["layer"], row["site"]): row for row in settings["layers"]}
    assert sorted(reported) == sorted([(layer, "post") for layer in range(n_layers + 1)] + [(layer, "mid") for layer in range(1, n_layers + 1)])
    _, eval_windows = reference_windows(tiny_llama, corpus, SEQ_LEN)
    expected = reference_site_kl_bits(tiny_llama, eval_windows, post_state, mid_state)
    for key, row in reported.items():
        assert row["kl_bits"] == pytest.approx(expected[key], rel=1e-4, abs=1e-5), key
        assert (row["train_kl_bits"] is None) == (key == (n_layers, "post"))
    # The lens's own table, as v1.lenses reads it: one row per layer and site.
    table = pq.read_table(out / "lens.parquet").to_pylist()
    assert sorted((r["layer"], r["site"]) for r in table) == sorted(reported)


def test_mid_records_of_a_tuned_lens_equal_the_formula(tiny_llama, tiny_prompts, trained_all_sites, tmp_path):
    warehouse = tmp_path / "warehouse"
    summary = extract(str(tiny_llama), prompts=str(tiny_prompts), warehouse=warehouse, device="cpu", dtype="float32",
                      lenses=("norm", f"tuned:{trained_all_sites}"), sites="all")
    model = load_hf(str(tiny_llama))
    final_norm = layers_and_norms(model)[4]
    mid_state = torch.load(trained_all_sites / "params_mid.pt")
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in lensdb.query("SELECT prompt_id, prompt_variant, token_ids FROM v1.prompts", warehouse=warehouse).to_pylist()}
    records = lensdb.query("SELECT prompt_id, prompt_variant, layer, pos, topk_ids, topk_probs FROM v1.records WHERE lens = 'tuned' AND site = 'mid'",
                           warehouse=warehouse).to_pylist()
    assert len(records) > 0 and len(records) == summary.rows["records_mid"] // 2  # two lenses
    expected = {}
    for key, prompt in prompts.items():
        with torch.no_grad():
            mids = mid_residuals(str(tiny_llama), prompt["token_ids"])
            expected[key] = [torch.softmax(model.lm_head(final_norm(translate(h, mid_state, b))).double(), dim=-1).numpy() for b, h in enumerate(mids)]
    for r in records:
        probs = expected[r["prompt_id"], r["prompt_variant"]][r["layer"] - 1][r["pos"]]
        np.testing.assert_allclose(r["topk_probs"], probs[r["topk_ids"]], atol=PROB_TOL)
    details = lensdb.query("SELECT lens_details FROM v1.runs", warehouse=warehouse).to_pylist()[0]["lens_details"]
    tuned = next(d for d in json.loads(details) if d["kind"] == "tuned")
    assert tuned["sha256"] == load_tuned_lens(trained_all_sites).content_sha256 and tuned["sites"] == ["post", "mid"]


def test_stored_all_sites_lens_rows_and_refusals(tiny_llama, corpus, tmp_path):  # noqa: F811
    warehouse = tmp_path / "warehouse"
    result = run_cli("train-lens", tiny_llama, "--text", corpus, "--name", "both", "--warehouse", warehouse, "--steps", 2, "--seq-len", SEQ_LEN, "--sites", "all", "--quiet")
    assert result.exit_code == 0, result.output
    rows = lensdb.query("SELECT layer, site, lens_sha256 FROM v1.lenses ORDER BY site, layer", warehouse=warehouse).to_pylist()
    assert [(r["site"], r["layer"]) for r in rows] == [("mid", 1), ("mid", 2), ("mid", 3), ("post", 0), ("post", 1), ("post", 2), ("post", 3)]
    assert {r["lens_sha256"] for r in rows} == {load_tuned_lens(warehouse / "lenses" / "both").content_sha256}
    # A lens stored before the site column reads as post sites.
    old = warehouse / "lenses" / "old"
    old.mkdir()
    table = pq.read_table(warehouse / "lenses" / "both" / "lens.parquet")
    posts = table.filter(pc.equal(table["site"], "post")).drop_columns(["site"]).set_column(0, "lens", pa.array(["old"] * 4))
    pq.write_table(posts, old / "lens.parquet")
    sites = lensdb.query("SELECT DISTINCT site FROM v1.lenses WHERE lens = 'old'", warehouse=warehouse).to_pylist()
    assert sites == [{"site": "post"}]
    bad = run_cli("train-lens", tiny_llama, "--text", corpus, "--out", tmp_path / "x", "--sites", "mid")
    assert bad.exit_code != 0 and "'mid' is not one of 'post', 'all'" in bad.output


def test_parallel_block_models_cannot_train_mid_translators(tmp_path, corpus):  # noqa: F811
    model_dir = build_tiny_neox(tmp_path / "tiny-neox")
    result = run_cli("train-lens", model_dir, "--text", corpus, "--out", tmp_path / "lens", "--steps", 1, "--seq-len", SEQ_LEN, "--sites", "all", "--quiet")
    assert_one_line_error(result, "--sites all: model tiny-neox has no mid residual (its blocks run attention and MLP in parallel); use --sites post")
    assert not (tmp_path / "lens" / "config.json").exists()


def test_a_mid_lens_folder_without_its_mid_file_is_one_line(tiny_llama, trained_all_sites, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained_all_sites, broken)
    (broken / "params_mid.pt").unlink()
    with pytest.raises(LensdbError, match="config.json lists mid sites but there is no params_mid.pt"):
        load_tuned_lens(broken)


def test_post_translators_train_as_without_mid_ones(tiny_llama, corpus, trained_all_sites, tmp_path):  # noqa: F811
    post_only = tmp_path / "post"
    result = run_cli("train-lens", tiny_llama, "--text", corpus, "--out", post_only, "--steps", STEPS, "--seq-len", SEQ_LEN, "--device", "cpu", "--quiet")
    assert result.exit_code == 0, result.output
    assert not (post_only / "params_mid.pt").exists() and "lensdb_sites" not in json.loads((post_only / "config.json").read_text())
    both, alone = load_tuned_lens(trained_all_sites), load_tuned_lens(post_only)
    torch.testing.assert_close(both.weight, alone.weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(both.bias, alone.bias, rtol=1e-5, atol=1e-7)

"""Sub-layer sites (--sites post|mid|all): mid records against an independent computation from
the Hugging Face model's own modules, the parallel-block refusal, and the default unchanged."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from lensdb import catalog
from lensdb.errors import LensdbError
from lensdb.extract.engine import extract
from lensdb.legacy.export import export
from lensdb.run_settings import RecordSettings
from tests.conftest import _byte_bpe_tokenizer
from tests.reference import layers_and_norms, load_hf, mid_residuals

LENSES = ("norm", "final_ln", "raw")
PROB_TOL = 1e-5


def rows(warehouse, sql: str, **params) -> list[dict]:
    con = catalog.connect(warehouse, read_only=True)
    try:
        cursor = con.execute(sql, params)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row)) for row in cursor.fetchall()]
    finally:
        con.close()


def value(warehouse, sql: str, **params):
    return next(iter(rows(warehouse, sql, **params)[0].values()))


def run(model_dir, prompts, warehouse, **options):
    options.setdefault("lenses", LENSES)
    return extract(str(model_dir), prompts=str(prompts), warehouse=warehouse, device="cpu", dtype="float32", batch_size=4, **options)


def reference_mid_probs(model_dir: str, token_ids: list[int]) -> dict[str, np.ndarray]:
    """lens -> (n_layers, n_tokens, vocab) float64 probabilities at every block's mid residual
    (tests/reference.py's mid_residuals), then the MLP's norm (norm lens), the final norm
    (final_ln) or nothing (raw), then the model's lm_head."""
    model = load_hf(str(model_dir))
    _, _, _, mlp_norms, final_norm = layers_and_norms(model)
    probs = {lens: [] for lens in LENSES}
    with torch.no_grad():
        for i, mid in enumerate(mid_residuals(str(model_dir), token_ids)):
            for lens, normed in (("norm", mlp_norms[i](mid)), ("final_ln", final_norm(mid)), ("raw", mid)):
                probs[lens].append(torch.softmax(model.lm_head(normed).double(), dim=-1).numpy())
    return {lens: np.stack(layers) for lens, layers in probs.items()}


def _entropy_bits(p):
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(2))


@pytest.fixture(scope="module", params=["tiny_llama", "tiny_gpt2", "tiny_gemma2"])
def all_sites_run(request, tmp_path_factory, tiny_prompts):
    model_dir = request.getfixturevalue(request.param)
    warehouse = tmp_path_factory.mktemp(request.param) / "warehouse"
    summary = run(model_dir, tiny_prompts, warehouse, sites="all", keep_residuals=True)
    return model_dir, warehouse, summary


def test_mid_records_match_the_hugging_face_modules(all_sites_run):
    model_dir, warehouse, summary = all_sites_run
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in rows(warehouse, "SELECT * FROM v1.prompts WHERE run_id = $r", r=summary.run_id)}
    records = rows(warehouse, "SELECT * FROM v1.records WHERE site = 'mid' AND run_id = $r", r=summary.run_id)
    n_layers = value(warehouse, "SELECT n_layers FROM v1.runs WHERE run_id = $r", r=summary.run_id)
    expected = {(pid, var, lens, layer, pos) for (pid, var), p in prompts.items() for lens in LENSES for layer in range(1, n_layers + 1) for pos in range(p["n_tokens"])}
    assert {(r["prompt_id"], r["prompt_variant"], r["lens"], r["layer"], r["pos"]) for r in records} == expected
    assert len(records) == len(expected)
    references = {key: reference_mid_probs(str(model_dir), p["token_ids"]) for key, p in prompts.items()}
    for r in records:
        key = (r["prompt_id"], r["prompt_variant"])
        p = references[key][r["lens"]][r["layer"] - 1, r["pos"]]
        where = f"{key} {r['lens']} mid layer {r['layer']} pos {r['pos']}"
        assert abs(r["entropy_bits"] - _entropy_bits(p)) < 1e-4, where
        np.testing.assert_allclose(r["topk_probs"], p[r["topk_ids"]], atol=PROB_TOL, err_msg=where)
        assert r["topk_probs"][0] == pytest.approx(p.max(), abs=PROB_TOL), where
        gold = prompts[key]["gold_first_id"]
        if gold is not None:
            assert r["p_answer"] == pytest.approx(p[gold], abs=PROB_TOL), where


def test_mid_residuals_are_the_hugging_face_sum(all_sites_run):
    model_dir, warehouse, _ = all_sites_run
    model = load_hf(str(model_dir))
    n_blocks = len(layers_and_norms(model)[0])
    prompt = rows(warehouse, "SELECT * FROM v1.prompts ORDER BY prompt_index LIMIT 1")[0]
    stored = rows(
        warehouse,
        "SELECT layer, pos, resid FROM v1.residuals WHERE site = 'mid' AND prompt_id = $id AND prompt_variant = $v ORDER BY layer, pos",
        id=prompt["prompt_id"],
        v=prompt["prompt_variant"],
    )
    assert {r["layer"] for r in stored} == set(range(1, n_blocks + 1))
    # The stored vector itself, through the raw lens: the HF mid residual's distribution.
    reference = reference_mid_probs(str(model_dir), prompt["token_ids"])["raw"]
    for r in stored:
        with torch.no_grad():
            logits = model.lm_head(torch.tensor(r["resid"], dtype=torch.float32)).double()
        np.testing.assert_allclose(torch.softmax(logits, -1).numpy(), reference[r["layer"] - 1, r["pos"]], atol=PROB_TOL)


def test_all_sites_keep_the_post_records_of_a_post_run(all_sites_run, tiny_prompts, tmp_path):
    model_dir, warehouse, summary = all_sites_run
    post = run(model_dir, tiny_prompts, warehouse, sites="post")
    assert not (post.path / "records_mid").exists() and "records_mid" not in post.rows
    columns = "prompt_id, prompt_variant, lens, layer, pos, token_id, topk_ids, answer_rank, entropy_bits, topk_probs, p_answer, kl_to_final_bits, cos_to_final, kl_vs_norm_bits"
    order = "ORDER BY prompt_id, prompt_variant, lens, layer, pos"
    of_post = rows(warehouse, f"SELECT {columns} FROM v1.records WHERE run_id = $r {order}", r=post.run_id)
    of_all = rows(warehouse, f"SELECT {columns} FROM v1.records WHERE run_id = $r AND site = 'post' {order}", r=summary.run_id)
    assert len(of_post) == len(of_all) > 0
    for a, b in zip(of_post, of_all):
        for name in ("prompt_id", "prompt_variant", "lens", "layer", "pos", "token_id", "topk_ids", "answer_rank"):
            assert a[name] == b[name], name
        for name in ("entropy_bits", "p_answer", "kl_to_final_bits", "cos_to_final", "kl_vs_norm_bits"):
            assert a[name] == pytest.approx(b[name], abs=1e-6, nan_ok=True) or a[name] is b[name] is None, name
    # The legacy export holds post sites only: the two runs export the same bytes.
    first = export(tmp_path / "post", warehouse=warehouse, run_id=post.run_id)
    second = export(tmp_path / "all", warehouse=warehouse, run_id=summary.run_id)
    assert sorted(p.name for p in first) == sorted(p.name for p in second)
    for a in first:
        assert a.read_bytes() == (tmp_path / "all" / a.name).read_bytes(), a.name


def test_post_only_views_ignore_mid_rows(all_sites_run):
    _, warehouse, summary = all_sites_run
    assert value(warehouse, "SELECT count(*) FROM v1.pure_next_token WHERE site = 'mid'") > 0
    # diagnostics: the first layers over post sites only, the same as a run without mid sites
    diagnostics = [next(iter(r.values())) for r in rows(warehouse, "SELECT min(layer) FILTER (WHERE is_answer) AS first FROM v1.pure_next_token WHERE run_id = $r AND site = 'post' GROUP BY prompt_id, prompt_variant, lens ORDER BY ALL", r=summary.run_id)]
    stored = [next(iter(r.values())) for r in rows(warehouse, "SELECT L_semantic FROM v1.diagnostics WHERE run_id = $r ORDER BY ALL", r=summary.run_id)]
    assert sorted(diagnostics, key=lambda x: (x is None, x)) == sorted(stored, key=lambda x: (x is None, x))
    checks = value(warehouse, "SELECT count(*) FROM v1.last_layer_consistency WHERE run_id = $r", r=summary.run_id)
    n_prompts = value(warehouse, "SELECT count(*) FROM v1.prompts WHERE run_id = $r", r=summary.run_id)
    assert checks == n_prompts * len(LENSES)


def test_mid_only_runs_are_listed_and_hold_no_post_records(tiny_llama, tiny_prompts, tmp_path):
    warehouse = tmp_path / "warehouse"
    summary = run(tiny_llama, tiny_prompts, warehouse, sites="mid")
    sites = rows(warehouse, "SELECT site, min(layer), max(layer) FROM v1.records WHERE run_id = $r GROUP BY site", r=summary.run_id)
    assert sites == [{"site": "mid", "min(layer)": 1, "max(layer)": 3}]
    assert value(warehouse, "SELECT count(*) FROM v1.runs") == 1


def build_tiny_neox(path: Path) -> Path:
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    tokenizer = _byte_bpe_tokenizer()
    torch.manual_seed(0)
    config = GPTNeoXConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=len(tokenizer),
        max_position_embeddings=64, use_parallel_residual=True, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    GPTNeoXForCausalLM(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_parallel_block_models_have_no_mid_site(tmp_path, tiny_prompts, capsys):
    model_dir = build_tiny_neox(tmp_path / "tiny-neox")
    with pytest.raises(LensdbError, match=r"--sites mid: model tiny-neox has no mid residual \(.*parallel.*\)"):
        run(model_dir, tiny_prompts, tmp_path / "warehouse", sites="mid")
    capsys.readouterr()
    summary = run(model_dir, tiny_prompts, tmp_path / "warehouse", sites="all")
    err = capsys.readouterr().err
    assert [line for line in err.splitlines() if "no mid residual" in line] == [
        "lensdb: model tiny-neox has no mid residual (its blocks run attention and MLP in parallel): post sites only"
    ]
    assert "records_mid" not in summary.rows and summary.rows["records"] > 0


def test_default_settings_hash_is_unchanged():
    settings = RecordSettings(lenses=(), reference_lens="norm", top_k=20, dtype="auto", revision=None, unembed="auto", keep_residuals=False)
    # The hash as runs before issue 20 computed it: the same payload without its options.
    before = {"settings_version": 1, **{k: v for k, v in asdict(settings).items() if k not in ("sites", "track", "attribution")}}
    expected = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert settings.sha256() == expected
    assert RecordSettings(**(asdict(settings) | {"lenses": (), "sites": "all"})).sha256() != expected


def test_bad_sites_and_tuned_lenses_at_mid_sites_are_one_line_errors(tiny_llama, tiny_prompts, tmp_path):
    with pytest.raises(LensdbError, match="--sites both: choose post, mid or all"):
        run(tiny_llama, tiny_prompts, tmp_path / "w", sites="both")
    from lensdb.tuned.format import save_tuned_lens, zero_translators

    config = json.loads((Path(tiny_llama) / "config.json").read_text())
    post_only = save_tuned_lens(zero_translators(config["num_hidden_layers"], config["hidden_size"]), tmp_path / "post-only")
    with pytest.raises(LensdbError, match="tuned lens tuned has translators for post sites only: train one with `lensdb train-lens --sites all`"):
        run(tiny_llama, tiny_prompts, tmp_path / "w", sites="all", lenses=("norm", f"tuned:{post_only.origin}"))
    assert not (tmp_path / "w" / "runs").exists() or not any((tmp_path / "w" / "runs").rglob("manifest"))


def test_figures_place_mid_sites_between_layers(all_sites_run):
    from lensdb.plot import data, interactive, static

    _, warehouse, summary = all_sites_run
    with data.Warehouse(warehouse) as db:
        run_info = db.run(summary.run_id)
        n = run_info.n_layers
        grid = data.grid(db, run_info, "pos", lens="norm", metric_name="p_top1")
        assert grid.layers == [x / 2 for x in range(2 * n + 1)]  # 0, 0.5 (block 0's mid), 1, ...
        expected = {
            (r["layer"] - 0.5 if r["site"] == "mid" else r["layer"], r["pos"]): r["p"]
            for r in rows(warehouse, "SELECT layer, site, pos, topk_probs[1] AS p FROM v1.records WHERE run_id = $r AND prompt_id = 'pos' AND prompt_variant = 'orig' AND lens = 'norm'", r=summary.run_id)
        }
        for (depth, pos), p in expected.items():
            assert grid.value(depth, pos) == pytest.approx(p)
        figure = interactive.heatmap_figure(grid)
        assert list(figure.data[0].y) == grid.layers
        static.heatmap_figure(grid)  # draws (rows half a layer apart)
        curves = data.curves(db, [run_info], metric_name="kl_to_final_bits", lens="norm")
        assert curves.curves[0].layers == grid.layers
        medians = {
            (r["layer"] - 0.5 if r["site"] == "mid" else r["layer"]): r["m"]
            for r in rows(warehouse, "SELECT layer, site, median(kl_to_final_bits) AS m FROM v1.pure_next_token WHERE run_id = $r AND lens = 'norm' AND prompt_variant = 'orig' GROUP BY layer, site", r=summary.run_id)
        }
        assert curves.curves[0].median == pytest.approx([medians[x] for x in grid.layers])

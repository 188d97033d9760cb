"""Every number extract writes, checked against the independent lens in reference.py."""

from __future__ import annotations

import math

import numpy as np
import pyarrow.dataset as ds
import pytest

from lensdb.extract.engine import extract
from tests.conftest import write_jsonl
from tests.reference import cosine, entropy_bits, kl_bits, rank_bounds, reference_lens, residual_stream

LENSES = ("final_ln", "norm", "raw")
PROB_TOL = 1e-5

STORY_PROMPTS = [
    {"id": "lily", "text": "Once upon a time, there was a little girl named Lily. Lily loved her mom. One day,", "gold": "Lily"},
    {"id": "tom", "text": "Once upon a time, there was a little boy named Tom. Tom loved his dog. One day,", "gold": "Tom", "control_of": "lily"},
    {"id": "ball", "text": "One day, she saw a big, red ball.", "role": "test"},
]


def read_table(run_path, table):
    return ds.dataset(run_path / table, format="parquet").to_table().to_pylist()


def run_extract(model_dir, prompts, warehouse, **options):
    options.setdefault("lenses", LENSES)
    options.setdefault("device", "cpu")
    return extract(str(model_dir), prompts=str(prompts), warehouse=warehouse, batch_size=4, **options)


# CUDA runs (float32) are checked against the same CPU reference where a GPU is present
# (marked `cuda`: bench/gpu_check.sh runs them with `pytest -m cuda`).
@pytest.fixture(
    scope="module",
    params=[
        "tiny_llama",
        "tiny_gpt2",
        "tiny_gemma2",
        "stories_model",
        pytest.param("stories_model@cuda", marks=pytest.mark.cuda),
        pytest.param("tiny_gpt2@cuda", marks=pytest.mark.cuda),
    ],
)
def extracted(request, tmp_path_factory, tiny_prompts):
    import torch

    name, _, device = request.param.partition("@")
    if device == "cuda" and not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    model_dir = request.getfixturevalue(name)
    tmp_path = tmp_path_factory.mktemp(name)
    prompts = tiny_prompts if name != "stories_model" else write_jsonl(tmp_path / "story.jsonl", STORY_PROMPTS)
    summary = run_extract(model_dir, prompts, tmp_path / "warehouse", device=device or "cpu", dtype="float32")
    return model_dir, summary


def test_every_record_matches_the_independent_lens(extracted):
    model_dir, summary = extracted
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    records = read_table(summary.path, "records")
    n_layers = read_table(summary.path, "manifest")[0]["n_layers"]
    lengths = {len(p["token_ids"]) for p in prompts.values()}
    assert len(lengths) > 1, "the batch must mix prompt lengths"

    expected_keys = {
        (pid, var, lens, layer, pos)
        for (pid, var), p in prompts.items()
        for lens in LENSES
        for layer in range(n_layers + 1)
        for pos in range(p["n_tokens"])
    }
    keys = [(r["prompt_id"], r["prompt_variant"], r["lens"], r["layer"], r["pos"]) for r in records]
    assert len(keys) == len(set(keys)), "duplicate records"
    assert set(keys) == expected_keys, "missing or extra records"

    references = {key: reference_lens(str(model_dir), p["token_ids"]) for key, p in prompts.items()}
    worst = 0.0
    for r in records:
        key = (r["prompt_id"], r["prompt_variant"])
        prompt, ref = prompts[key], references[key]
        p = ref.probs[r["lens"]][r["layer"], r["pos"]]
        q = ref.final_probs[r["pos"]]
        assert r["token_id"] == prompt["token_ids"][r["pos"]]
        ours = np.array(r["topk_probs"])
        assert np.all(np.diff(ours) <= 0), "top-k must be sorted"
        worst = max(worst, np.abs(ours - p[r["topk_ids"]]).max(), np.abs(ours - np.sort(p)[::-1][: len(ours)]).max())
        assert r["topk_tokens"] == [prompt_vocab(summary, i) for i in r["topk_ids"]]
        assert r["entropy_bits"] == pytest.approx(entropy_bits(p), abs=2e-4)
        assert r["kl_to_final_bits"] == pytest.approx(max(0.0, kl_bits(p, q)), abs=2e-4)
        assert r["cos_to_final"] == pytest.approx(cosine(ref.logits[r["lens"]][r["layer"], r["pos"]], ref.final_logits[r["pos"]]), abs=1e-5)
        if r["lens"] != "norm":
            p_norm = ref.probs["norm"][r["layer"], r["pos"]]
            assert r["kl_vs_norm_bits"] == pytest.approx(max(0.0, kl_bits(p_norm, p)), abs=2e-4)
        _check_gold(r["p_answer"], r["answer_rank"], prompt["gold_first_id"], p)
        _check_gold(r["p_paired_answer"], r["paired_answer_rank"], prompt["paired_gold_first_id"], p)
    assert worst <= PROB_TOL


def _check_gold(p_value, rank, token, probs):
    if token is None:
        assert p_value is None and rank is None
        return
    assert p_value == pytest.approx(probs[token], abs=PROB_TOL)
    low, high = rank_bounds(probs, token)
    assert low <= rank <= high


_VOCABS = {}


def prompt_vocab(summary, token_id):
    """Token strings as the tokenizer decodes a single id (independent of lensdb's vocabulary table)."""
    from transformers import AutoTokenizer

    key = str(summary.path)
    if key not in _VOCABS:
        manifest = read_table(summary.path, "manifest")[0]
        _VOCABS[key] = AutoTokenizer.from_pretrained(manifest["model_path"])
    return _VOCABS[key].decode([token_id])


def is_softcapped(summary) -> bool:
    return read_table(summary.path, "consistency")[0]["cfg_softcap"] is not None


def test_final_ln_last_layer_is_the_model_output(extracted):
    model_dir, summary = extracted
    if is_softcapped(summary):
        pytest.skip("the head soft-caps its logits: see test_softcapped_head_is_flagged")
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    n_layers = read_table(summary.path, "manifest")[0]["n_layers"]
    finals = {(f["prompt_id"], f["prompt_variant"]): f for f in read_table(summary.path, "finals") if f["temperature"] == 1.0}
    for r in read_table(summary.path, "records"):
        if r["lens"] != "final_ln" or r["layer"] != n_layers:
            continue
        ref = reference_lens(str(model_dir), prompts[(r["prompt_id"], r["prompt_variant"])]["token_ids"])
        head = ref.final_probs[r["pos"]]
        assert np.abs(np.array(r["topk_probs"]) - head[r["topk_ids"]]).max() <= PROB_TOL
        assert r["kl_to_final_bits"] < 1e-5
        assert r["cos_to_final"] == pytest.approx(1.0, abs=1e-5)
        if r["pos"] == prompts[(r["prompt_id"], r["prompt_variant"])]["n_tokens"] - 1:
            final = finals[(r["prompt_id"], r["prompt_variant"])]
            assert final["topk_ids"][: len(r["topk_ids"])] == r["topk_ids"] or np.allclose(
                final["topk_probs"][:20], r["topk_probs"], atol=PROB_TOL
            )
            assert final["entropy_bits"] == pytest.approx(entropy_bits(head), abs=2e-4)


def test_finals_and_temperatures(extracted):
    model_dir, summary = extracted
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    finals = read_table(summary.path, "finals")
    expected = {(pid, var, t) for (pid, var), p in prompts.items() for t in (1.0, *p["temperatures"])}
    assert {(f["prompt_id"], f["prompt_variant"], f["temperature"]) for f in finals} == expected
    for f in finals:
        prompt = prompts[(f["prompt_id"], f["prompt_variant"])]
        ref = reference_lens(str(model_dir), prompt["token_ids"], lenses=())
        logits = ref.final_logits[-1] / f["temperature"]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        assert np.abs(np.array(f["topk_probs"]) - p[f["topk_ids"]]).max() <= PROB_TOL
        assert np.abs(np.array(f["topk_probs"]) - np.sort(p)[::-1][: len(f["topk_probs"])]).max() <= PROB_TOL
        assert f["entropy_bits"] == pytest.approx(entropy_bits(p), abs=2e-4)


def test_softcapped_head_is_flagged(tiny_gemma2, tiny_prompts, tmp_path):
    summary = run_extract(tiny_gemma2, tiny_prompts, tmp_path / "warehouse", lenses=("norm",))
    manifest = read_table(summary.path, "manifest")[0]
    assert manifest["last_layer_flagged"] and manifest["last_layer_max_kl_bits"] > 1e-3
    for row in read_table(summary.path, "consistency"):
        assert row["cfg_softcap"] == 3.0 and row["cfg_scale"] is None
        assert row["kl_after_softcap_bits"] < 1e-5 < row["kl_after_temp_bits"]


def test_consistency_rows(extracted):
    model_dir, summary = extracted
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    manifest = read_table(summary.path, "manifest")[0]
    if not is_softcapped(summary):
        assert manifest["last_layer_max_kl_bits"] < 1e-3 and not manifest["last_layer_flagged"]
        assert manifest["last_layer_top1_agreement"] == 1.0
    grid = np.logspace(-1, 1, 25, dtype=np.float32)
    for row in read_table(summary.path, "consistency"):
        ref = reference_lens(str(model_dir), prompts[(row["prompt_id"], row["prompt_variant"])]["token_ids"])
        z = ref.logits[row["lens"]][-1, -1]
        head = ref.final_probs[-1]
        kls = []
        for s in grid:
            p = np.exp(z / s - (z / s).max())
            kls.append(kl_bits(p / p.sum(), head))
        best = int(np.argmin(kls))
        assert row["kl_after_temp_bits"] == pytest.approx(max(0.0, kls[best]), abs=2e-4)
        # temp_est is a grid point whose KL is the minimum (near-ties may pick a neighbour)
        chosen = int(np.argmin(np.abs(grid - row["temp_est"])))
        assert math.isclose(row["temp_est"], float(grid[chosen]), rel_tol=1e-6)
        assert kls[chosen] == pytest.approx(kls[best], abs=2e-4)


def test_keep_residuals_stores_the_models_residual_stream(tiny_llama, tiny_prompts, tmp_path):
    import lensdb

    summary = run_extract(tiny_llama, tiny_prompts, tmp_path / "warehouse", lenses=("norm",), keep_residuals=True)
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    n_layers = read_table(summary.path, "manifest")[0]["n_layers"]
    rows = lensdb.query(
        "SELECT prompt_id, prompt_variant, layer, pos, resid FROM v1.residuals", warehouse=tmp_path / "warehouse"
    ).to_pylist()
    assert len(rows) == sum(p["n_tokens"] for p in prompts.values()) * (n_layers + 1)
    for key, prompt in prompts.items():
        ref, _ = residual_stream(str(tiny_llama), prompt["token_ids"])
        mine = {(r["layer"], r["pos"]): r["resid"] for r in rows if (r["prompt_id"], r["prompt_variant"]) == key}
        for (layer, pos), vector in mine.items():
            assert np.allclose(vector, ref[layer][pos].numpy(), atol=1e-5)



def test_vocab_table_is_the_tokenizers_vocabulary(extracted):
    """v1.vocab: every id's piece as the tokenizer lists it and its decoded text; joined on
    records' ids it gives back their token strings."""
    import lensdb
    from transformers import AutoTokenizer

    _model_dir, summary = extracted
    manifest = read_table(summary.path, "manifest")[0]
    tokenizer = AutoTokenizer.from_pretrained(manifest["model_path"])
    warehouse = summary.path.parent.parent.parent
    vocab = lensdb.query(f"SELECT * FROM v1.vocab WHERE run_id = '{summary.run_id}' ORDER BY token_id", warehouse=warehouse).to_pylist()
    assert [row["token_id"] for row in vocab] == list(range(manifest["d_vocab"]))
    for row in vocab:
        i = row["token_id"]
        assert row["piece"] == (tokenizer.convert_ids_to_tokens(i) if i < len(tokenizer) else None)
        assert row["text"] == (tokenizer.decode([i]) if i < len(tokenizer) else "")
    joined = lensdb.query(
        f"""SELECT count(*) AS pairs, count(*) FILTER (WHERE token IS DISTINCT FROM text) AS mismatches
            FROM (SELECT r.topk_tokens[j] AS token, v.text
                  FROM v1.records r, range(1, len(r.topk_ids) + 1) t(j)
                  JOIN v1.vocab v ON v.run_id = r.run_id AND v.token_id = r.topk_ids[j]
                  WHERE r.run_id = '{summary.run_id}')""",
        warehouse=warehouse,
    ).to_pylist()[0]
    listed = sum(len(r["topk_ids"]) for r in read_table(summary.path, "records"))
    assert joined == {"pairs": listed, "mismatches": 0}
    if manifest["model"] == "stories260K":  # SentencePiece: the bare word-start piece decodes to ""
        blank = [row for row in vocab if row["text"] == "" and row["piece"] == "\u2581"]
        assert len(blank) == 1

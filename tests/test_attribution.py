"""--attribution checked against an independent decomposition from the Hugging Face model's own
modules (forward hooks on each block's attention branch, plain torch for the final norm), on
every architecture family the tests build; the identities recomputed from the stored rows."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import pytest
import torch

from tests.conftest import TINY_PROMPTS, write_jsonl
from tests.reference import load_hf
from tests.test_extract_correctness import STORY_PROMPTS, read_table, run_extract

CONTRIBUTION_TOL = 1e-4  # absolute, in logit units (|logits| are O(1-10) here)
WORDS = ["Berlin", "Paris", "Lily", "Tom"]


def hf_decomposition(model_dir, token_ids):
    """(embed + per block [attn, mlp]) vectors (C, n, d) float64, and the final residual, from HF
    hooks: the attention branch is what the block adds after attention (Gemma-2: after its
    post-attention norm), the MLP branch the rest of the block's update."""
    model = load_hf(str(model_dir))
    if hasattr(model, "transformer"):  # GPT-2
        blocks = model.transformer.h
        branch = [b.attn for b in blocks]
    elif hasattr(model, "gpt_neox"):  # parallel blocks: attention and MLP read the same input
        blocks = model.gpt_neox.layers
        branch = [b.attention for b in blocks]
    else:
        blocks = model.model.layers
        branch = [getattr(b, "post_attention_layernorm") if hasattr(b, "pre_feedforward_layernorm") else b.self_attn for b in blocks]
    inputs, outputs, attn = {}, {}, {}
    handles = []
    for i, block in enumerate(blocks):
        handles.append(block.register_forward_pre_hook(lambda m, a, k, i=i: inputs.__setitem__(i, (a[0] if a else k["hidden_states"])[0].double()), with_kwargs=True))
        handles.append(block.register_forward_hook(lambda m, a, o, i=i: outputs.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0].double())))
        handles.append(branch[i].register_forward_hook(lambda m, a, o, i=i: attn.__setitem__(i, (o[0] if isinstance(o, tuple) else o)[0].double())))
    try:
        with torch.no_grad():
            out = model(torch.tensor([token_ids]))
    finally:
        for handle in handles:
            handle.remove()
    parts = [inputs[0]]
    for i in range(len(blocks)):
        parts += [attn[i], outputs[i] - inputs[i] - attn[i]]
    return torch.stack(parts), outputs[len(blocks) - 1], out.logits[0].double(), model


def final_norm_module(model):
    if hasattr(model, "transformer"):
        return model.transformer.ln_f
    if hasattr(model, "gpt_neox"):
        return model.gpt_neox.final_layer_norm
    return model.model.norm


def final_norm_params(model):
    """(kind, eps, gain, bias) of the model's final norm, read from the HF module."""
    if isinstance(final_norm_module(model), torch.nn.LayerNorm):
        ln = final_norm_module(model)
        return "layer", ln.eps, ln.weight.double(), ln.bias.double()
    norm = model.model.norm
    eps = getattr(norm, "variance_epsilon", getattr(norm, "eps", None))
    gain = norm.weight.double() + 1.0 if type(norm).__name__.startswith("Gemma") else norm.weight.double()
    return "rms", eps, gain, None


@torch.no_grad()
def independent_attributions(model_dir, token_ids):
    parts, final, logits, model = hf_decomposition(model_dir, token_ids)
    kind, eps, gain, bias = final_norm_params(model)
    centre = (lambda x: x - x.mean(-1, keepdim=True)) if kind == "layer" else (lambda x: x)
    scale = torch.rsqrt(centre(final).pow(2).mean(-1, keepdim=True) + eps)  # (n, 1)
    head = model.get_output_embeddings()
    unembed = head.weight.double()  # (V, d)
    head_bias = head.bias.double() if head.bias is not None else None
    contributions = (centre(parts) * scale * gain) @ unembed.T  # (C, n, V)
    offset = (bias @ unembed.T if bias is not None else torch.zeros(unembed.shape[0], dtype=torch.float64))
    if head_bias is not None:
        offset = offset + head_bias
    # the logit through the final norm (the model's own module), before any softcap
    with torch.no_grad():
        logit = head(final_norm_module(model)(final.float())).double()
    return parts, final, contributions, offset, logit, logits


def build_tiny_neox(path):
    """GPT-NeoX with parallel blocks (use_parallel_residual): no residual between attention and MLP."""
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    from tests.conftest import _byte_bpe_tokenizer, save_with_random_layernorms

    tokenizer = _byte_bpe_tokenizer()
    torch.manual_seed(0)
    config = GPTNeoXConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, vocab_size=len(tokenizer),
                           max_position_embeddings=64, use_parallel_residual=True, bos_token_id=tokenizer.bos_token_id,
                           eos_token_id=tokenizer.eos_token_id, tie_word_embeddings=False)
    model = GPTNeoXForCausalLM(config)
    return save_with_random_layernorms(model, tokenizer, path)


@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_llama", "tiny_gemma2", "stories_model", "tiny_neox"])
def attributed(request, tmp_path_factory, tiny_prompts):
    name = request.param
    if name == "tiny_neox":
        model_dir = build_tiny_neox(tmp_path_factory.mktemp("models") / "tiny-neox")
    else:
        model_dir = request.getfixturevalue(name)
    tmp = tmp_path_factory.mktemp(f"attr-{name}")
    prompts = tiny_prompts if name != "stories_model" else write_jsonl(tmp / "story.jsonl", STORY_PROMPTS)
    summary = run_extract(model_dir, prompts, tmp / "warehouse", dtype="float32", lenses=("norm",), attribution=True,
                          track=["names=" + ",".join(WORDS)])
    return model_dir, summary


def _group_ids(model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    ids = set()
    for word in WORDS:
        for text in (word, " " + word):
            for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
                if token == tokenizer.unk_token_id:
                    break
                if tokenizer.decode([token]).strip():
                    ids.add(token)
                    break
    return sorted(ids)


def test_components_decompose_the_final_residual(attributed):
    """embed + every attention and MLP branch = the final residual (HF modules), so the
    attributions below are of a complete decomposition."""
    model_dir, summary = attributed
    for prompt in read_table(summary.path, "prompts"):
        parts, final, *_ = independent_attributions(model_dir, prompt["token_ids"])
        error = (parts.sum(0) - final).norm(dim=-1) / final.norm(dim=-1)
        assert float(error.max()) < 1e-4


def test_every_contribution_matches_the_independent_decomposition(attributed):
    model_dir, summary = attributed
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    rows = read_table(summary.path, "attributions")
    n_layers = read_table(summary.path, "manifest")[0]["n_layers"]
    group_ids = _group_ids(model_dir)
    by_key = defaultdict(list)
    for r in rows:
        by_key[(r["prompt_id"], r["prompt_variant"], r["pos"], r["target"], r["group_name"])].append(r)
    worst = 0.0
    for key, prompt in prompts.items():
        _, _, contributions, offset, logit, final_logits = independent_attributions(model_dir, prompt["token_ids"])
        for pos in range(prompt["n_tokens"]):
            expected_targets = {("top1", None): int(final_logits[pos].argmax())}
            if prompt["gold_first_id"] is not None:
                expected_targets[("gold", None)] = prompt["gold_first_id"]
            if group_ids:
                expected_targets[("group", "names")] = group_ids[int(final_logits[pos, group_ids].argmax())]
            stored_targets = {(t, g) for (pid, var, p, t, g) in by_key if (pid, var, p) == (*key, pos)}
            assert stored_targets == set(expected_targets)
            for (target, group), token in expected_targets.items():
                mine = by_key[(*key, pos, target, group)]
                assert len(mine) == 2 * n_layers + 1
                assert {r["token_id"] for r in mine} == {token}
                for r in mine:
                    index = 0 if r["component"] == "embed" else 1 + 2 * r["block"] + (r["component"] == "mlp")
                    assert r["layer"] == (0 if r["component"] == "embed" else r["block"] + 1)
                    worst = max(worst, abs(r["contribution"] - float(contributions[index, pos, token])))
                # the identity, from the stored rows: contributions add up to logit - offset
                total = sum(r["contribution"] for r in mine)
                assert total == pytest.approx(mine[0]["logit"] - mine[0]["logit_offset"], abs=CONTRIBUTION_TOL)
                assert mine[0]["logit"] == pytest.approx(float(logit[pos, token]), abs=CONTRIBUTION_TOL)
                assert mine[0]["logit_offset"] == pytest.approx(float(offset[token]), abs=CONTRIBUTION_TOL)
    assert worst <= CONTRIBUTION_TOL


def test_attributions_view(attributed):
    import lensdb

    _, summary = attributed
    with lensdb.connect(summary.path.parent.parent.parent) as con:
        stored = read_table(summary.path, "attributions")
        got = con.execute(
            "SELECT count(*), sum(contribution) FROM v1.attributions WHERE run_id = ?", [summary.run_id]
        ).fetchone()
        assert got[0] == len(stored)
        assert got[1] == pytest.approx(sum(r["contribution"] for r in stored), rel=1e-5, abs=1e-4)
        # the per-layer summary: every layer's attention and MLP for the last position's top-1
        layers = con.execute(
            "SELECT count(DISTINCT layer) FROM v1.attribution_by_layer WHERE run_id = ? AND target = 'top1'", [summary.run_id]
        ).fetchone()[0]
        assert layers == read_table(summary.path, "manifest")[0]["n_layers"] + 1


def test_plot_attribution_draws_the_stored_rows(attributed, tmp_path):
    import lensdb.plot
    from lensdb.errors import LensdbError
    from lensdb.plot import attribution_data, data

    _, summary = attributed
    warehouse = summary.path.parent.parent.parent
    prompt = read_table(summary.path, "prompts")[0]
    rows = [r for r in read_table(summary.path, "attributions")
            if (r["prompt_id"], r["prompt_variant"]) == (prompt["prompt_id"], prompt["prompt_variant"]) and r["is_last_pos"] and r["target"] == "top1"]
    with data.Warehouse(warehouse) as db:
        found = attribution_data.layer_attribution(db, db.run(summary.run_id), prompt["prompt_id"], variant=prompt["prompt_variant"])
    for component, values in (("attn", found.attn), ("mlp", found.mlp)):
        expected = {r["layer"]: r["contribution"] for r in rows if r["component"] == component}
        assert dict(zip(found.blocks, values)) == pytest.approx(expected, abs=1e-6)
    assert found.cumulative[-1] == pytest.approx(sum(r["contribution"] for r in rows), abs=1e-4)
    out = lensdb.plot.write("attribution", tmp_path / "a.png", run=summary.run_id, prompt=prompt["prompt_id"],
                            variant=prompt["prompt_variant"], warehouse=warehouse)
    assert out.stat().st_size > 0
    fig = lensdb.plot.attribution(run=summary.run_id, prompt=prompt["prompt_id"], variant=prompt["prompt_variant"], warehouse=warehouse,
                                  backend="plotly")
    assert [t.meta["role"] for t in fig.data] == ["embed", "attn", "mlp", "cumulative"]
    with pytest.raises(LensdbError, match="goes with --target group"):
        lensdb.plot.attribution(run=summary.run_id, prompt=prompt["prompt_id"], variant=prompt["prompt_variant"], warehouse=warehouse,
                                target="group")

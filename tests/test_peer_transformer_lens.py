"""lensdb against a peer: TransformerLens's own logit lens and direct logit attribution.

transformer-lens 4 removed HookedTransformer; its replacement is TransformerBridge with
`enable_compatibility_mode()` (HookedTransformer's load-time processing), and the peer's
computations are its ActivationCache methods: `accumulated_resid(apply_ln=True)` then
`unembed` (the logit lens) and `decompose_resid(apply_ln=True)` dotted with `W_U[:, t]`
(direct logit attribution). The peer runs with fold_ln=True (the norm's weight folded into
W_U and its bias into b_U, as its DLA expects) and without weight or unembedding centring,
which would move every logit of a position by a constant and so change attributions.

Known difference: on an unfolded model (the bridge's default, and lensdb's: the model's own
weights), TransformerLens's `apply_ln_to_stack` applies the frozen scale but not the final
norm's weight, so its attributions do not add up to the logit. An independent computation
(plain torch on the Hugging Face model) says lensdb is right there.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytest.importorskip("transformer_lens")
import torch  # noqa: E402

from tests.reference import load_hf  # noqa: E402
from tests.test_extract_correctness import read_table, run_extract  # noqa: E402

PROB_TOL = 1e-5
ATTRIBUTION_TOL = 1e-4


def peer(model_dir, *, folded: bool = True):
    from transformer_lens.model_bridge import TransformerBridge

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bridge = TransformerBridge.boot_transformers(str(model_dir), device="cpu", dtype=torch.float32)
        bridge.eval()
        if folded:
            bridge.enable_compatibility_mode(disable_warnings=True, fold_ln=True, center_writing_weights=False, center_unembed=False,
                                             fold_value_biases=False)
    return bridge


@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_llama"])
def compared(request, tmp_path_factory, tiny_prompts):
    model_dir = request.getfixturevalue(request.param)
    summary = run_extract(model_dir, tiny_prompts, tmp_path_factory.mktemp("peer") / "warehouse", dtype="float32",
                          lenses=("final_ln",), attribution=True)
    return model_dir, summary, peer(model_dir)


def _prompts(summary):
    return {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}


def test_logit_lens_matches_transformer_lens(compared):
    _, summary, bridge = compared
    prompts = _prompts(summary)
    peer_probs = {}
    with torch.no_grad():
        for key, prompt in prompts.items():
            _, cache = bridge.run_with_cache(torch.tensor([prompt["token_ids"]]))
            accumulated = cache.accumulated_resid(apply_ln=True)[:, 0]  # (n_layers + 1, n, d)
            peer_probs[key] = torch.softmax(bridge.unembed(accumulated).double(), dim=-1).numpy()
    worst = 0.0
    for r in read_table(summary.path, "records"):
        theirs = peer_probs[(r["prompt_id"], r["prompt_variant"])][r["layer"], r["pos"]]
        worst = max(worst, float(np.abs(np.array(r["topk_probs"]) - theirs[r["topk_ids"]]).max()))
        if r["p_answer"] is not None:
            worst = max(worst, abs(r["p_answer"] - theirs[prompts[(r["prompt_id"], r["prompt_variant"])]["gold_first_id"]]))
    assert worst <= PROB_TOL


def _peer_contributions(bridge, token_ids):
    """(C, n, d) TransformerLens's own decomposition with the final norm applied (embed and
    pos_embed summed into one embedding part, as lensdb stores it), and its W_U and b_U."""
    _, cache = bridge.run_with_cache(torch.tensor([token_ids]))
    stack, labels = cache.decompose_resid(apply_ln=True, return_labels=True)
    stack = stack[:, 0]
    n_embed = sum(label in ("embed", "pos_embed") for label in labels)
    return torch.cat([stack[:n_embed].sum(0, keepdim=True), stack[n_embed:]]), labels[n_embed:]


def test_attributions_match_transformer_lens(compared):
    _, summary, bridge = compared
    prompts = _prompts(summary)
    rows = read_table(summary.path, "attributions")
    worst, checked = 0.0, 0
    with torch.no_grad():
        stacks = {key: _peer_contributions(bridge, p["token_ids"]) for key, p in prompts.items()}
        for r in rows:
            stack, labels = stacks[(r["prompt_id"], r["prompt_variant"])]
            index = 0 if r["component"] == "embed" else 1 + labels.index(f"{r['block']}_{r['component']}_out")
            theirs = float(stack[index, r["pos"]] @ bridge.W_U[:, r["token_id"]])
            worst = max(worst, abs(r["contribution"] - theirs))
            # folding moves the norm's bias into b_U: the peer's b_U is lensdb's logit_offset
            worst = max(worst, abs(r["logit_offset"] - float(bridge.b_U[r["token_id"]])))
            checked += 1
    assert checked == len(rows) > 0
    assert worst <= ATTRIBUTION_TOL


def test_unfolded_peer_misses_the_norm_weight_and_lensdb_is_right(tiny_llama, compared):
    """On the model's own (unfolded) weights, TransformerLens's apply_ln_to_stack leaves out the
    final norm's weight: its attributions times that weight are lensdb's, and only lensdb's add
    up to the logit that plain torch computes from the Hugging Face model."""
    model_dir, summary, _ = compared
    if model_dir != tiny_llama:
        pytest.skip("the RMSNorm model shows it (the GPT-2 case is the same with the bias)")
    unfolded = peer(model_dir, folded=False)
    gain = unfolded.ln_final._original_component.weight.detach().double()
    hf = load_hf(str(model_dir))
    prompts = _prompts(summary)
    rows = [r for r in read_table(summary.path, "attributions") if r["is_last_pos"] and r["target"] == "top1"]
    for key, prompt in prompts.items():
        mine = [r for r in rows if (r["prompt_id"], r["prompt_variant"]) == key]
        token = mine[0]["token_id"]
        with torch.no_grad():
            stack, labels = _peer_contributions(unfolded, prompt["token_ids"])
            direction = unfolded.W_U[:, token].double()
            theirs = stack[:, -1].double() @ direction
            with_gain = (stack[:, -1].double() * gain) @ direction
            # independent: the logit through the model's own final norm and head (HF, plain torch)
            out = hf(torch.tensor([prompt["token_ids"]]), output_hidden_states=True)
            logit = float(out.logits[0, -1, token])  # Llama: no softcap, no head bias
        ours = np.array([r["contribution"] for r in sorted(mine, key=lambda r: (r["layer"], r["component"] != "attn"))])
        assert ours.sum() == pytest.approx(logit, abs=ATTRIBUTION_TOL)  # lensdb adds up to the logit
        assert abs(float(theirs.sum()) - logit) > 10 * ATTRIBUTION_TOL  # the unfolded peer does not
        assert np.abs(ours - with_gain.numpy()).max() <= ATTRIBUTION_TOL  # because it leaves out the weight
        assert labels == [f"{b}_{c}_out" for b in range(len(labels) // 2) for c in ("attn", "mlp")]

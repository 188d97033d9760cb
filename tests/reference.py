"""An independent logit lens: plain Hugging Face, one prompt at a time, no padding, no lensdb code.

Residuals come from forward hooks on the decoder layers (and `output_hidden_states[0]` for
the embeddings); norms are the model's own modules; logits go through the model's own
`lm_head`; statistics are computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch


@dataclass
class ReferenceLens:
    probs: dict[str, np.ndarray]  # lens -> (n_layers + 1, n_tokens, vocab) float64
    final_probs: np.ndarray  # (n_tokens, vocab) float64: the model's own distribution
    final_logits: np.ndarray  # (n_tokens, vocab)
    logits: dict[str, np.ndarray]


@lru_cache(maxsize=4)
def load_hf(model_dir: str):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation="eager", dtype=torch.float32)
    return model.eval()


def _parts(model):
    if hasattr(model, "transformer"):  # GPT-2
        blocks = model.transformer.h
        return blocks, [b.ln_1 for b in blocks], model.transformer.ln_f
    blocks = model.model.layers  # Llama family
    return blocks, [b.input_layernorm for b in blocks], model.model.norm


def residual_stream(model_dir: str, token_ids: list[int]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The residual at layers 0..n_layers: the embeddings (hidden_states[0]), then each decoder
    block's output (forward hooks: Hugging Face's last hidden state is after the final norm);
    and the model's own logits."""
    model = load_hf(str(model_dir))
    blocks, _, _ = _parts(model)
    outputs: list[torch.Tensor] = []
    handles = [block.register_forward_hook(lambda m, i, o: outputs.append(o[0] if isinstance(o, tuple) else o)) for block in blocks]
    try:
        with torch.no_grad():
            out = model(torch.tensor([token_ids]), output_hidden_states=True)
    finally:
        for handle in handles:
            handle.remove()
    return [out.hidden_states[0][0]] + [o[0] for o in outputs], out.logits[0]


def layers_and_norms(model):
    """Decoder layers, each layer's attention module, the norm after attention where the model
    has one (Gemma-2's post_attention_layernorm), the norm the MLP reads through, the final norm."""
    if hasattr(model, "transformer"):  # GPT-2
        blocks = list(model.transformer.h)
        return blocks, [b.attn for b in blocks], [None] * len(blocks), [b.ln_2 for b in blocks], model.transformer.ln_f
    blocks = list(model.model.layers)
    if hasattr(blocks[0], "pre_feedforward_layernorm"):  # Gemma-2: attention output normed before the add
        return blocks, [b.self_attn for b in blocks], [b.post_attention_layernorm for b in blocks], [b.pre_feedforward_layernorm for b in blocks], model.model.norm
    return blocks, [b.self_attn for b in blocks], [None] * len(blocks), [b.post_attention_layernorm for b in blocks], model.model.norm


def mid_residuals(model_dir: str, token_ids: list[int]) -> list[torch.Tensor]:
    """Every block's mid residual (n_tokens, d_model): the block's input plus its attention
    output (normed where the model norms it), from forward hooks on the model's own modules."""
    model = load_hf(str(model_dir))
    blocks, attentions, post_attention, _, _ = layers_and_norms(model)
    inputs, attention_outputs = {}, {}

    def keep_input(i):
        def hook(module, args, kwargs):
            inputs[i] = args[0] if args else kwargs["hidden_states"]

        return hook

    def keep_attention(i):
        def hook(module, args, output):
            attention_outputs[i] = output[0] if isinstance(output, tuple) else output

        return hook

    handles = [b.register_forward_pre_hook(keep_input(i), with_kwargs=True) for i, b in enumerate(blocks)]
    handles += [a.register_forward_hook(keep_attention(i)) for i, a in enumerate(attentions)]
    try:
        with torch.no_grad():
            model(torch.tensor([token_ids]))
            mids = []
            for i in range(len(blocks)):
                attention = attention_outputs[i][0]
                if post_attention[i] is not None:
                    attention = post_attention[i](attention)
                mids.append(inputs[i][0] + attention)
    finally:
        for handle in handles:
            handle.remove()
    return mids


def reference_lens(model_dir: str, token_ids: list[int], lenses=("norm", "final_ln", "raw")) -> ReferenceLens:
    model = load_hf(str(model_dir))
    blocks, input_norms, final_norm = _parts(model)
    residuals, final_logits = residual_stream(model_dir, token_ids)
    n_layers = len(blocks)
    probs, logits_by_lens = {}, {}
    with torch.no_grad():
        for lens in lenses:
            per_layer = []
            for layer, resid in enumerate(residuals):
                if lens == "raw":
                    normed = resid
                elif lens == "final_ln" or layer == n_layers:
                    normed = final_norm(resid)
                else:
                    normed = input_norms[layer](resid)
                per_layer.append(model.lm_head(normed).double())
            stacked = torch.stack(per_layer)
            logits_by_lens[lens] = stacked.numpy()
            probs[lens] = torch.softmax(stacked, dim=-1).numpy()
    final_logits = final_logits.double()
    return ReferenceLens(
        probs=probs,
        final_probs=torch.softmax(final_logits, dim=-1).numpy(),
        final_logits=final_logits.numpy(),
        logits=logits_by_lens,
    )


def entropy_bits(p: np.ndarray) -> float:
    nz = p[p > 0]
    return float(-(nz * np.log(nz)).sum() / math.log(2))


def kl_bits(p: np.ndarray, q: np.ndarray) -> float:
    mask = p > 0
    return float((p[mask] * (np.log(p[mask]) - np.log(q[mask]))).sum() / math.log(2))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def rank_bounds(p: np.ndarray, token: int, tol: float = 1e-6) -> tuple[int, int]:
    """Ranks compatible with p up to `tol` (ties within float32 noise may order either way)."""
    target = p[token]
    others = np.delete(p, token)
    return 1 + int((others > target + tol).sum()), 1 + int((others > target - tol).sum())

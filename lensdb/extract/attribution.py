"""Direct logit attribution (`extract --attribution`): what the embedding and each block's
attention and MLP write into the residual stream, read through the final norm with its
scale frozen at the last layer.

A component's contribution is what it actually adds to the residual stream, not a
sub-module's output (TransformerLens#828/#523: `hook_attn_out` misses Gemma-2's
post-attention norm):

    sequential blocks   attn_b = resid_mid_b - resid_pre_b   (any post-attention norm included)
                        mlp_b  = resid_post_b - resid_mid_b
    parallel blocks     attn_b = hook_attn_out, mlp_b = hook_mlp_out (GPT-J / NeoX / Phi: no
                        mid residual); checked to sum to resid_post_b - resid_pre_b

so that embed + sum of all components = the final residual x. With the final norm's
frozen scale s = 1 / sqrt(mean(centre(x)^2) + eps) (centre: minus the mean for LayerNorm,
the identity for RMSNorm) and its weight g (Gemma's 1 + w), the logit of token t is

    logit_t = sum_c  W_U[:, t] . (g * centre(c) * s)   +   (beta . W_U[:, t] + b_U[t])

where the last term (`offset`) is the norm's bias and the unembedding's bias. Gemma-2's
final softcap is not linear: contributions add up to the logit before the softcap.

| function           | does                                                                 |
| ------------------ | -------------------------------------------------------------------- |
| `component_hooks`  | the extra hook names a model needs (mid residuals or output hooks)     |
| `components`       | captured residuals (+ extra hooks) -> (2 n_layers + 1, rows, d) vectors |
| `frozen_scale`     | the final norm's per-row scale at the last layer                       |
| `contributions`    | component vectors x target tokens -> (components, rows, targets)       |
| `target_offsets`   | the norm bias and unembedding bias term of each target token           |
"""

from __future__ import annotations

import torch

from lensdb.extract.lens import Norm

PARALLEL_TOLERANCE = 1e-4  # relative: attn + mlp outputs vs resid_post - resid_pre


def is_parallel(model) -> bool:
    """GPT-J / NeoX / Phi style blocks: attention and MLP read the same input (no mid residual)."""
    cfg = getattr(model.bridge, "cfg", None)
    return bool(getattr(cfg, "parallel_attn_mlp", False))


def component_hooks(n_layers: int, parallel: bool) -> list[str]:
    if parallel:
        return [f"blocks.{i}.hook_attn_out" for i in range(n_layers)] + [f"blocks.{i}.hook_mlp_out" for i in range(n_layers)]
    return [f"blocks.{i}.hook_resid_mid" for i in range(n_layers)]


def components(residuals: torch.Tensor, extra: torch.Tensor, parallel: bool) -> torch.Tensor:
    """residuals (n_layers + 1, rows, d): layer 0 = the embedding, layer i = after block i-1;
    `extra` from component_hooks. Returns float32 (2 n_layers + 1, rows, d): the embedding,
    then block 0's attention and MLP, block 1's, ..."""
    x = residuals.float()
    n_layers = x.shape[0] - 1
    if parallel:
        attn, mlp = extra[:n_layers].float(), extra[n_layers:].float()
        delta = x[1:] - x[:-1]
        error = (attn + mlp - delta).norm(dim=-1).max() / delta.norm(dim=-1).max().clamp(min=1e-12)
        if error > PARALLEL_TOLERANCE:
            raise RuntimeError(f"attention + MLP outputs differ from the blocks' residual updates ({float(error):.2e} relative)")
    else:
        mid = extra.float()
        attn, mlp = mid - x[:-1], x[1:] - mid
    pieces = torch.stack([attn, mlp], dim=1).reshape(2 * n_layers, *x.shape[1:])
    return torch.cat([x[:1], pieces])


def frozen_scale(final_residual: torch.Tensor, norm: Norm | None) -> torch.Tensor:
    """(rows, 1): the final norm's 1 / sqrt(mean(centre(x)^2) + eps) at the last layer (1 without a norm)."""
    x = final_residual.float()
    if norm is None:
        return torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)
    if norm.kind == "layer":
        x = x - x.mean(dim=-1, keepdim=True)
    return torch.rsqrt(x.pow(2).mean(dim=-1, keepdim=True) + norm.eps)


def contributions(parts: torch.Tensor, scale: torch.Tensor, norm: Norm | None, unembed: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """parts (C, rows, d) float32; scale (rows, 1); unembed (d_vocab, d_model): the model's own
    W_U rows, any dtype; targets (rows, T) token ids >= 0. Returns float32 (C, rows, T):
    W_U[:, t] . (g * centre(c) * s)."""
    x = parts
    if norm is not None and norm.kind == "layer":
        x = x - x.mean(dim=-1, keepdim=True)
    x = x * scale
    if norm is not None and norm.weight is not None:
        x = x * norm.weight
    directions = unembed[targets].float()  # (rows, T, d)
    return torch.einsum("crd,rtd->crt", x, directions)


def target_offsets(norm: Norm | None, unembed: torch.Tensor, unembed_bias: torch.Tensor | None, targets: torch.Tensor) -> torch.Tensor:
    """(rows, T): beta . W_U[:, t] + b_U[t], the part of the logit no component writes."""
    offset = torch.zeros(targets.shape, dtype=torch.float32, device=targets.device)
    if norm is not None and norm.bias is not None:
        offset = offset + unembed[targets].float() @ norm.bias
    if unembed_bias is not None:
        offset = offset + unembed_bias[targets]
    return offset

"""The forward pass: one function for every batch of prompts.

Prompts are right-padded: under a causal mask a real token never attends to the padding
after it, and its position ids are the same as when it runs alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lensdb.errors import ModelError


@dataclass
class PassOutput:
    residuals: torch.Tensor  # (n_layers + 1, n_real_tokens, d_model), model dtype
    logits: torch.Tensor  # (n_real_tokens, d_vocab), the model's own final logits, float32


def pad_right(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def run_pass(bridge, hook_names: list[str], sequences: list[list[int]], pad_id: int, device: torch.device) -> PassOutput:
    """Run a batch, keeping only the residuals at `hook_names` and the real (unpadded) tokens.

    Rows of the outputs are the prompts' tokens in order: prompt 0's positions, then prompt 1's, ...
    """
    input_ids, attention_mask = pad_right(sequences, pad_id, device)
    real = attention_mask.bool()
    captured: list[torch.Tensor | None] = [None] * len(hook_names)

    def keeper(index: int):
        def hook(activation: torch.Tensor, hook=None):
            captured[index] = activation[real]
            return activation

        return hook

    with torch.inference_mode():
        try:
            logits = bridge.run_with_hooks(
                input_ids,
                fwd_hooks=[(name, keeper(i)) for i, name in enumerate(hook_names)],
                attention_mask=attention_mask,
                return_type="logits",
            )
        except torch.OutOfMemoryError:
            raise ModelError("out of memory in the forward pass: try a smaller --batch-size") from None
        except (RuntimeError, ValueError, TypeError, AttributeError) as exc:
            message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelError(f"the model's forward pass failed under transformer-lens: {message}") from None
        missing = [name for name, tensor in zip(hook_names, captured) if tensor is None]
        if missing:
            raise RuntimeError(f"hooks did not fire: {', '.join(missing)}")
        return PassOutput(residuals=torch.stack(captured), logits=logits[real].float())

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
    residuals: torch.Tensor  # (n_slots, n_real_tokens, d_model), model dtype: one slot per hook (sites.SiteLayout)
    logits: torch.Tensor  # (n_real_tokens, d_vocab), the model's own final logits, float32


def pad_right(sequences: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, ids in enumerate(sequences):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return input_ids.to(device), attention_mask.to(device)


def run_pass(
    bridge,
    hook_names: list[str],
    sequences: list[list[int]],
    pad_id: int,
    device: torch.device,
    lens_device: torch.device | None = None,
) -> PassOutput:
    """Run a batch, keeping only the residuals at `hook_names` and the real (unpadded) tokens.

    Token ids go to `device` (the embedding's); residuals and logits come back on `lens_device`
    (the unembedding's, default `device`). Rows of the outputs are the prompts' tokens in
    order: prompt 0's positions, then prompt 1's, ...
    """
    lens_device = lens_device or device
    input_ids, attention_mask = pad_right(sequences, pad_id, device)
    real_on = _MaskByDevice(attention_mask.bool())
    captured: list[torch.Tensor | None] = [None] * len(hook_names)

    def keeper(index: int):
        def hook(activation: torch.Tensor, hook=None):
            # Layers on other devices (a model split over GPUs) hand their residuals to the
            # lens device right here, device to device, one copy of the real rows only.
            captured[index] = to_device(activation[real_on(activation.device)], lens_device)
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
        return PassOutput(residuals=torch.stack(captured), logits=to_device(logits[real_on(logits.device)], lens_device).float())


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A copy on `device` (the tensor itself if it is there). Copies into a GPU are queued on
    the stream (non_blocking); copies out of a GPU wait, so the host never reads unfinished data."""
    if tensor.device == device:
        return tensor
    return tensor.to(device, non_blocking=device.type == "cuda")


class _MaskByDevice:
    """The batch's real-token mask on each device that asks for it (made once per device)."""

    def __init__(self, mask: torch.Tensor):
        self._masks = {mask.device: mask}

    def __call__(self, device: torch.device) -> torch.Tensor:
        if device not in self._masks:
            self._masks[device] = next(iter(self._masks.values())).to(device)
        return self._masks[device]

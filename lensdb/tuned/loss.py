"""The loss of train-lens and its held-out report: a lens's log-probabilities from a residual,
KL(model's final distribution || lens) in nats, and the mean KL per layer (and site) in bits.

A training reads the residual at *slots* (lensdb/extract/sites.py's SiteLayout): the post
sites 0..n_layers, and with `--sites all` the mid site of every block between them.
"""

from __future__ import annotations

import math

import torch

from lensdb.extract import capture
from lensdb.extract.sites import SiteLayout, site_layout
from lensdb.extract.lens import FINAL_NORM, apply_norm
from lensdb.extract.unembedding import Unembedding
from lensdb.extract.model import LoadedModel
from lensdb.tuned.format import TunedTranslators, lens_logits

# Float32 bytes one loss chunk may hold.
LOSS_CHUNK_BYTES = {"cpu": 64 << 20, "gpu": 512 << 20}
LN2 = math.log(2)


class Decoder:
    """Residual -> lens log-probabilities, and the model's final log-probabilities, float32."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.unembedding = Unembedding(model.unembed_weight, model.unembed_bias, "float32")
        budget = LOSS_CHUNK_BYTES["cpu" if model.device.type == "cpu" else "gpu"]
        self.chunk_tokens = max(1, budget // (4 * 4 * model.d_vocab))  # logits, log-softmax and their gradients

    def log_probs(self, residual: torch.Tensor, translators: TunedTranslators | None, layer: int, site: str = "post") -> torch.Tensor:
        """The tuned lens's log-probabilities at `layer` and `site`; translators None: the final_ln logit lens's."""
        if translators is None:
            logits = self.unembedding(apply_norm(residual.float(), self.model.norms[FINAL_NORM]))
        else:
            logits = lens_logits(translators, self.model, residual, layer, self.unembedding, site)
        return torch.log_softmax(logits, dim=-1)


def kl_nats(target_log_probs: torch.Tensor, lens_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || lens) per row, in nats."""
    return (target_log_probs.exp() * (target_log_probs - lens_log_probs)).sum(dim=-1)


def slots(model: LoadedModel, sites: str = "post") -> SiteLayout:
    """The residuals a training reads: post sites 0..n_layers ("post"), or post and mid ("all")."""
    return site_layout(model.n_layers, sites)


def trained_slots(layout: SiteLayout) -> list[tuple[int, int, str]]:
    """(slot, layer, site) of every slot with a translator to train: all but the last post
    site, whose translator is the identity."""
    return [(slot, int(layout.layers[slot]), str(layout.sites[slot])) for slot in range(layout.n_slots) if slot != layout.last_post]


def forward(model: LoadedModel, windows: torch.Tensor, layout: SiteLayout | None = None) -> capture.PassOutput:
    """One forward pass; residuals[i] is slot i of `layout` (default: the post sites 0..n_layers)."""
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    hooks = list(layout.hooks) if layout is not None else model.residual_hooks()
    return capture.run_pass(model.bridge, hooks, windows.tolist(), pad_id, model.device)


@torch.no_grad()
def site_kl_bits(model: LoadedModel, windows: torch.Tensor, translators: TunedTranslators | None, batch_size: int, sites: str = "post") -> dict[tuple[int, str], float]:
    """Mean KL(final || lens) in bits per (layer, site) over `windows`; translators None:
    the final_ln logit lens."""
    decoder = Decoder(model)
    layout = slots(model, sites)
    if translators is not None:
        translators = translators.to(model.device)
    sums = torch.zeros(layout.n_slots, dtype=torch.float64)
    tokens = 0
    for start in range(0, windows.shape[0], batch_size):
        output = forward(model, windows[start : start + batch_size], layout)
        for slot, (layer, site) in enumerate(zip(layout.layers.tolist(), layout.sites)):
            residual = output.residuals[slot]
            for lo in range(0, residual.shape[0], decoder.chunk_tokens):
                target = torch.log_softmax(output.logits[lo : lo + decoder.chunk_tokens], dim=-1)
                lens = decoder.log_probs(residual[lo : lo + decoder.chunk_tokens], translators, layer, site)
                sums[slot] += kl_nats(target, lens).double().sum().cpu()
        tokens += output.logits.shape[0]
    means = (sums / max(tokens, 1) / LN2).tolist()
    return {(layer, site): kl for layer, site, kl in zip(layout.layers.tolist(), layout.sites, means)}

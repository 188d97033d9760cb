"""Sub-layer sites: where in a block the residual is read (`--sites post|mid|all`).

    post  the residual after each block (layer 0 = embeddings, layer i = after block i-1)
    mid   the residual after block b's attention, before its MLP; stored as layer b + 1
          (the number of the block's post layer), site 'mid', depth b + 0.5

Parallel-block models (GPT-J, GPT-NeoX with use_parallel_residual, Phi, Falcon with
parallel attention) add attention and MLP to the same input: they have no mid residual.

The capture stage reads one residual per *slot*; `SiteLayout` says which hook fills each
slot and which (layer, site) it is. Slots are in forward order (post 0, mid 1, post 1,
mid 2, ...), and the slots that become records come first. No torch here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lensdb.errors import LensdbError

POST, MID = "post", "mid"


@dataclass(frozen=True)
class SiteLayout:
    hooks: tuple[str, ...]  # one transformer-lens hook name per slot
    layers: np.ndarray  # int32 (n_slots,): each slot's layer number
    sites: np.ndarray  # object (n_slots,): 'post' or 'mid'
    n_recorded: int  # slots [0, n_recorded) become records
    last_post: int  # the slot of the post residual at the last layer (the head checks read it)

    @property
    def n_slots(self) -> int:
        return len(self.hooks)

    @property
    def post_only(self) -> bool:
        return bool((self.sites[: self.n_recorded] == POST).all())


def site_layout(n_layers: int, sites: str) -> SiteLayout:
    """The slots for `sites` on a model of `n_layers` blocks."""
    post = [("blocks.0.hook_resid_pre", 0, POST)] + [(f"blocks.{i}.hook_resid_post", i + 1, POST) for i in range(n_layers)]
    mid = [(f"blocks.{i}.hook_resid_mid", i + 1, MID) for i in range(n_layers)]
    if sites == POST:
        slots = post
    elif sites == MID:
        slots = mid + [post[-1]]  # the last post slot only for the head checks, not recorded
    else:
        slots = [post[0]] + [slot for pair in zip(mid, post[1:]) for slot in pair]
    n_recorded = n_layers if sites == MID else len(slots)
    return SiteLayout(
        hooks=tuple(hook for hook, _, _ in slots),
        layers=np.array([layer for _, layer, _ in slots], dtype=np.int32),
        sites=np.array([site for _, _, site in slots], dtype=object),
        n_recorded=n_recorded,
        last_post=len(slots) - 1,
    )


def parallel_block_reason(config, bridge_cfg=None, hook_names=None) -> str | None:
    """Why a model has no mid residual (attention and MLP read the same input), or None."""
    if getattr(bridge_cfg, "parallel_attn_mlp", False):
        return "its blocks run attention and MLP in parallel"
    model_type = getattr(config, "model_type", "")
    if model_type in ("gptj", "phi", "cohere") or getattr(config, "use_parallel_residual", False):
        return "its blocks run attention and MLP in parallel"
    if model_type == "falcon" and (getattr(config, "parallel_attn", False) or getattr(config, "new_decoder_architecture", False)):
        return "its blocks run attention and MLP in parallel"
    if hook_names is not None and "blocks.0.hook_resid_mid" not in hook_names:
        return "transformer-lens exposes no residual between its attention and MLP"
    return None


def resolve_sites(sites: str, model_name: str, reason: str | None) -> tuple[str, str | None]:
    """The sites to extract and a one-line note (or None). `--sites mid` on a model without a
    mid residual is an error; `--sites all` falls back to post with a note."""
    if reason is None or sites == POST:
        return sites, None
    if sites == MID:
        raise LensdbError(f"--sites mid: model {model_name} has no mid residual ({reason}); use --sites post")
    return POST, f"model {model_name} has no mid residual ({reason}): post sites only"


def depth(layer: int, site: str) -> float | int:
    """Where a site lies on the layer axis: post at its layer, mid half a block before."""
    return layer - 0.5 if site == MID else layer

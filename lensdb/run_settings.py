"""The extract settings that change a run's records, as one hash (manifest.settings_sha256).

Two runs of one model with the same prompt-set hash and the same settings hash hold the
same records, so `lensdb sweep` can skip a model that already has such a run. The hash
covers the options as given (`auto` stays `auto`): the lenses (a tuned lens by its
content, params.pt's sha256, not by its path), the reference lens, top-k, dtype, hub
revision, unembedding strategy, --keep-residuals, and --sites, the tracked groups (--track)
and --attribution when not at their defaults (so that runs from before them keep their
hash). Options that only move float
rounding or speed (device, batch size, seed) are left out. No torch here: the sweep
computes the hash before any model loads.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

SETTINGS_VERSION = 1


@dataclass(frozen=True)
class LensIdentity:
    name: str  # records.lens
    kind: str
    sha256: str | None = None  # tuned lenses: sha256 of params.pt


@dataclass(frozen=True)
class RecordSettings:
    lenses: tuple[LensIdentity, ...]
    reference_lens: str | None  # resolved: the lens kl_vs_norm_bits compares with
    top_k: int
    dtype: str  # as requested: auto, float32, float16, bfloat16
    revision: str | None  # as requested (None: the hub's default branch)
    unembed: str  # as requested: auto, float32, split
    keep_residuals: bool
    # issue 20: left out of the hash at their defaults, so earlier runs keep their hash
    sites: str = "post"  # as requested: post, mid or all
    track: tuple[tuple[str, tuple[str, ...]], ...] = ()  # --track: (name, words)
    attribution: bool = False

    def sha256(self) -> str:
        fields = asdict(self)
        for key, default in (("sites", "post"), ("track", ()), ("attribution", False)):
            if fields[key] == default:
                del fields[key]
        payload = {"settings_version": SETTINGS_VERSION, **fields}
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

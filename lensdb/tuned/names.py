"""A lens folder's file names and its identity (no torch: the settings hash reads them
before any model loads). The format itself is lensdb/tuned/format.py."""

from __future__ import annotations

import hashlib

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"
MID_PARAMS_FILE = "params_mid.pt"
SITES_KEY = "lensdb_sites"  # config.json: the sites a lens has translators for (absent: post only)


def combined_sha256(params_sha256: str, mid_sha256: str | None) -> str:
    """A lens's identity: params.pt's sha256 alone (a post-only lens, as tuned-lens has it),
    else the sha256 of "<params.pt's>+<params_mid.pt's>"."""
    if mid_sha256 is None:
        return params_sha256
    return hashlib.sha256(f"{params_sha256}+{mid_sha256}".encode()).hexdigest()

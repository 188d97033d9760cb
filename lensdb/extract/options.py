"""Checks of `extract`'s options that need no model: run before any work, so that a bad
value is one line at once rather than an error at the commit, after the whole extraction.
No torch here (imported by the CLI's checks and tests alike)."""

from __future__ import annotations

from lensdb.errors import LensdbError
from lensdb.warehouse import layout

# torch.manual_seed takes [-2**63, 2**64), the manifest stores an int64: their overlap.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def check_extract_options(*, model: str, model_name: str | None, seed: int, run_id: str | None) -> None:
    """Raise a one-line LensdbError for an option `extract` could not store or use."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not SEED_MIN <= seed <= SEED_MAX:
        raise LensdbError(f"--seed {seed} is outside 64 bits (use an integer from {SEED_MIN} to {SEED_MAX})")
    if not layout.is_utf8(model):
        raise LensdbError(f"MODEL {model!r} is not valid UTF-8 (lensdb stores its path or id as text)")
    if model_name is not None:
        try:
            layout.check_model_name(model_name)
        except LensdbError as exc:
            raise LensdbError(f"--model-name: {exc}") from None
    if run_id is not None:
        layout.check_run_id(run_id)

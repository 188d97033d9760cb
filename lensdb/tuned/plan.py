"""train-lens settings and their plan: the steps, window length, windows per step and
forward-pass batch, resolved against the model and the corpus (no torch needed).

The defaults follow tuned-lens's train loop (lensdb.tuned.train describes the recipe).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lensdb.errors import LensdbError

if TYPE_CHECKING:
    from lensdb.extract.model import LoadedModel

PAPER_STEPS = 250
PAPER_TOKENS_PER_STEP = 2**18
MAX_SEQ_LEN = 2048
EVAL_FRACTION = 0.1
# Float32 bytes one forward pass may hold (residuals and logits).
FORWARD_BYTES = {"cpu": 256 << 20, "gpu": 2 << 30}


@dataclass
class TrainSettings:
    steps: int = PAPER_STEPS
    tokens_per_step: int | None = None  # None: 2^18, at most the training tokens / steps
    lr: float = 1.0  # tuned-lens's lr scale: SGD runs at lr x (1 - momentum)
    momentum: float = 0.9
    weight_decay: float = 1e-3
    seq_len: int | None = None  # None: min(2048, the model's context)
    eval_fraction: float = EVAL_FRACTION
    batch_size: int | None = None  # windows per forward pass; None: by memory
    checkpoint_every: int = 25
    seed: int = 42
    device: str = "auto"
    dtype: str = "auto"
    sites: str = "post"  # "all": a translator for every block's mid site too (lensdb/tuned/format.py)

    @property
    def sites_trained(self) -> tuple[str, ...]:
        return ("post", "mid") if self.sites == "all" else ("post",)

    def check(self) -> None:
        if self.sites not in ("post", "all"):
            raise LensdbError(f"--sites {self.sites}: choose post or all")
        if self.steps < 1:
            raise LensdbError("--steps must be at least 1")
        if self.tokens_per_step is not None and self.tokens_per_step < 1:
            raise LensdbError("--tokens-per-step must be at least 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise LensdbError("--lr must be a positive number")
        if self.seq_len is not None and self.seq_len < 2:
            raise LensdbError("--seq-len must be at least 2")
        if self.seq_len is not None and self.tokens_per_step is not None and self.tokens_per_step < self.seq_len:
            raise LensdbError(f"--tokens-per-step {self.tokens_per_step} is less than one window of {self.seq_len} tokens (lower --seq-len)")
        if not 0 <= self.eval_fraction < 1:
            raise LensdbError("the held-out fraction must be in [0, 1)")
        if self.checkpoint_every < 1:
            raise LensdbError("--checkpoint-every must be at least 1")


@dataclass(frozen=True)
class Plan:
    """The settings resolved against the model and the corpus."""

    steps: int
    seq_len: int
    windows_per_step: int
    batch_size: int
    sgd_lr: float
    train_windows: int
    eval_windows: int

    @property
    def tokens_per_step(self) -> int:
        return self.windows_per_step * self.seq_len


def make_plan(model: LoadedModel, settings: TrainSettings, *, train_windows: int, eval_windows: int) -> Plan:
    seq_len = settings.seq_len or min(MAX_SEQ_LEN, model.n_ctx)
    if settings.tokens_per_step is None:
        windows_per_step = max(1, min(PAPER_TOKENS_PER_STEP // seq_len, train_windows // settings.steps))
    else:
        if settings.tokens_per_step < seq_len:
            raise LensdbError(f"--tokens-per-step {settings.tokens_per_step} is less than one window of {seq_len} tokens (lower --seq-len)")
        windows_per_step = round(settings.tokens_per_step / seq_len)
    gpu = model.device.type != "cpu"
    per_token = 4 * (model.d_vocab + (model.n_layers + 1) * model.d_model)
    by_memory = max(1, FORWARD_BYTES["gpu" if gpu else "cpu"] // (per_token * seq_len))
    batch_size = min(windows_per_step, settings.batch_size or by_memory)
    return Plan(
        steps=settings.steps,
        seq_len=seq_len,
        windows_per_step=windows_per_step,
        batch_size=batch_size,
        sgd_lr=settings.lr * (1 - settings.momentum),
        train_windows=train_windows,
        eval_windows=eval_windows,
    )

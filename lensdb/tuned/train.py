"""`lensdb train-lens`: fit tuned-lens translators to a model on a text corpus.

The recipe of tuned-lens's train loop (`tuned_lens/scripts/train_loop.py`, `ingredients.py`):

- lens at layer i: final_norm(h + W_i h + b_i) @ W_U (+ b_U), translators initialised to
  zero (the identity map), trained for layers 0..n_layers-1; the last layer stays identity.
- loss: KL(model's final distribution || lens distribution) at every position, the mean
  over the step's tokens, summed over layers (each layer's loss back-propagated in turn).
- SGD with Nesterov momentum 0.9, lr = lr_scale x (1 - momentum) (lr_scale 1: PyTorch's
  momentum scales the step by 1 / (1 - momentum)), weight decay 1e-3, no warmup, the lr
  decaying linearly to zero, gradient norm clipped to 1.
- 250 steps of 2^18 tokens, windows of up to 2048 tokens; documents joined by the EOS token.

Scaled to the data given: the tokens per step default to 2^18 but at most the training
tokens / steps (at least one window), so a small corpus is reused in reshuffled passes.
Differences: every window starts with the BOS token as lensdb's prompts do; the lens runs
in float32 (tuned-lens uses bfloat16 autocast); the last windows of the corpus (10 %) are
held out to report each layer's KL.

A checkpoint (translators, optimizer state, step) is saved every `checkpoint_every` steps;
running the same command again continues from it. The window order depends only on the
seed, so a resumed training sees the same data as an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from hashlib import sha256
from importlib import metadata
from pathlib import Path

import torch

import lensdb as lensdb_package
from lensdb.errors import LensdbError, TunedLensError
from lensdb.extract import capture
from lensdb.extract.device import choose_device, choose_dtype
from lensdb.extract.gold import encode
from lensdb.extract.lens import FINAL_NORM, apply_norm
from lensdb.extract.unembedding import Unembedding
from lensdb.extract.model import LoadedModel, check_causal_lm, estimate_weight_bytes, load_config, load_model, resolve_source
from lensdb.lenses import check_not_a_kind
from lensdb.tuned import store
from lensdb.tuned.format import CONFIG_FILE, TunedTranslators, lens_logits, unembed_hash, write_atomic
from lensdb.warehouse import layout

PAPER_STEPS = 250
PAPER_TOKENS_PER_STEP = 2**18
MAX_SEQ_LEN = 2048
EVAL_FRACTION = 0.1
MAX_EVAL_TOKENS = 2**17
MAX_GRAD_NORM = 1.0
CHECKPOINT_FILE = "train-checkpoint.pt"
# Float32 bytes one forward pass may hold (residuals and logits), and one loss chunk.
FORWARD_BYTES = {"cpu": 256 << 20, "gpu": 2 << 30}
LOSS_CHUNK_BYTES = {"cpu": 64 << 20, "gpu": 512 << 20}
LN2 = math.log(2)


class TrainingDiverged(TunedLensError):
    """The loss or the translators became NaN or infinite: nothing is written."""


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

    def check(self) -> None:
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
class Corpus:
    path: Path
    sha256: str
    documents: list[str]


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


@dataclass
class TrainResult:
    path: Path  # the lens folder written
    translators: TunedTranslators
    layers: list[dict]  # per layer: layer, kl_bits, final_ln_kl_bits, train_kl_bits
    settings: dict  # as in training.json
    resumed_at_step: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def read_corpus(path: str | Path) -> Corpus:
    """A .txt file (one document) or a .jsonl file (one document per line, key `text`)."""
    path = Path(path).expanduser()
    if path.suffix not in (".txt", ".jsonl"):
        raise LensdbError(f"--text {path}: give a .txt or a .jsonl file (one {{\"text\": ...}} object per line)")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise LensdbError(f"--text {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LensdbError(f"--text {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix == ".txt":
        documents = [text] if text.strip() else []
    else:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LensdbError(f"--text {path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise LensdbError(f"--text {path}, line {number}: needs a string `text`")
            if item["text"].strip():
                documents.append(item["text"])
    if not documents:
        raise LensdbError(f"--text {path} holds no text")
    return Corpus(path=path.resolve(), sha256=sha256(data).hexdigest(), documents=documents)


def token_windows(model: LoadedModel, corpus: Corpus, seq_len: int) -> torch.Tensor:
    """(n_windows, seq_len) token ids: the documents joined by EOS, cut into windows, each
    starting with BOS where the model's inputs do; the incomplete last window is dropped."""
    tokenizer = model.tokenizer
    bos = tokenizer.bos_token_id if getattr(model.bridge.cfg, "default_prepend_bos", True) else None
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for document in corpus.documents:
        stream.extend(encode(tokenizer, document))
        if eos is not None:
            stream.append(eos)
    body = seq_len - 1 if bos is not None else seq_len
    n_windows = len(stream) // body
    if n_windows == 0:
        raise LensdbError(f"--text {corpus.path} has {len(stream)} tokens, fewer than one window of {seq_len} (lower --seq-len)")
    windows = torch.tensor(stream[: n_windows * body], dtype=torch.long).view(n_windows, body)
    if bos is not None:
        windows = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), windows], dim=1)
    return windows


def split_windows(windows: torch.Tensor, eval_fraction: float, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows and held-out windows (the corpus's last ones, at most MAX_EVAL_TOKENS)."""
    n = windows.shape[0]
    if eval_fraction <= 0 or n < 2:
        return windows, windows[:0]
    n_eval = min(max(1, round(n * eval_fraction)), max(1, MAX_EVAL_TOKENS // seq_len), n - 1)
    return windows[: n - n_eval], windows[n - n_eval :]


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


def load_for_training(model: str, settings: TrainSettings, revision: str | None = None) -> LoadedModel:
    source = resolve_source(model, revision)
    config = load_config(source)
    check_causal_lm(config, source)
    weight_bytes = estimate_weight_bytes(source, config)
    device = choose_device(settings.device, weight_bytes)
    dtype = choose_dtype(settings.dtype, device, getattr(config, "model_type", None), weight_bytes)
    torch.manual_seed(settings.seed)
    loaded = load_model(source, config, device, dtype)
    loaded.bridge.requires_grad_(False)
    return loaded


class _Decoder:
    """Residual -> lens log-probabilities, and the model's final log-probabilities, float32."""

    def __init__(self, model: LoadedModel):
        self.model = model
        self.unembedding = Unembedding(model.unembed_weight, model.unembed_bias, "float32")
        budget = LOSS_CHUNK_BYTES["cpu" if model.device.type == "cpu" else "gpu"]
        self.chunk_tokens = max(1, budget // (4 * 4 * model.d_vocab))  # logits, log-softmax and their gradients

    def log_probs(self, residual: torch.Tensor, translators: TunedTranslators | None, layer: int) -> torch.Tensor:
        """The tuned lens's log-probabilities; translators None: the final_ln logit lens's."""
        if translators is None:
            logits = self.unembedding(apply_norm(residual.float(), self.model.norms[FINAL_NORM]))
        else:
            logits = lens_logits(translators, self.model, residual, layer, self.unembedding)
        return torch.log_softmax(logits, dim=-1)


def kl_nats(target_log_probs: torch.Tensor, lens_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target || lens) per row, in nats."""
    return (target_log_probs.exp() * (target_log_probs - lens_log_probs)).sum(dim=-1)


def _forward(model: LoadedModel, windows: torch.Tensor) -> capture.PassOutput:
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    return capture.run_pass(model.bridge, model.residual_hooks(), windows.tolist(), pad_id, model.device)


def _window_order(n_train: int, seed: int, start: int, count: int) -> torch.Tensor:
    """Indices of the training windows number start..start+count-1 in the sequence of
    passes over the data, each pass a permutation drawn from (seed, pass number)."""
    picked = []
    position, end = start, start + count
    while position < end:
        epoch, offset = divmod(position, n_train)
        permutation = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed * 1_000_003 + epoch))
        take = min(end - position, n_train - offset)
        picked.append(permutation[offset : offset + take])
        position += take
    return torch.cat(picked)


def fit_translators(
    model: LoadedModel,
    train: torch.Tensor,
    plan: Plan,
    settings: TrainSettings,
    *,
    checkpoint: Path | None = None,
    fingerprint: dict | None = None,
    progress: bool = False,
) -> tuple[TunedTranslators, list[float], int]:
    """Train translators on `train` windows; returns them, the last step's mean KL per layer
    (bits), and the step a checkpoint resumed from (0: a fresh start)."""
    from tqdm import tqdm

    n, d = model.n_layers, model.d_model
    weight = torch.zeros(n, d, d, device=model.device, requires_grad=True)
    bias = torch.zeros(n, d, device=model.device, requires_grad=True)
    optimizer = torch.optim.SGD(
        [weight, bias], lr=plan.sgd_lr, momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay
    )
    start_step, last_kl = 0, [math.nan] * n
    fingerprint = fingerprint or {}
    if checkpoint is not None and checkpoint.is_file():
        state = _read_checkpoint(checkpoint, fingerprint)
        with torch.no_grad():
            weight.copy_(state["weight"])
            bias.copy_(state["bias"])
        optimizer.load_state_dict(state["optimizer"])
        start_step, last_kl = int(state["step"]), list(state["last_kl_bits"])
    lens = TunedTranslators(weight, bias)
    decoder = _Decoder(model)
    step_tokens = plan.windows_per_step * plan.seq_len
    bar = tqdm(total=plan.steps, initial=start_step, unit="step", desc="train-lens", file=sys.stderr, disable=None if progress else True)
    with bar:
        for step in range(start_step, plan.steps):
            # tuned-lens: get_linear_schedule_with_warmup(opt, 0, steps): lr x (steps - step) / steps.
            for group in optimizer.param_groups:
                group["lr"] = plan.sgd_lr * (plan.steps - step) / plan.steps
            order = _window_order(train.shape[0], settings.seed, step * plan.windows_per_step, plan.windows_per_step)
            kl_sums = torch.zeros(n, dtype=torch.float64)
            for start in range(0, len(order), plan.batch_size):
                output = _forward(model, train[order[start : start + plan.batch_size]])
                for layer in range(n):
                    residual = output.residuals[layer]
                    for lo in range(0, residual.shape[0], decoder.chunk_tokens):
                        # clone(): run_pass returns inference tensors, which autograd cannot save.
                        chunk = residual[lo : lo + decoder.chunk_tokens].clone()
                        target = torch.log_softmax(output.logits[lo : lo + decoder.chunk_tokens].clone(), dim=-1)
                        kl = kl_nats(target, decoder.log_probs(chunk, lens, layer))
                        (kl.sum() / step_tokens).backward()
                        kl_sums[layer] += kl.detach().sum().double().cpu()
                del output
            torch.nn.utils.clip_grad_norm_([weight, bias], MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
            last_kl = (kl_sums / step_tokens / LN2).tolist()
            # One host sync per step: a diverged step is never checkpointed or written.
            if not (all(math.isfinite(kl) for kl in last_kl) and bool(torch.isfinite(weight).all() & torch.isfinite(bias).all())):
                raise TrainingDiverged(_diverged(f"at step {step + 1} of {plan.steps}", settings))
            bar.set_postfix(kl_bits=f"{sum(last_kl) / n:.4f}")
            bar.update(1)
            done = step + 1
            if checkpoint is not None and (done % settings.checkpoint_every == 0 or done == plan.steps):
                _write_checkpoint(checkpoint, done, weight, bias, optimizer, last_kl, fingerprint)
    trained = TunedTranslators(weight.detach().cpu().clone(), bias.detach().cpu().clone())
    return trained, last_kl, start_step


def _diverged(where: str, settings: TrainSettings) -> str:
    return f"training diverged {where}: the loss or the translators are NaN or infinite; lower --lr (it is {settings.lr:g}); nothing was written"


def _write_checkpoint(path: Path, step: int, weight, bias, optimizer, last_kl: list[float], fingerprint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "step": step,
            "weight": weight.detach().cpu(),
            "bias": bias.detach().cpu(),
            "optimizer": optimizer.state_dict(),
            "last_kl_bits": last_kl,
            "fingerprint": json.dumps(fingerprint, sort_keys=True),
        },
        buffer,
    )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, buffer.getvalue())
    except OSError as exc:
        raise TunedLensError(f"cannot write the checkpoint {path}: {exc.strerror or exc}") from None


def _read_checkpoint(path: Path, fingerprint: dict) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - a damaged checkpoint is one line
        raise TunedLensError(f"cannot read the checkpoint {path}: {str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}; delete it to start over") from None
    saved = json.loads(state.get("fingerprint", "{}"))
    if saved != fingerprint:
        changed = sorted(k for k in set(saved) | set(fingerprint) if saved.get(k) != fingerprint.get(k))
        raise TunedLensError(
            f"the checkpoint {path} is of another training (different {', '.join(changed)}); delete it to start over"
        )
    return state


@torch.no_grad()
def layer_kl_bits(model: LoadedModel, windows: torch.Tensor, translators: TunedTranslators | None, batch_size: int) -> list[float]:
    """Mean KL(final || lens) in bits per layer 0..n_layers over `windows`; translators None:
    the final_ln logit lens."""
    decoder = _Decoder(model)
    if translators is not None:
        translators = translators.to(model.device)
    sums = torch.zeros(model.n_layers + 1, dtype=torch.float64)
    tokens = 0
    for start in range(0, windows.shape[0], batch_size):
        output = _forward(model, windows[start : start + batch_size])
        for layer in range(model.n_layers + 1):
            residual = output.residuals[layer]
            for lo in range(0, residual.shape[0], decoder.chunk_tokens):
                target = torch.log_softmax(output.logits[lo : lo + decoder.chunk_tokens], dim=-1)
                lens = decoder.log_probs(residual[lo : lo + decoder.chunk_tokens], translators, layer)
                sums[layer] += kl_nats(target, lens).double().sum().cpu()
        tokens += output.logits.shape[0]
    return (sums / max(tokens, 1) / LN2).tolist()


def train_lens(
    model: str,
    text: str | Path,
    *,
    out: str | Path | None = None,
    name: str | None = None,
    warehouse: str | Path | None = None,
    settings: TrainSettings | None = None,
    revision: str | None = None,
    progress: bool = False,
) -> TrainResult:
    """Train a tuned lens for `model` on the corpus `text`; write it to the folder `out`, or
    store it in the warehouse as `name` (exactly one of the two)."""
    settings = settings or TrainSettings()
    settings.check()
    if (out is None) == (name is None):
        raise LensdbError("give --out DIR or --name NAME (one of the two)")
    warehouse_path = layout.resolve_warehouse(warehouse) if name is not None else None
    if name is not None:
        check_not_a_kind(name)
        target = store.stored_lens_dir(warehouse_path, name)
        if target.exists():
            raise TunedLensError(f"the warehouse already stores a lens named {name!r} ({target})")
        work = store.training_dir(warehouse_path, name)
    else:
        target = work = Path(out).expanduser().resolve()
        if (target / CONFIG_FILE).exists():
            raise TunedLensError(f"{target} already holds a tuned lens")
        if target.exists() and not target.is_dir():
            raise TunedLensError(f"--out {target} is a file")
    corpus = read_corpus(text)
    t0 = time.perf_counter()
    loaded = load_for_training(model, settings, revision)
    loaded_at = time.perf_counter()
    seq_len = settings.seq_len or min(MAX_SEQ_LEN, loaded.n_ctx)
    if seq_len > loaded.n_ctx:
        raise LensdbError(f"--seq-len {seq_len} exceeds the model's context of {loaded.n_ctx}")
    windows = token_windows(loaded, corpus, seq_len)
    train, held_out = split_windows(windows, settings.eval_fraction, seq_len)
    plan = make_plan(loaded, settings, train_windows=train.shape[0], eval_windows=held_out.shape[0])
    fingerprint = {
        "model": loaded.source.load_from,
        "model_revision": loaded.revision,
        "corpus_sha256": corpus.sha256,
        "dtype": str(loaded.dtype).removeprefix("torch."),
        **{k: v for k, v in asdict(plan).items() if k != "batch_size"},
        "momentum": settings.momentum,
        "weight_decay": settings.weight_decay,
        "seed": settings.seed,
    }
    work_existed = work.exists()
    try:  # before training: a folder that cannot be written fails now, not at the first checkpoint
        work.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TunedLensError(f"cannot write to {work}: {exc.strerror or exc}") from None
    checkpoint = work / CHECKPOINT_FILE
    try:
        translators, last_kl, resumed_at = fit_translators(
            loaded, train, plan, settings, checkpoint=checkpoint, fingerprint=fingerprint, progress=progress
        )
        trained_at = time.perf_counter()
        batch = plan.batch_size
        tuned_kl = layer_kl_bits(loaded, held_out, translators, batch) if held_out.shape[0] else [None] * (loaded.n_layers + 1)
        if not all(kl is None or math.isfinite(kl) for kl in tuned_kl):
            raise TrainingDiverged(_diverged("(the trained lens's held-out KL)", settings))
    except TrainingDiverged:
        # No lens, and no checkpoint that a rerun would resume into the same divergence.
        checkpoint.unlink(missing_ok=True)
        _remove_work_folder(work, name is not None or not work_existed)
        raise
    logit_kl = layer_kl_bits(loaded, held_out, None, batch) if held_out.shape[0] else [None] * (loaded.n_layers + 1)
    lens_name = name or target.name
    hash_of_unembed = unembed_hash(loaded.unembed_weight)
    config = {
        "base_model_name_or_path": loaded.source.load_from,
        "base_model_revision": None if loaded.source.local_path is not None else loaded.revision,
        "unembed_hash": hash_of_unembed,
    }
    translators = TunedTranslators(translators.weight, translators.bias, config, name=name)
    layers = [
        {"layer": layer, "kl_bits": tuned_kl[layer], "final_ln_kl_bits": logit_kl[layer], "train_kl_bits": last_kl[layer] if layer < loaded.n_layers else None}
        for layer in range(loaded.n_layers + 1)
    ]
    common = {
        "lens": lens_name,
        "model": loaded.source.name,
        "model_path": str(loaded.source.local_path) if loaded.source.local_path else None,
        "model_revision": loaded.revision,
        "created_at": datetime.now(timezone.utc).replace(tzinfo=None),
        "lensdb_version": lensdb_package.__version__,
        "torch_version": metadata.version("torch"),
        "device": str(loaded.device),
        "dtype": str(loaded.dtype).removeprefix("torch."),
        "n_layers": loaded.n_layers,
        "d_model": loaded.d_model,
        "unembed_hash": hash_of_unembed,
        "corpus": str(corpus.path),
        "corpus_sha256": corpus.sha256,
        "train_tokens": plan.train_windows * plan.seq_len,
        "eval_tokens": plan.eval_windows * plan.seq_len,
        "steps": plan.steps,
        "tokens_per_step": plan.tokens_per_step,
        "seq_len": plan.seq_len,
        "lr": settings.lr,
        "momentum": settings.momentum,
        "weight_decay": settings.weight_decay,
        "seed": settings.seed,
        "train_seconds": trained_at - loaded_at,
    }
    settings_json = {
        **common,
        "created_at": common["created_at"].isoformat() + "Z",
        "sgd_lr": plan.sgd_lr,
        "optimizer": "SGD, Nesterov momentum; lr decays linearly to 0, no warmup; gradient norm clipped to 1",
        "loss": "KL(model's final distribution || lens distribution), mean over a step's tokens, summed over layers",
        "windows_per_step": plan.windows_per_step,
        "batch_size": plan.batch_size,
        "resumed_at_step": resumed_at,
        "layers": layers,
    }
    rows = [{**common, **layer} for layer in layers]
    if name is not None:
        staged = work / "lens"
        shutil.rmtree(staged, ignore_errors=True)
        written = store.write_lens_folder(staged, translators, rows, settings_json)
        path = store.commit_stored_lens(staged, warehouse_path, name)
        written = TunedTranslators(written.weight, written.bias, written.config, written.sha256, str(path), name)
        _remove_work_folder(work, True)
    else:
        written = store.write_lens_folder(target, translators, rows, settings_json)
        path = target
        checkpoint.unlink(missing_ok=True)
    return TrainResult(
        path=path,
        translators=written,
        layers=layers,
        settings={**settings_json, "lens_sha256": written.sha256},
        resumed_at_step=resumed_at,
        timings={"load_seconds": loaded_at - t0, "train_seconds": trained_at - loaded_at},
    )


def _remove_work_folder(work: Path, whole: bool) -> None:
    """A stored lens's training folder (and _lens_training/, once no other training uses it),
    or an --out folder this training created (`whole`); else only what it holds is left."""
    if not whole:
        return
    shutil.rmtree(work, ignore_errors=True)
    if work.parent.name == store.TRAINING_DIR:
        try:
            work.parent.rmdir()
        except OSError:
            pass

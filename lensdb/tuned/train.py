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

With `--sites all` (lensdb's extension) every block's mid site (the residual between its
attention and its MLP) gets a translator of its own too, trained in the same steps with the
same loss, and written to params_mid.pt beside params.pt (lensdb/tuned/format.py).

Scaled to the data given: the tokens per step default to 2^18 but at most the training
tokens / steps (at least one window), so a small corpus is reused in reshuffled passes.
Differences: every window starts with the BOS token as lensdb's prompts do; the lens runs
in float32 (tuned-lens uses bfloat16 autocast); the last windows of the corpus (10 %) are
held out to report each layer's KL.

A checkpoint (translators, optimizer state, step) is saved every `checkpoint_every` steps;
running the same command again continues from it. The window order depends only on the
seed, so a resumed training sees the same data as an uninterrupted one.

This module fits the translators, checkpoints and writes the lens; the settings and their
plan are in lensdb.tuned.plan, the corpus and its windows in lensdb.tuned.corpus, the loss
and the held-out KL in lensdb.tuned.loss.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

import lensdb as lensdb_package
from lensdb.errors import LensdbError, TunedLensError
from lensdb.extract.device import choose_device, choose_dtype
from lensdb.extract.sites import parallel_block_reason
from lensdb.extract.model import LoadedModel, check_causal_lm, estimate_weight_bytes, load_config, load_model, resolve_source
from lensdb.lenses import check_not_a_kind
from lensdb.tuned import store
from lensdb.tuned.corpus import Corpus, read_corpus, split_windows, token_windows
from lensdb.tuned.format import CONFIG_FILE, TunedTranslators, unembed_hash, write_atomic
from lensdb.tuned.loss import LN2, Decoder, forward, kl_nats, site_kl_bits, slots, trained_slots
from lensdb.tuned.plan import MAX_SEQ_LEN, Plan, TrainSettings, make_plan
from lensdb.warehouse import layout

__all__ = ["CHECKPOINT_FILE", "Corpus", "Plan", "TrainResult", "TrainSettings", "TrainingDiverged", "TunedLensError", "fit_translators",
           "load_for_training", "make_plan", "read_corpus", "split_windows", "token_windows", "train_lens"]

MAX_GRAD_NORM = 1.0
CHECKPOINT_FILE = "train-checkpoint.pt"


class TrainingDiverged(TunedLensError):
    """The loss or the translators became NaN or infinite: nothing is written."""


@dataclass
class TrainResult:
    path: Path  # the lens folder written
    translators: TunedTranslators
    layers: list[dict]  # per layer: layer, kl_bits, final_ln_kl_bits, train_kl_bits
    settings: dict  # as in training.json
    resumed_at_step: int = 0
    timings: dict[str, float] = field(default_factory=dict)


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
    layout = slots(model, settings.sites)
    trained = trained_slots(layout)
    params = {"weight": torch.zeros(n, d, d, device=model.device, requires_grad=True),
              "bias": torch.zeros(n, d, device=model.device, requires_grad=True)}
    if settings.sites == "all":
        params |= {"mid_weight": torch.zeros(n, d, d, device=model.device, requires_grad=True),
                   "mid_bias": torch.zeros(n, d, device=model.device, requires_grad=True)}
    optimizer = torch.optim.SGD(
        list(params.values()), lr=plan.sgd_lr, momentum=settings.momentum, nesterov=True, weight_decay=settings.weight_decay
    )
    start_step, last_kl = 0, [math.nan] * len(trained)
    fingerprint = fingerprint or {}
    if checkpoint is not None and checkpoint.is_file():
        state = _read_checkpoint(checkpoint, fingerprint)
        with torch.no_grad():
            for key, tensor in params.items():
                tensor.copy_(state[key])
        optimizer.load_state_dict(state["optimizer"])
        start_step, last_kl = int(state["step"]), list(state["last_kl_bits"])
    lens = TunedTranslators(**params)
    decoder = Decoder(model)
    step_tokens = plan.windows_per_step * plan.seq_len
    bar = tqdm(total=plan.steps, initial=start_step, unit="step", desc="train-lens", file=sys.stderr, disable=None if progress else True)
    with bar:
        for step in range(start_step, plan.steps):
            # tuned-lens: get_linear_schedule_with_warmup(opt, 0, steps): lr x (steps - step) / steps.
            for group in optimizer.param_groups:
                group["lr"] = plan.sgd_lr * (plan.steps - step) / plan.steps
            order = _window_order(train.shape[0], settings.seed, step * plan.windows_per_step, plan.windows_per_step)
            kl_sums = torch.zeros(len(trained), dtype=torch.float64)
            for start in range(0, len(order), plan.batch_size):
                output = forward(model, train[order[start : start + plan.batch_size]], layout)
                for row, (slot, layer, site) in enumerate(trained):
                    residual = output.residuals[slot]
                    for lo in range(0, residual.shape[0], decoder.chunk_tokens):
                        # clone(): run_pass returns inference tensors, which autograd cannot save.
                        chunk = residual[lo : lo + decoder.chunk_tokens].clone()
                        target = torch.log_softmax(output.logits[lo : lo + decoder.chunk_tokens].clone(), dim=-1)
                        kl = kl_nats(target, decoder.log_probs(chunk, lens, layer, site))
                        (kl.sum() / step_tokens).backward()
                        kl_sums[row] += kl.detach().sum().double().cpu()
                del output
            # Clipped per site: the post translators train exactly as without mid ones.
            for site in settings.sites_trained:
                torch.nn.utils.clip_grad_norm_([tensor for key, tensor in params.items() if key.startswith("mid_") == (site == "mid")], MAX_GRAD_NORM)
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)
            last_kl = (kl_sums / step_tokens / LN2).tolist()
            # One host sync per step: a diverged step is never checkpointed or written.
            finite = torch.stack([torch.isfinite(tensor).all() for tensor in params.values()]).all()
            if not (all(math.isfinite(kl) for kl in last_kl) and bool(finite)):
                raise TrainingDiverged(_diverged(f"at step {step + 1} of {plan.steps}", settings))
            bar.set_postfix(kl_bits=f"{sum(last_kl) / len(trained):.4f}")
            bar.update(1)
            done = step + 1
            if checkpoint is not None and (done % settings.checkpoint_every == 0 or done == plan.steps):
                _write_checkpoint(checkpoint, done, params, optimizer, last_kl, fingerprint)
    fitted = TunedTranslators(**{key: tensor.detach().cpu().clone() for key, tensor in params.items()})
    return fitted, last_kl, start_step


def _diverged(where: str, settings: TrainSettings) -> str:
    return f"training diverged {where}: the loss or the translators are NaN or infinite; lower --lr (it is {settings.lr:g}); nothing was written"


def _write_checkpoint(path: Path, step: int, params: dict, optimizer, last_kl: list[float], fingerprint: dict) -> None:
    buffer = io.BytesIO()
    torch.save(
        {
            "step": step,
            **{key: tensor.detach().cpu() for key, tensor in params.items()},
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
    if settings.sites == "all":
        reason = parallel_block_reason(loaded.config, loaded.bridge.cfg, loaded.bridge.hook_dict)
        if reason is not None:
            raise LensdbError(f"--sites all: model {loaded.source.name} has no mid residual ({reason}); use --sites post")
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
        **({"sites": settings.sites} if settings.sites != "post" else {}),
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
        site_slots = slots(loaded, settings.sites)
        no_kl = dict.fromkeys(zip(site_slots.layers.tolist(), site_slots.sites))
        tuned_kl = site_kl_bits(loaded, held_out, translators, batch, settings.sites) if held_out.shape[0] else no_kl
        if not all(kl is None or math.isfinite(kl) for kl in tuned_kl.values()):
            raise TrainingDiverged(_diverged("(the trained lens's held-out KL)", settings))
    except TrainingDiverged:
        # No lens, and no checkpoint that a rerun would resume into the same divergence.
        checkpoint.unlink(missing_ok=True)
        _remove_work_folder(work, name is not None or not work_existed)
        raise
    logit_kl = site_kl_bits(loaded, held_out, None, batch, settings.sites) if held_out.shape[0] else no_kl
    lens_name = name or target.name
    hash_of_unembed = unembed_hash(loaded.unembed_weight)
    config = {
        "base_model_name_or_path": loaded.source.load_from,
        "base_model_revision": None if loaded.source.local_path is not None else loaded.revision,
        "unembed_hash": hash_of_unembed,
    }
    translators = replace(translators, config=config, name=name)
    train_kl = {(layer, site): kl for (_, layer, site), kl in zip(trained_slots(site_slots), last_kl)}
    layers = [  # post sites 0..n_layers, then (with --sites all) mid sites 1..n_layers
        {"layer": layer, "site": site, "kl_bits": tuned_kl[layer, site], "final_ln_kl_bits": logit_kl[layer, site], "train_kl_bits": train_kl.get((layer, site))}
        for site in settings.sites_trained
        for layer in (range(loaded.n_layers + 1) if site == "post" else range(1, loaded.n_layers + 1))
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
        "sites": settings.sites,
        "layers": layers,
    }
    rows = [{**common, **layer} for layer in layers]
    if name is not None:
        staged = work / "lens"
        shutil.rmtree(staged, ignore_errors=True)
        written = store.write_lens_folder(staged, translators, rows, settings_json)
        path = store.commit_stored_lens(staged, warehouse_path, name)
        written = replace(written, origin=str(path), name=name)
        _remove_work_folder(work, True)
    else:
        written = store.write_lens_folder(target, translators, rows, settings_json)
        path = target
        checkpoint.unlink(missing_ok=True)
    return TrainResult(
        path=path,
        translators=written,
        layers=layers,
        settings={**settings_json, "lens_sha256": written.content_sha256},
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

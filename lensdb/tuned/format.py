"""Read and write tuned lenses in the on-disk format of the tuned-lens project
(AlignmentResearch/tuned-lens, `TunedLens.save` / `TunedLens.from_model_and_pretrained`).

A lens folder holds two files (other files are ignored):

  config.json  `TunedLensConfig` as JSON: `base_model_name_or_path`, `d_model`,
               `num_hidden_layers`, `bias` (default true), `base_model_revision`,
               `unembed_hash`, `lens_type` ("linear_tuned_lens"). Unknown keys are ignored,
               as tuned-lens ignores them.
  params.pt    `torch.save(layer_translators.state_dict())`: keys `{i}.weight` (d_model,
               d_model; an `nn.Linear` weight, out x in) and `{i}.bias` (d_model) for
               i = 0 .. num_hidden_layers - 1 (no bias keys when `bias` is false). A whole
               `TunedLens.state_dict()` (keys `layer_translators.{i}.*` plus `unembed.*`)
               is accepted too.

Layer indexing. tuned-lens's train loop fits translator i to Hugging Face's
`hidden_states[i]` for i = 0 .. num_hidden_layers - 1 (it drops the last hidden state,
which Hugging Face returns after the final norm): `hidden_states[0]` is the embedding
output, `hidden_states[i]` the output of decoder block i - 1. Those are exactly lensdb's
layers: translator i applies to lensdb layer i (0 = the residual entering block 0, i = the
residual after block i - 1), and lensdb layer n_layers (after the last block) has no
translator — the identity, so the tuned lens there is the model's own head.

The lens at layer i (tuned-lens's `TunedLens.forward`):

    logits = unembed(final_norm(h + W_i h + b_i))

— the translator is added residually (`h + translator(h)`, with `W_i h = h @ W_i.T`), so
all-zero translators are the logit lens through the final norm (lensdb's `final_ln`).

`unembed_hash` is tuned-lens's `Unembed.unembedding_hash()`: the sha256 of
`numpy.array_str(W, precision=1)` of the head's weight W (d_vocab, d_model) in float32.
numpy prints matrices above 1000 elements as their corners, so this is a cheap
fingerprint of the unembedding, insensitive to dtype and small changes.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from lensdb.errors import TunedLensError, first_line
from lensdb.extract.lens import FINAL_NORM, apply_norm
from lensdb.files import write_atomic

CONFIG_FILE = "config.json"
PARAMS_FILE = "params.pt"
LENS_TYPE = "linear_tuned_lens"
# numpy's default print options, pinned: the hash must not depend on a caller's settings.
_PRINT_OPTIONS = dict(precision=1, threshold=1000, edgeitems=3, linewidth=75, suppress=False, floatmode="maxprec", sign="-", legacy=False)


@dataclass(frozen=True)
class TunedTranslators:
    """One affine translator per layer 0..n_layers-1 (layer n_layers: identity)."""

    weight: torch.Tensor  # (n_layers, d_model, d_model) float32, nn.Linear layout (out, in)
    bias: torch.Tensor  # (n_layers, d_model) float32; zeros for a lens without bias
    config: dict = field(default_factory=dict)  # config.json as read (or to be written)
    sha256: str = ""  # sha256 of params.pt's bytes
    origin: str = ""  # the folder it was read from
    name: str | None = None  # the stored lens's name (`lensdb train-lens --name`), else None

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[-1])

    def translate(self, residual: torch.Tensor, layer: int) -> torch.Tensor:
        """The translated residual of `layer` in float32: h + h @ W.T + b (identity at layer n_layers)."""
        x = residual.float()
        if layer == self.n_layers:
            return x
        if not 0 <= layer < self.n_layers:
            raise ValueError(f"layer {layer} outside 0..{self.n_layers}")
        weight = self.weight[layer].to(x.device)
        bias = self.bias[layer].to(x.device)
        return x + torch.nn.functional.linear(x, weight, bias)

    def to(self, device: torch.device | str) -> "TunedTranslators":
        return replace(self, weight=self.weight.to(device), bias=self.bias.to(device))


def unembed_hash(unembedding: torch.Tensor) -> str:
    """tuned-lens's fingerprint of an unembedding matrix given as (d_vocab, d_model) — the
    head's `nn.Linear` weight, as lensdb's `LoadedModel.unembed_weight` holds it."""
    array = unembedding.detach().cpu().float().numpy()
    with np.printoptions(**_PRINT_OPTIONS):
        text = np.array_str(array, precision=1)
    return hashlib.sha256(text.encode()).hexdigest()


def load_tuned_lens(path: str | os.PathLike, name: str | None = None) -> TunedTranslators:
    """Read a lens folder (config.json + params.pt); any problem is one TunedLensError line."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise TunedLensError(f"no tuned lens folder at {folder}")
    config_path, params_path = folder / CONFIG_FILE, folder / PARAMS_FILE
    for needed in (config_path, params_path):
        if not needed.is_file():
            raise TunedLensError(f"{folder} is not a tuned lens: it has no {needed.name}")
    config = _read_config(config_path)
    data = params_path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is one line
        raise TunedLensError(f"cannot read {params_path}: {first_line(exc)}") from None
    weight, bias = _translators(state, config, params_path)
    return TunedTranslators(
        weight=weight,
        bias=bias,
        config=config,
        sha256=hashlib.sha256(data).hexdigest(),
        origin=str(folder.resolve()),
        name=name,
    )


def _read_config(path: Path) -> dict:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise TunedLensError(f"cannot read {path}: {first_line(exc)}") from None
    if not isinstance(config, dict):
        raise TunedLensError(f"{path} is not a tuned-lens config (not a JSON object)")
    for key in ("d_model", "num_hidden_layers"):
        value = config.get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise TunedLensError(f"{path}: `{key}` must be a positive integer, not {value!r}")
    lens_type = config.get("lens_type", LENS_TYPE)
    if lens_type != LENS_TYPE:
        raise TunedLensError(f"{path}: lens_type {lens_type!r} is not supported (only {LENS_TYPE!r})")
    return config


def _translators(state, config: dict, path: Path) -> tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(state, dict):
        raise TunedLensError(f"{path} does not hold a state dict of layer translators")
    # A whole TunedLens.state_dict(): keep its translators, drop its copy of the unembedding.
    if any(str(key).startswith("layer_translators.") for key in state):
        state = {key.removeprefix("layer_translators."): value for key, value in state.items() if not key.startswith("unembed.")}
    n, d = config["num_hidden_layers"], config["d_model"]
    with_bias = config.get("bias", True) is not False
    expected = {f"{i}.weight": (d, d) for i in range(n)}
    if with_bias:
        expected |= {f"{i}.bias": (d,) for i in range(n)}
    unexpected = sorted(set(state) - set(expected), key=str)
    if unexpected:
        raise TunedLensError(
            f"{path}: unexpected key {unexpected[0]!r} (config.json has {n} layers, "
            f"bias {'true' if with_bias else 'false'}: keys 0.weight .. {n - 1}.weight{', with biases' if with_bias else ''})"
        )
    for key, shape in expected.items():
        tensor = state.get(key)
        if not isinstance(tensor, torch.Tensor):
            raise TunedLensError(f"{path}: missing {key} (config.json has num_hidden_layers {n})")
        if tuple(tensor.shape) != shape or not tensor.is_floating_point():
            raise TunedLensError(f"{path}: {key} has shape {tuple(tensor.shape)} {tensor.dtype}, expected {shape} float (d_model {d})")
    weight = torch.stack([state[f"{i}.weight"].float() for i in range(n)])
    bias = torch.stack([state[f"{i}.bias"].float() for i in range(n)]) if with_bias else torch.zeros(n, d)
    if not (torch.isfinite(weight).all() and torch.isfinite(bias).all()):
        raise TunedLensError(f"{path}: the translators hold NaN or infinite values")
    return weight, bias


def check_fits(translators: TunedTranslators, n_layers: int, d_model: int, unembed_hash: str | None = None) -> None:
    """Raise TunedLensError (one line) unless the lens was made for a model of this shape
    (and, when both are known, this unembedding)."""
    where = translators.name or translators.origin or "tuned lens"
    if translators.d_model != d_model:
        raise TunedLensError(f"tuned lens {where} is for d_model {translators.d_model}, the model has d_model {d_model}")
    if translators.n_layers != n_layers:
        raise TunedLensError(
            f"tuned lens {where} has translators for {translators.n_layers} layers, the model has {n_layers} layers"
        )
    expected = translators.config.get("unembed_hash")
    if expected and unembed_hash and expected != unembed_hash:
        raise TunedLensError(
            f"tuned lens {where} was trained for another unembedding (unembed_hash {expected[:12]}…, the model's {unembed_hash[:12]}…)"
        )


def lens_logits(translators: TunedTranslators, model, residual: torch.Tensor, layer: int, unembedding=None) -> torch.Tensor:
    """Float32 tuned-lens logits of `residual` (..., d_model) at `layer` for a lensdb
    `LoadedModel`: translate, the model's final norm, the unembedding (with its bias;
    `unembedding` an extract.unembedding.Unembedding, float32 by default)."""
    from lensdb.extract.unembedding import Unembedding

    normalized = apply_norm(translators.translate(residual, layer), model.norms[FINAL_NORM])
    unembedding = unembedding or Unembedding(model.unembed_weight, model.unembed_bias, "float32")
    return unembedding(normalized)


def check_fits_model(translators: TunedTranslators, model) -> None:
    """check_fits against a lensdb `LoadedModel`."""
    check_fits(translators, model.n_layers, model.d_model, unembed_hash(model.unembed_weight))


def state_dict(translators: TunedTranslators) -> dict[str, torch.Tensor]:
    """params.pt's content: `{i}.weight` and `{i}.bias`, float32, on the CPU."""
    state = {}
    for i in range(translators.n_layers):
        state[f"{i}.weight"] = translators.weight[i].detach().cpu().float().clone()
        state[f"{i}.bias"] = translators.bias[i].detach().cpu().float().clone()
    return state


def params_bytes(translators: TunedTranslators) -> bytes:
    """params.pt's bytes; the same translators always give the same bytes."""
    buffer = io.BytesIO()  # not a file name: torch.save puts the file's name into the archive
    torch.save(state_dict(translators), buffer)
    return buffer.getvalue()


def save_tuned_lens(translators: TunedTranslators, path: str | os.PathLike) -> TunedTranslators:
    """Write config.json and params.pt into `path` (created if needed); returns the lens as
    written (its sha256 and origin). params.pt is written first and config.json last, each
    by an atomic rename, so a folder with a config.json holds a complete lens."""
    folder = Path(path).expanduser()
    config = {
        "base_model_name_or_path": "",
        "base_model_revision": None,
        "unembed_hash": None,
        **translators.config,
        "d_model": translators.d_model,
        "num_hidden_layers": translators.n_layers,
        "bias": True,
        "lens_type": LENS_TYPE,
    }
    data = params_bytes(translators)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / PARAMS_FILE, data)
        write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:
        raise TunedLensError(f"cannot write the tuned lens to {folder}: {exc.strerror or exc}") from None
    return replace(translators, config=config, sha256=hashlib.sha256(data).hexdigest(), origin=str(folder.resolve()))


def zero_translators(n_layers: int, d_model: int, config: dict | None = None) -> TunedTranslators:
    """The identity lens (tuned-lens's initialisation): all translators zero."""
    return TunedTranslators(torch.zeros(n_layers, d_model, d_model), torch.zeros(n_layers, d_model), dict(config or {}))

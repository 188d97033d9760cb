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

Mid sites (lensdb's extension; `train-lens --sites all`). A lens may also hold one
translator per block for the residual between its attention and its MLP (lensdb layer
b + 1, site mid, for block b), in a third file beside the two above:

  params_mid.pt  keys `{b}.weight` / `{b}.bias` for b = 0 .. num_hidden_layers - 1, the
                 same layout as params.pt
  config.json    lists the sites it holds: `"lensdb_sites": ["post", "mid"]`

tuned-lens reads config.json and params.pt only, and ignores (with a warning) the config
keys it does not know: for post sites such a folder is a plain tuned-lens lens.

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
from lensdb.tuned.names import CONFIG_FILE, MID_PARAMS_FILE, PARAMS_FILE, SITES_KEY, combined_sha256

LENS_TYPE = "linear_tuned_lens"
# numpy's default print options, pinned: the hash must not depend on a caller's settings.
_PRINT_OPTIONS = dict(precision=1, threshold=1000, edgeitems=3, linewidth=75, suppress=False, floatmode="maxprec", sign="-", legacy=False)


@dataclass(frozen=True)
class TunedTranslators:
    """One affine translator per layer 0..n_layers-1 (layer n_layers: identity), and
    optionally one per block's mid site (the residual between attention and MLP)."""

    weight: torch.Tensor  # (n_layers, d_model, d_model) float32, nn.Linear layout (out, in)
    bias: torch.Tensor  # (n_layers, d_model) float32; zeros for a lens without bias
    config: dict = field(default_factory=dict)  # config.json as read (or to be written)
    sha256: str = ""  # sha256 of params.pt's bytes
    origin: str = ""  # the folder it was read from
    name: str | None = None  # the stored lens's name (`lensdb train-lens --name`), else None
    mid_weight: torch.Tensor | None = None  # (n_layers, d_model, d_model): block b's mid site; None: post sites only
    mid_bias: torch.Tensor | None = None  # (n_layers, d_model)
    mid_sha256: str = ""  # sha256 of params_mid.pt's bytes

    @property
    def sites(self) -> tuple[str, ...]:
        return ("post",) if self.mid_weight is None else ("post", "mid")

    @property
    def content_sha256(self) -> str:
        """What identifies the lens: params.pt's sha256, combined with params_mid.pt's when it has mid translators."""
        return combined_sha256(self.sha256, self.mid_sha256 if self.mid_weight is not None else None)

    @property
    def n_layers(self) -> int:
        return int(self.weight.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.weight.shape[-1])

    def translate(self, residual: torch.Tensor, layer: int, site: str = "post") -> torch.Tensor:
        """The translated residual of `layer` at `site` in float32: h + h @ W.T + b (post:
        identity at layer n_layers; mid: block layer - 1's mid translator, layers 1..n_layers)."""
        x = residual.float()
        if site == "mid":
            if self.mid_weight is None:
                raise TunedLensError(f"tuned lens {self.name or self.origin or ''} has no mid-site translators (train it with train-lens --sites all)")
            if not 1 <= layer <= self.n_layers:
                raise ValueError(f"mid layer {layer} outside 1..{self.n_layers}")
            weight, bias = self.mid_weight[layer - 1], self.mid_bias[layer - 1]
        else:
            if layer == self.n_layers:
                return x
            if not 0 <= layer < self.n_layers:
                raise ValueError(f"layer {layer} outside 0..{self.n_layers}")
            weight, bias = self.weight[layer], self.bias[layer]
        return x + torch.nn.functional.linear(x, weight.to(x.device), bias.to(x.device))

    def to(self, device: torch.device | str) -> "TunedTranslators":
        mid = {} if self.mid_weight is None else {"mid_weight": self.mid_weight.to(device), "mid_bias": self.mid_bias.to(device)}
        return replace(self, weight=self.weight.to(device), bias=self.bias.to(device), **mid)


def lens_sha256(translators: "TunedTranslators") -> str:
    """The content sha256 the translators will have once written (save_tuned_lens)."""
    mid = None if translators.mid_weight is None else hashlib.sha256(params_bytes(translators, "mid")).hexdigest()
    return combined_sha256(hashlib.sha256(params_bytes(translators)).hexdigest(), mid)


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
    weight, bias, sha256 = _read_params(params_path, config)
    mid = {}
    if "mid" in config.get(SITES_KEY, ()):
        mid_path = folder / MID_PARAMS_FILE
        if not mid_path.is_file():
            raise TunedLensError(f"{folder}: config.json lists mid sites but there is no {MID_PARAMS_FILE}")
        mid_weight, mid_bias, mid_sha256 = _read_params(mid_path, config)
        mid = {"mid_weight": mid_weight, "mid_bias": mid_bias, "mid_sha256": mid_sha256}
    return TunedTranslators(weight=weight, bias=bias, config=config, sha256=sha256, origin=str(folder.resolve()), name=name, **mid)


def _read_params(path: Path, config: dict) -> tuple[torch.Tensor, torch.Tensor, str]:
    data = path.read_bytes()
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is one line
        raise TunedLensError(f"cannot read {path}: {first_line(exc)}") from None
    weight, bias = _translators(state, config, path)
    return weight, bias, hashlib.sha256(data).hexdigest()


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
    if "unembed_hash" not in config and "unemebd_hash" in config:  # the spelling of hub lenses' configs
        config["unembed_hash"] = config["unemebd_hash"]
    sites = config.get(SITES_KEY, ["post"])
    if not (isinstance(sites, list) and "post" in sites and set(sites) <= {"post", "mid"}):
        raise TunedLensError(f"{path}: `{SITES_KEY}` must list post and optionally mid, not {sites!r}")
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


def lens_logits(translators: TunedTranslators, model, residual: torch.Tensor, layer: int, unembedding=None, site: str = "post") -> torch.Tensor:
    """Float32 tuned-lens logits of `residual` (..., d_model) at `layer` and `site` for a
    lensdb `LoadedModel`: translate, the model's final norm, the unembedding (with its bias;
    `unembedding` an extract.unembedding.Unembedding, float32 by default)."""
    from lensdb.extract.unembedding import Unembedding

    normalized = apply_norm(translators.translate(residual, layer, site), model.norms[FINAL_NORM])
    unembedding = unembedding or Unembedding(model.unembed_weight, model.unembed_bias, "float32")
    return unembedding(normalized)


def check_fits_model(translators: TunedTranslators, model) -> None:
    """check_fits against a lensdb `LoadedModel`."""
    check_fits(translators, model.n_layers, model.d_model, unembed_hash(model.unembed_weight))


def state_dict(translators: TunedTranslators, site: str = "post") -> dict[str, torch.Tensor]:
    """params.pt's content (params_mid.pt's for site "mid"): `{i}.weight` and `{i}.bias`, float32, on the CPU."""
    weight, bias = (translators.weight, translators.bias) if site == "post" else (translators.mid_weight, translators.mid_bias)
    state = {}
    for i in range(translators.n_layers):
        state[f"{i}.weight"] = weight[i].detach().cpu().float().clone()
        state[f"{i}.bias"] = bias[i].detach().cpu().float().clone()
    return state


def params_bytes(translators: TunedTranslators, site: str = "post") -> bytes:
    """params.pt's bytes (params_mid.pt's for site "mid"); the same translators always give the same bytes."""
    buffer = io.BytesIO()  # not a file name: torch.save puts the file's name into the archive
    torch.save(state_dict(translators, site), buffer)
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
    config.pop(SITES_KEY, None)
    config.pop("unemebd_hash", None)
    data = params_bytes(translators)
    mid_data = None if translators.mid_weight is None else params_bytes(translators, "mid")
    if mid_data is not None:
        config[SITES_KEY] = ["post", "mid"]
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(folder / PARAMS_FILE, data)
        if mid_data is not None:
            write_atomic(folder / MID_PARAMS_FILE, mid_data)
        write_atomic(folder / CONFIG_FILE, (json.dumps(config, indent=2) + "\n").encode())
    except OSError as exc:
        raise TunedLensError(f"cannot write the tuned lens to {folder}: {exc.strerror or exc}") from None
    mid_sha256 = "" if mid_data is None else hashlib.sha256(mid_data).hexdigest()
    return replace(translators, config=config, sha256=hashlib.sha256(data).hexdigest(), mid_sha256=mid_sha256, origin=str(folder.resolve()))


def zero_translators(n_layers: int, d_model: int, config: dict | None = None, sites: tuple[str, ...] = ("post",)) -> TunedTranslators:
    """The identity lens (tuned-lens's initialisation): all translators zero."""
    mid = {"mid_weight": torch.zeros(n_layers, d_model, d_model), "mid_bias": torch.zeros(n_layers, d_model)} if "mid" in sites else {}
    return TunedTranslators(torch.zeros(n_layers, d_model, d_model), torch.zeros(n_layers, d_model), dict(config or {}), **mid)

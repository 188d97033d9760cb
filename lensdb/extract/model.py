"""Find, check and load a causal LM through transformer-lens' TransformerBridge.

The bridge runs the Hugging Face model with its own weights (no layer-norm folding,
centering or compatibility-mode rewrites), so residuals and norms are the model's own.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import torch

from lensdb.errors import ModelError
from lensdb.extract.lens import FINAL_NORM, POST_NORM, PRE_NORM, Norm, NormRef

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


@dataclass(frozen=True)
class ModelSource:
    name: str  # recorded as `model` in the warehouse
    load_from: str  # what transformers loads: a local directory or a hub id
    local_path: Path | None
    revision: str | None


@dataclass
class LoadedModel:
    source: ModelSource
    bridge: object  # transformer_lens TransformerBridge
    tokenizer: object
    config: object  # the Hugging Face config
    architecture: str
    n_layers: int
    d_model: int
    n_heads: int
    d_vocab: int
    n_ctx: int
    dtype: torch.dtype
    device: torch.device
    norms: dict[NormRef, Norm | None]
    unembed_weight: torch.Tensor  # (d_vocab, d_model): the model's own, in its dtype (see lenses.Unembedding)
    unembed_bias: torch.Tensor | None  # float32; None for bias-free heads
    revision: str
    norm_class_names: dict[str, str] = field(default_factory=dict)
    has_additive_positions: bool = False
    logit_scale: float | None = None
    logit_softcap: float | None = None

    def residual_hooks(self) -> list[str]:
        """Hook names for layers 0..n_layers: the input of block 0, then every block's output."""
        return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(self.n_layers)]


def resolve_source(model: str, revision: str | None = None, name: str | None = None) -> ModelSource:
    """A local directory (must hold config.json) or a hub id; nothing is downloaded yet."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ModelError(f"{model} is a file, not a model directory")
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} has no config.json: not a Hugging Face model directory")
        if revision is not None:
            raise ModelError("--revision applies to hub ids, not to local directories")
        return ModelSource(name=name or path.resolve().name, load_from=str(path.resolve()), local_path=path.resolve(), revision=None)
    if model.startswith((".", "/", "~")) or model.count("/") > 1 or not _HUB_ID.match(model):
        raise ModelError(f"no such model directory: {model}")
    return ModelSource(name=name or model, load_from=model, local_path=None, revision=revision)


def load_config(source: ModelSource):
    """The Hugging Face config; hub ids are looked up in the local cache first, then on the hub."""
    from transformers import AutoConfig

    if source.local_path is not None:
        try:
            return AutoConfig.from_pretrained(source.load_from)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(f"cannot read the config of {source.load_from}: {_first_line(exc)}") from None
    try:
        return AutoConfig.from_pretrained(source.load_from, revision=source.revision, local_files_only=True)
    except (OSError, ValueError):
        pass
    if os.environ.get("HF_HUB_OFFLINE", "").strip() not in ("", "0"):
        raise ModelError(f"{source.load_from} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; pass a local model directory")
    _check_hub_reachable(source.load_from)
    try:
        return AutoConfig.from_pretrained(source.load_from, revision=source.revision)
    except Exception as exc:  # noqa: BLE001 - mapped to one line below
        raise _hub_error(source, exc) from None


def _check_hub_reachable(model: str) -> None:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parsed = urlparse(endpoint)
    host, port = parsed.hostname or "huggingface.co", parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((host, port), timeout=5).close()
    except OSError:
        raise ModelError(
            f"cannot reach the Hugging Face hub ({host}) to fetch {model}; pass a local model directory instead"
        ) from None


def _hub_error(source: ModelSource, exc: Exception) -> ModelError:
    names = set()
    cause: BaseException | None = exc
    while cause is not None:
        names.add(type(cause).__name__)
        cause = cause.__cause__ or cause.__context__
    if "GatedRepoError" in names:
        return ModelError(f"{source.load_from} is gated on the Hugging Face hub: accept its licence and run `huggingface-cli login`")
    if "RevisionNotFoundError" in names:
        return ModelError(f"revision {source.revision!r} not found for {source.load_from}")
    if "RepositoryNotFoundError" in names or "is not a local folder and is not a valid model identifier" in str(exc):
        return ModelError(f"unknown model on the Hugging Face hub: {source.load_from}")
    if names & {"LocalEntryNotFoundError", "ConnectError", "ConnectionError", "ConnectTimeout", "gaierror"}:
        return ModelError(f"cannot reach the Hugging Face hub to fetch {source.load_from}; pass a local model directory instead")
    return ModelError(f"cannot load {source.load_from}: {_first_line(exc)}")


def check_causal_lm(config, source: ModelSource) -> None:
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    model_type = getattr(config, "model_type", None)
    architectures = getattr(config, "architectures", None) or []
    encoder = model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(config, "is_decoder", False)
    if architectures:
        causal = any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in architectures)
    else:
        causal = model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    if causal and not encoder:
        return
    kind = ", ".join(architectures) or model_type or "unknown"
    raise ModelError(f"{source.load_from} is not a causal language model ({kind})")


def estimate_weight_bytes(source: ModelSource, config) -> int:
    """Bytes of weights on disk for local models, else a parameter-count estimate at 2 bytes each."""
    if source.local_path is not None:
        files = [p for p in source.local_path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt")]
        if files:
            return sum(p.stat().st_size for p in files)
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    d = getattr(text, "hidden_size", 0) or 0
    layers = getattr(text, "num_hidden_layers", 0) or 0
    vocab = getattr(text, "vocab_size", 0) or 0
    return 2 * (12 * layers * d * d + 2 * vocab * d)


def load_model(source: ModelSource, config, device: torch.device, dtype: torch.dtype) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # lensdb shows its own progress
    try:
        bridge = TransformerBridge.boot_transformers(
            source.load_from, device=str(device), dtype=dtype, revision=source.revision
        )
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        raise ModelError(f"cannot load {source.load_from} with transformer-lens: {_first_line(exc)}") from None
    bridge.eval()
    cfg = bridge.cfg
    n_layers = int(cfg.n_layers)
    unembed = bridge.unembed._original_component
    unembed_weight = unembed.weight.detach()
    bias = getattr(unembed, "bias", None)
    # The bridge gives bias-free heads a zero bias: skip adding it to every logit.
    unembed_bias = bias.detach().float() if bias is not None and bool(bias.detach().any()) else None
    # Post-norm models (OPT with do_layer_norm_before=False) have no final norm: identity.
    final_norm = getattr(getattr(bridge, "ln_final", None), "_original_component", None)
    norms: dict[NormRef, Norm | None] = {FINAL_NORM: infer_norm(final_norm) if final_norm is not None else None}
    for i, block in enumerate(bridge.blocks):
        for slot in ("ln1", "ln2"):
            module = getattr(getattr(block, slot, None), "_original_component", None)
            if module is not None:
                norms[(slot, i)] = infer_norm(module)
    text_config = config.get_text_config() if hasattr(config, "get_text_config") else config
    return LoadedModel(
        source=source,
        bridge=bridge,
        tokenizer=bridge.tokenizer,
        config=config,
        architecture=detect_architecture(bridge, config),
        n_layers=n_layers,
        d_model=int(cfg.d_model),
        n_heads=int(cfg.n_heads),
        d_vocab=int(unembed_weight.shape[0]),
        n_ctx=int(cfg.n_ctx),
        dtype=dtype,
        device=device,
        norms=norms,
        unembed_weight=unembed_weight,
        unembed_bias=unembed_bias,
        revision=resolved_revision(source, config),
        norm_class_names={
            "ln1": _norm_family(norms.get(("ln1", 0))),
            "final": _norm_family(norms[FINAL_NORM]),
        },
        has_additive_positions=hasattr(bridge, "pos_embed"),
        logit_scale=_logit_scale(text_config),
        logit_softcap=_positive(getattr(text_config, "final_logit_softcapping", None)),
    )


def detect_architecture(bridge, config) -> str:
    """post_norm when the config says blocks normalise their output (OPT with
    do_layer_norm_before=False); every other supported family is pre-norm."""
    if getattr(config, "do_layer_norm_before", True) is False:
        return POST_NORM
    return PRE_NORM


def infer_norm(module) -> Norm:
    """The effective parameters of a norm module, checked against the module's own output."""
    weight = getattr(module, "weight", None)
    bias = getattr(module, "bias", None)
    eps = next((float(getattr(module, a)) for a in ("variance_epsilon", "eps", "epsilon") if hasattr(module, a)), None)
    if weight is None or eps is None:
        raise ModelError(f"unsupported normalisation module {type(module).__name__}: no weight or epsilon")
    weight = weight.detach().float()
    bias = bias.detach().float() if isinstance(bias, torch.Tensor) else None
    candidates = [
        Norm("rms", eps, weight, None),
        Norm("rms", eps, weight + 1.0, None),  # Gemma: x * (1 + w)
        Norm("layer", eps, weight, bias),
    ]
    probe = torch.randn(4, weight.shape[0], generator=torch.Generator().manual_seed(0)).to(weight.device)
    param = next(module.parameters())
    with torch.no_grad():
        expected = module(probe.to(param.dtype)).float()
    from lensdb.extract.lens import apply_norm

    tolerance = 1e-4 if param.dtype == torch.float32 else 5e-2
    for candidate in candidates:
        if torch.allclose(apply_norm(probe, candidate), expected, atol=tolerance, rtol=tolerance):
            return candidate
    raise ModelError(f"unsupported normalisation module {type(module).__name__}: matches neither RMSNorm nor LayerNorm")


def resolved_revision(source: ModelSource, config) -> str:
    commit = getattr(config, "_commit_hash", None)
    if source.local_path is None:
        return commit or source.revision or "unknown"
    digest = hashlib.sha256((source.local_path / "config.json").read_bytes())
    for path in sorted(source.local_path.iterdir()):
        if path.is_file():
            digest.update(f"{path.name}:{path.stat().st_size}".encode())
    return f"local-{digest.hexdigest()[:12]}"


def _logit_scale(config) -> float | None:
    """The divisor the model applies to its final logits, if its config has one."""
    if _positive(getattr(config, "logits_scaling", None)):  # Granite: logits / logits_scaling
        return float(config.logits_scaling)
    scale = _positive(getattr(config, "logit_scale", None))  # Cohere: logits * logit_scale
    return 1.0 / scale if scale else None


def _positive(value) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 else None


def _norm_family(norm: Norm | None) -> str:
    if norm is None:
        return "None"
    return "RMSNorm" if norm.kind == "rms" else "LayerNorm"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__

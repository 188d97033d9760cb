"""Load a causal LM through transformer-lens' TransformerBridge (source.py finds and checks it).

The bridge runs the Hugging Face model with its own weights (no layer-norm folding,
centering or compatibility-mode rewrites), so residuals and norms are the model's own.
Weights are placed by an accelerate device map (lensdb.extract.device): on one device, over
several GPUs, or on the CPU with part of them offloaded to disk.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from lensdb.errors import ModelError, first_line
from lensdb.extract.device import Placement
from lensdb.extract.lens import FINAL_NORM, POST_NORM, PRE_NORM, Norm, NormRef
from lensdb.extract.source import (  # noqa: F401 - found and checked before loading; imported from here too
    ModelSource,
    check_causal_lm,
    content_digest,
    estimate_lens_bytes,
    estimate_weight_bytes,
    load_config,
    resolve_source,
    resolved_revision,
)


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
    device: torch.device  # the lens device: where the unembedding (and every lens computation) runs
    norms: dict[NormRef, Norm | None]
    unembed_weight: torch.Tensor  # (d_vocab, d_model): the model's own, in its dtype (see unembedding.Unembedding)
    unembed_bias: torch.Tensor | None  # float32; None for bias-free heads
    revision: str
    norm_class_names: dict[str, str] = field(default_factory=dict)
    has_additive_positions: bool = False
    logit_scale: float | None = None
    logit_softcap: float | None = None
    input_device: torch.device | None = None  # where token ids go: the embedding's device (default: `device`)
    device_map: dict[str, str] = field(default_factory=dict)  # realised placement: module name -> device
    placement_reason: str = ""  # how the placement was chosen (one line)

    def residual_hooks(self) -> list[str]:
        """Hook names for layers 0..n_layers: the input of block 0, then every block's output."""
        return ["blocks.0.hook_resid_pre"] + [f"blocks.{i}.hook_resid_post" for i in range(self.n_layers)]


def load_model(source: ModelSource, config, placement: Placement | torch.device, dtype: torch.dtype) -> LoadedModel:
    """Load through the bridge with an accelerate device map: weights go from the checkpoint
    straight to their device(s), with no full host copy of the model first."""
    from transformer_lens.model_bridge import TransformerBridge
    from transformers.utils import logging as hf_logging

    if isinstance(placement, torch.device):
        placement = Placement(placement.type, {"": str(placement)}, reason=f"{placement}")
    hf_logging.disable_progress_bar()  # lensdb shows its own progress
    options = {"device_map": placement.device_map}
    if placement.max_memory:
        options["max_memory"] = placement.max_memory
    if placement.offload_folder:
        options["offload_folder"] = placement.offload_folder
    try:
        with _hook_scan_without_embedding_copy(TransformerBridge):
            bridge = TransformerBridge.boot_transformers(source.load_from, dtype=dtype, revision=source.revision, **options)
    except torch.OutOfMemoryError:
        raise ModelError(f"out of memory loading {source.load_from}: give --max-memory budgets, more GPUs or --device cpu") from None
    except Exception as exc:  # noqa: BLE001 - any loader failure becomes one line
        raise _load_error(source, exc) from None
    bridge.eval()
    try:
        return _prepare_lenses(source, config, bridge, placement, dtype)
    except torch.OutOfMemoryError:
        raise ModelError("out of memory preparing the float32 unembedding on the lens device: give the last GPU a smaller --max-memory budget") from None


def _prepare_lenses(source: ModelSource, config, bridge, placement: Placement, dtype: torch.dtype) -> LoadedModel:
    """The lens device (the unembedding's), and the unembedding and norms there, as float32."""
    cfg = bridge.cfg
    n_layers = int(cfg.n_layers)
    unembed = bridge.unembed._original_component
    lens_device = execution_device(unembed)
    embed = getattr(getattr(bridge, "embed", None), "_original_component", None)
    input_device = execution_device(embed) if embed is not None else lens_device
    if str(cfg.device).startswith("meta"):
        # The bridge takes the embedding weight's device, a placeholder when it is offloaded to
        # disk; its inputs belong on the embedding's execution device.
        cfg.device = str(input_device)
    unembed_weight = module_tensor(unembed, "weight", lens_device)  # (d_vocab, d_model), the model's dtype
    bias = module_tensor(unembed, "bias", lens_device)
    # The bridge gives bias-free heads a zero bias: skip adding it to every logit.
    unembed_bias = bias.float() if bias is not None and bool(bias.any()) else None
    # Post-norm models (OPT with do_layer_norm_before=False) have no final norm: identity.
    final_norm = getattr(getattr(bridge, "ln_final", None), "_original_component", None)
    norms: dict[NormRef, Norm | None] = {FINAL_NORM: infer_norm(final_norm, lens_device) if final_norm is not None else None}
    for i, block in enumerate(bridge.blocks):
        for slot in ("ln1", "ln2"):
            module = getattr(getattr(block, slot, None), "_original_component", None)
            if module is not None:
                norms[(slot, i)] = infer_norm(module, lens_device)
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
        device=lens_device,
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
        input_device=input_device,
        device_map=realised_device_map(bridge.original_model),
        placement_reason=placement.reason,
    )


def realised_device_map(hf_model) -> dict[str, str]:
    """Module name -> device as accelerate placed them ("cuda:N", "cpu", "disk"); {"": device}
    for a model on one device."""
    placed = getattr(hf_model, "hf_device_map", None)
    if placed:
        return {name: f"cuda:{device}" if isinstance(device, int) else str(device) for name, device in placed.items()}
    parameter = next(hf_model.parameters(), None)
    return {"": str(parameter.device) if parameter is not None else "cpu"}


def execution_device(module) -> torch.device:
    """Where a module computes: accelerate's execution device for dispatched or offloaded
    modules (their parameters may be placeholders on the meta device), else its parameters'."""
    hook = getattr(module, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is None:
        parameter = next(module.parameters(), None)
        device = parameter.device if parameter is not None else "cpu"
    device = torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
    return torch.device("cpu") if device.type == "meta" else device


def module_tensor(module, name: str, device: torch.device) -> torch.Tensor | None:
    """A module's parameter on `device`, detached: the module's own tensor when it is there
    already (no copy), a copy when it lives elsewhere or is offloaded (meta placeholder)."""
    tensor = getattr(module, name, None)
    if not isinstance(tensor, torch.Tensor):
        return None
    if tensor.device.type == "meta":
        from accelerate.utils import align_module_device

        with align_module_device(module, execution_device=device):
            return getattr(module, name).detach().to(device, copy=True)
    return tensor.detach().to(device)


@contextmanager
def _hook_scan_without_embedding_copy(bridge_class):
    """While the bridge boots, its hook scan reads every public attribute of the bridge, and
    `W_E_pos` concatenates the embedding with the positional embedding: a full copy of the
    embedding matrix (and the embedding's pages read in) that nothing uses. Hide it meanwhile."""
    original = bridge_class.__dict__.get("W_E_pos")
    if not isinstance(original, property):
        yield
        return

    def hidden(self):
        raise AttributeError("W_E_pos")

    bridge_class.W_E_pos = property(hidden)
    try:
        yield
    finally:
        bridge_class.W_E_pos = original


def _load_error(source: ModelSource, exc: Exception) -> ModelError:
    message = str(exc)
    if "mixes CPU/disk offload targets with a GPU" in message:
        return ModelError(
            "the device map puts part of the model on CPU or disk next to GPUs, which transformer-lens does not run: "
            "give GPU --max-memory budgets that hold the whole model, or --device cpu"
        )
    if "offload_folder" in message:
        return ModelError(f"{source.load_from}: some weights must be re-saved for disk offload: pass --offload-folder DIR")
    return ModelError(f"cannot load {source.load_from} with transformer-lens: {first_line(exc)}")


def detect_architecture(bridge, config) -> str:
    """post_norm when the config says blocks normalise their output (OPT with
    do_layer_norm_before=False); every other supported family is pre-norm."""
    if getattr(config, "do_layer_norm_before", True) is False:
        return POST_NORM
    return PRE_NORM


def infer_norm(module, device: torch.device | None = None) -> Norm:
    """The effective parameters of a norm module, as float32 tensors on `device` (the lens
    device; default: the module's own), checked against the module's own output."""
    device = device or execution_device(module)
    weight = module_tensor(module, "weight", device)
    bias = module_tensor(module, "bias", device)
    eps = next((float(getattr(module, a)) for a in ("variance_epsilon", "eps", "epsilon") if hasattr(module, a)), None)
    if weight is None or eps is None:
        raise ModelError(f"unsupported normalisation module {type(module).__name__}: no weight or epsilon")
    model_dtype = weight.dtype
    weight = weight.float()
    bias = bias.float() if bias is not None else None
    candidates = [
        Norm("rms", eps, weight, None),
        Norm("rms", eps, weight + 1.0, None),  # Gemma: x * (1 + w)
        Norm("layer", eps, weight, bias),
    ]
    probe = torch.randn(4, weight.shape[0], generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        # An offloaded module's accelerate hook brings its weights and the probe to its execution device.
        expected = module(probe.to(execution_device(module), model_dtype)).float().to(device)
    from lensdb.extract.lens import apply_norm

    probe = probe.to(device)
    tolerance = 1e-4 if model_dtype == torch.float32 else 5e-2
    for candidate in candidates:
        if torch.allclose(apply_norm(probe, candidate), expected, atol=tolerance, rtol=tolerance):
            return candidate


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

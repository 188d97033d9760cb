"""The run's manifest row: what was run, how, with which libraries, and the last-layer check."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata

import pyarrow as pa
import torch

import lensdb as lensdb_package
from lensdb.warehouse import schema


@dataclass
class RunFacts:
    """What the manifest records beyond the model: settings, times and the check."""

    run_id: str
    prompt_set: object  # PromptSet
    top_k: int
    seed: int
    started: datetime
    finished: datetime
    check: object  # pipeline.LastLayerCheck, combined over every rank
    settings_sha256: str | None = None  # run_settings.RecordSettings.sha256()
    world_size: int = 1  # processes that extracted the run
    load_seconds: float | None = None  # config, weights and bridge, up to the first prompt
    load_peak_host_rss_bytes: int | None = None
    peak_host_rss_bytes: int | None = None


def manifest_table(ctx, facts: RunFacts) -> pa.Table:
    """One manifest row for a run extracted with `ctx` (pipeline.RunContext)."""
    model = ctx.model
    half = model.dtype in (torch.float16, torch.bfloat16)
    norm_family = model.norm_class_names
    primary = facts.prompt_set.primary()
    check = facts.check
    row = {
        "run_id": facts.run_id,
        "model": model.source.name,
        "model_path": str(model.source.local_path) if model.source.local_path else None,
        "model_revision": model.revision,
        "source": "extract",
        "status": "committed",
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": facts.started.replace(tzinfo=None),
        "finished_at": facts.finished.replace(tzinfo=None),
        "lensdb_version": lensdb_package.__version__,
        "torch_version": torch.__version__,
        "transformers_version": _version("transformers"),
        "transformer_lens_version": _version("transformer-lens"),
        "model_class": ",".join(getattr(model.config, "architectures", None) or []) or None,
        "architecture": model.architecture,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "n_heads": model.n_heads,
        "d_vocab": model.d_vocab,
        "n_ctx": model.n_ctx,
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "lenses": list(ctx.lens_names),
        "top_k": facts.top_k,
        "prompt_set": facts.prompt_set.name,
        "prompt_set_sha256": facts.prompt_set.sha256,
        "seed": facts.seed,
        "unembed_dtype": "torch.float32",  # the precision of every lens's logits
        "use_fp32_unembed": half,
        "first_block_ln1_type": norm_family["ln1"],
        "final_ln_type": norm_family["final"],
        "use_norm_lens": "norm" in ctx.lens_names,
        "layernorm_bias_fix": "active" if norm_family["ln1"] == "LayerNorm" else "not_needed_rms_model",
        "norm_alignment_fix": "using_ln2_layernorm_for_post_block"
        if norm_family["ln1"] == "LayerNorm"
        else "using_ln2_rmsnorm_for_post_block",
        "layer0_norm_fix": "using_real_ln1_on_embeddings",
        "mixed_precision_fix": "casting_to_fp32_before_unembed",
        "layer0_position_info": "additive_pos_embed_included" if model.has_additive_positions else "token_only_rotary_model",
        "target_prediction": f"first unseen token (likely '{primary.gold}')" if primary.gold else "first unseen token",
        "last_layer_max_kl_bits": check.max_kl_bits,
        "last_layer_top1_agreement": check.top1_agreement,
        "last_layer_flagged": check.flagged,
        "legacy_blocks": None,
        "lens_details": json.dumps([lens.describe() for lens in ctx.lenses]),
        "reference_lens": ctx.reference,
        "unembed_precision": ctx.unembedding.description,
        "device_map": json.dumps(model.device_map, sort_keys=True) if model.device_map else None,
        "load_seconds": facts.load_seconds,
        "load_peak_host_rss_bytes": facts.load_peak_host_rss_bytes,
        "peak_host_rss_bytes": facts.peak_host_rss_bytes,
        "settings_sha256": facts.settings_sha256,
        "world_size": facts.world_size,
    }
    return pa.Table.from_pylist([row], schema=schema.MANIFEST)


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

"""`extract`: run a prompt set through a model and commit every lens record as one run.

Data flow: model -> residuals of a batch (capture) -> lens logits of a chunk of layers
(lens) -> vectorised statistics (stats) -> Arrow batches (records) -> Parquet (warehouse).
"""

from __future__ import annotations

import ctypes
import json
import math
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import torch

import lensdb as lensdb_package
from lensdb.errors import LensdbError, PromptError
from lensdb.extract import capture, lens as lens_math, stats as lens_stats
from lensdb.extract.device import choose_dtype, choose_placement, peak_host_memory_bytes, reset_peak_host_memory
from lensdb.extract.gold import GoldAlignment, align_gold, encode
from lensdb.extract.model import (
    LoadedModel,
    check_causal_lm,
    estimate_lens_bytes,
    estimate_weight_bytes,
    load_config,
    load_model,
    resolve_source,
)
from lensdb.extract.records import RowIndex, finals_batch, records_batch, residuals_batch
from lensdb.prompts import Prompt, PromptSet, load_prompt_set
from lensdb.warehouse import layout, schema
from lensdb.warehouse.writer import RunWriter

DEFAULT_TOP_K = 20
FINAL_TOP_K = 20  # the legacy final_prediction lists 20 tokens
DEFAULT_BATCH_SIZE = {"cpu": 8, "mps": 8, "cuda": 32}  # prompts per forward pass, per device type
DEFAULT_SEED = 316  # the original experiment's seed
CHUNK_BYTES = {"cpu": 128 << 20, "gpu": 512 << 20}  # float32 logits of one chunk of layers x positions
# The final-norm lens at the last layer should reproduce the head: flag a KL above this.
LAST_LAYER_KL_FLAG_BITS = 1e-3  # float32
LAST_LAYER_KL_FLAG_BITS_HALF = 5e-2  # float16 / bfloat16: rounding alone reaches ~1e-2 bits


@dataclass
class PreparedPrompt:
    index: int
    prompt: Prompt
    input_ids: list[int]
    context_ids: list[int]
    gold: GoldAlignment | None
    paired: Prompt | None
    paired_gold: GoldAlignment | None

    @property
    def answer_id(self) -> int:
        return _token_or_none(self.gold)

    @property
    def paired_answer_id(self) -> int:
        return _token_or_none(self.paired_gold)


@dataclass
class RunSummary:
    run_id: str
    model: str
    path: Path
    rows: dict[str, int]
    n_prompts: int
    lenses: tuple[str, ...]
    device: str
    dtype: str
    load_seconds: float
    extract_seconds: float
    bytes_on_disk: int
    last_layer_max_kl_bits: float
    last_layer_flagged: bool
    timings: dict[str, float] = field(default_factory=dict)  # time.perf_counter() marks, e.g. "loaded_at"
    device_map: dict[str, str] = field(default_factory=dict)  # realised placement: module name -> device
    load_peak_host_rss_bytes: int | None = None  # peak resident host memory while loading
    peak_host_rss_bytes: int | None = None  # peak resident host memory of the whole run (load included)


def extract(
    model: str,
    *,
    prompts: str | Path | None = None,
    warehouse: str | Path | None = None,
    lenses: tuple[str, ...] | list[str] = lens_math.LENSES,
    top_k: int = DEFAULT_TOP_K,
    device: str = "auto",
    dtype: str = "auto",
    revision: str | None = None,
    batch_size: int | None = None,
    keep_residuals: bool = False,
    run_id: str | None = None,
    model_name: str | None = None,
    seed: int = DEFAULT_SEED,
    progress: bool = False,
    chunk_bytes: int | None = None,
    device_map: str | dict | None = None,
    max_memory: str | dict | None = None,
    offload_folder: str | Path | None = None,
) -> RunSummary:
    """Extract every prompt x lens x layer x position record of `model` into the warehouse.

    The run is written to a staging folder and committed atomically at the end; on any
    error nothing becomes visible.
    """
    lenses = _check_lenses(lenses)
    if top_k < 1:
        raise LensdbError("--top-k must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise LensdbError("--batch-size must be at least 1")
    prompt_set = load_prompt_set(prompts)
    warehouse_path = layout.resolve_warehouse(warehouse)
    run_id = layout.check_run_id(run_id) if run_id else layout.new_run_id()
    source = resolve_source(model, revision, model_name)
    started = datetime.now(timezone.utc)
    with RunWriter(warehouse_path, source.name, run_id) as writer:
        t0 = time.perf_counter()
        config = load_config(source)
        check_causal_lm(config, source)
        weight_bytes = estimate_weight_bytes(source, config)
        placement = choose_placement(
            device, weight_bytes, device_map=device_map, max_memory=max_memory, offload_folder=offload_folder, lens_bytes=estimate_lens_bytes(config)
        )
        chosen_dtype = choose_dtype(dtype, placement.device_type, getattr(config, "model_type", None), weight_bytes)
        torch.manual_seed(seed)
        reset_peak_host_memory()
        loaded = load_model(source, config, placement, chosen_dtype)
        loaded_at = time.perf_counter()
        load_seconds = loaded_at - t0
        load_peak_rss = peak_host_memory_bytes()
        chosen_device = loaded.device  # the lens device
        if top_k > loaded.d_vocab:
            raise LensdbError(f"--top-k {top_k} exceeds the vocabulary size {loaded.d_vocab}")
        t1 = time.perf_counter()
        prepared = prepare_prompts(loaded, prompt_set)
        if progress and (device == "auto" or placement.single_device is None):
            # After the input checks, so that bad input still gets one line on stderr.
            print(f"lensdb: {placement.reason}", file=sys.stderr)
        vocab = vocabulary_strings(loaded)
        writer.write("prompts", prompts_table(prepared, vocab), schema.PROMPTS)
        batch_size = batch_size or default_batch_size(chosen_device.type)
        if chunk_bytes is None:
            chunk_bytes = CHUNK_BYTES["cpu" if chosen_device.type == "cpu" else "gpu"]
        check = _run_batches(loaded, prepared, vocab, writer, lenses, top_k, batch_size, keep_residuals, progress, chunk_bytes)
        run_peak_rss = peak_host_memory_bytes()
        manifest = manifest_table(
            loaded, prompt_set, run_id, lenses, top_k, seed, started, datetime.now(timezone.utc), check,
            load_seconds=load_seconds, load_peak_host_rss_bytes=load_peak_rss, peak_host_rss_bytes=run_peak_rss,
        )
        path = writer.commit(manifest, schema.MANIFEST)
        extract_seconds = time.perf_counter() - t1  # the last Parquet writes and the commit included
        rows = dict(writer.rows_written)
    return RunSummary(
        run_id=run_id,
        model=source.name,
        path=path,
        rows=rows,
        n_prompts=len(prepared),
        lenses=lenses,
        device=str(chosen_device),
        dtype=str(chosen_dtype).removeprefix("torch."),
        load_seconds=load_seconds,
        extract_seconds=extract_seconds,
        bytes_on_disk=sum(p.stat().st_size for p in path.rglob("*.parquet")),
        last_layer_max_kl_bits=check.max_kl_bits,
        last_layer_flagged=check.flagged,
        timings={"loaded_at": loaded_at},
        device_map=loaded.device_map,
        load_peak_host_rss_bytes=load_peak_rss,
        peak_host_rss_bytes=run_peak_rss,
    )


def default_batch_size(device_type: str) -> int:
    return DEFAULT_BATCH_SIZE.get(device_type, DEFAULT_BATCH_SIZE["cpu"])


def _check_lenses(lenses) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(lenses))
    unknown = [name for name in chosen if name not in lens_math.LENSES]
    if unknown or not chosen:
        raise LensdbError(f"unknown lens {', '.join(unknown) or '(none)'}: choose from {', '.join(lens_math.LENSES)}")
    # The norm lens goes first: the other lenses are compared with it (kl_vs_norm_bits).
    return tuple(sorted(chosen, key=lambda name: name != "norm"))


def prepare_prompts(model: LoadedModel, prompt_set: PromptSet) -> list[PreparedPrompt]:
    """Tokenize every prompt (BOS as transformer-lens prepends it) and align gold answers."""
    alignments: dict[tuple[str, str], GoldAlignment | None] = {}
    for prompt in prompt_set.prompts:
        alignments[prompt.key] = align_gold(model.tokenizer, prompt.text, prompt.gold) if prompt.gold else None
    prepared = []
    for index, prompt in enumerate(prompt_set.prompts):
        input_ids = model.bridge.to_tokens(prompt.text, truncate=False)[0].tolist()
        if not input_ids:
            raise PromptError(f"prompt {prompt.id!r} ({prompt.variant}) has no tokens")
        if len(input_ids) > model.n_ctx:
            raise PromptError(
                f"prompt {prompt.id!r} ({prompt.variant}) has {len(input_ids)} tokens, more than the model's context of {model.n_ctx}"
            )
        paired = prompt_set.paired_prompt(prompt)
        prepared.append(
            PreparedPrompt(
                index=index,
                prompt=prompt,
                input_ids=input_ids,
                context_ids=encode(model.tokenizer, prompt.text),
                gold=alignments[prompt.key],
                paired=paired,
                paired_gold=alignments[paired.key] if paired is not None else None,
            )
        )
    return prepared


def vocabulary_strings(model: LoadedModel) -> pa.Array:
    """Each vocabulary id decoded once, as the tokenizer decodes that single id."""
    known = min(model.d_vocab, len(model.tokenizer))
    strings = model.tokenizer.batch_decode([[i] for i in range(known)])
    strings.extend([""] * (model.d_vocab - known))
    return pa.array(strings, pa.string())


def prompts_table(prepared: list[PreparedPrompt], vocab: pa.Array) -> pa.Table:
    rows = []
    for item in prepared:
        prompt, gold = item.prompt, item.gold
        rows.append(
            {
                "prompt_index": item.index,
                "prompt_id": prompt.id,
                "prompt_variant": prompt.variant,
                "role": prompt.role,
                "text": prompt.text,
                "gold": prompt.gold,
                "control_of": prompt.control_of,
                "paired_variant": item.paired.variant if item.paired else None,
                "temperatures": list(prompt.temperatures),
                "n_tokens": len(item.input_ids),
                "token_ids": item.input_ids,
                "tokens": vocab.take(pa.array(item.input_ids, pa.int64())).to_pylist(),
                "context_ids": item.context_ids,
                "gold_alignment": gold.status if gold else None,
                "gold_variant": gold.variant if gold else None,
                "gold_first_id": gold.first_id if gold else None,
                "gold_answer_ids": list(gold.answer_ids) if gold else None,
                "gold_pieces": list(gold.pieces) if gold else None,
                "paired_gold_first_id": item.paired_gold.first_id if item.paired_gold else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.PROMPTS)


@dataclass
class LastLayerCheck:
    """The final-norm lens at the last layer vs the model head, at each prompt's last position."""

    max_kl_bits: float = 0.0
    agreeing: int = 0
    prompts: int = 0
    flag_threshold_bits: float = 1e-3

    @property
    def top1_agreement(self) -> float:
        return self.agreeing / self.prompts if self.prompts else math.nan

    @property
    def flagged(self) -> bool:
        return self.max_kl_bits > self.flag_threshold_bits


def _run_batches(
    model: LoadedModel,
    prepared: list[PreparedPrompt],
    vocab: pa.Array,
    writer: RunWriter,
    lenses: tuple[str, ...],
    top_k: int,
    batch_size: int,
    keep_residuals: bool,
    progress: bool,
    chunk_bytes: int,
) -> LastLayerCheck:
    from tqdm import tqdm

    prompt_ids = pa.array([p.prompt.id for p in prepared], pa.string())
    prompt_variants = pa.array([p.prompt.variant for p in prepared], pa.string())
    threshold = LAST_LAYER_KL_FLAG_BITS if model.dtype == torch.float32 else LAST_LAYER_KL_FLAG_BITS_HALF
    check = LastLayerCheck(flag_threshold_bits=threshold)
    # Longest first, so that padding stays small and memory peaks early.
    order = sorted(prepared, key=lambda p: -len(p.input_ids))
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    hooks = model.residual_hooks()
    bar = tqdm(total=len(prepared), unit="prompt", desc=model.source.name, file=sys.stderr, disable=None if progress else True)
    with bar:
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            output = capture.run_pass(
                model.bridge, hooks, [p.input_ids for p in batch], pad_id, model.input_device or model.device, lens_device=model.device
            )
            rows = _row_index(batch)
            _write_lens_records(model, output, batch, rows, lenses, top_k, chunk_bytes, writer, vocab, prompt_ids, prompt_variants)
            _write_finals_and_consistency(model, output, batch, lenses, top_k, writer, vocab, check)
            if keep_residuals:
                writer.append(
                    "residuals",
                    residuals_batch(
                        output.residuals,
                        layers=np.arange(model.n_layers + 1),
                        rows=rows,
                        prompt_ids=prompt_ids,
                        prompt_variants=prompt_variants,
                    ),
                    schema.residuals_schema(
                        pa.float16() if model.dtype == torch.float16 else pa.float32(), model.d_model
                    ),
                )
            del output
            _return_freed_memory()
            bar.update(len(batch))
    return check


def _return_freed_memory() -> None:
    """glibc keeps the heap pages of freed tensors; without this, resident memory creeps up
    batch after batch instead of staying at one batch's worth."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - glibc only
        return libc
    except (OSError, AttributeError):
        return None


_LIBC = _load_libc()


def _row_index(batch: list[PreparedPrompt]) -> RowIndex:
    lengths = [len(p.input_ids) for p in batch]
    pos = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    return RowIndex(
        prompt=np.repeat(np.array([p.index for p in batch], dtype=np.int64), lengths),
        pos=pos,
        token_id=np.concatenate([np.array(p.input_ids, dtype=np.int32) for p in batch]),
        is_last=pos == np.repeat(np.array(lengths, dtype=np.int32) - 1, lengths),
    )


def _write_lens_records(model, output, batch, rows, lenses, top_k, chunk_bytes, writer, vocab, prompt_ids, prompt_variants):
    device = model.device
    n_rows = output.logits.shape[0]
    lengths = [len(p.input_ids) for p in batch]
    answer_ids = torch.tensor(np.repeat([p.answer_id for p in batch], lengths), device=device)
    paired_ids = torch.tensor(np.repeat([p.paired_answer_id for p in batch], lengths), device=device)
    final_log_probs = torch.log_softmax(output.logits, dim=-1)
    final_unit = output.logits / (torch.linalg.vector_norm(output.logits, dim=-1, keepdim=True) + 1e-12)
    n_layers = model.n_layers + 1
    # Logits of every lens of a chunk are alive together.
    rows_per_chunk = max(1, chunk_bytes // (model.d_vocab * 4 * len(lenses)))
    positions_per_chunk = min(n_rows, rows_per_chunk)
    layers_per_chunk = max(1, rows_per_chunk // positions_per_chunk)
    for row_start in range(0, n_rows, positions_per_chunk):
        row_slice = slice(row_start, row_start + positions_per_chunk)
        chunk_rows = rows.take(row_slice)
        for layer_start in range(0, n_layers, layers_per_chunk):
            layers = np.arange(layer_start, min(n_layers, layer_start + layers_per_chunk))
            residuals = output.residuals[layer_start : layers[-1] + 1, row_slice]
            results = lens_stats.chunk_statistics(
                {lens: lens_logits(model, lens, residuals, layers) for lens in lenses},
                final_log_probs=final_log_probs[row_slice],
                final_logits_unit=final_unit[row_slice],
                answer_ids=answer_ids[row_slice],
                paired_ids=paired_ids[row_slice],
                top_k=top_k,
                # Cache-sized blocks on CPUs; on GPUs many small kernels cost more than memory traffic.
                block_bytes=lens_stats.BLOCK_BYTES if device.type == "cpu" else None,
            )
            for lens, result in results.items():
                batch_records = records_batch(
                    result,
                    lens=lens,
                    layers=layers,
                    rows=chunk_rows,
                    prompt_ids=prompt_ids,
                    prompt_variants=prompt_variants,
                    vocab=vocab,
                )
                append_records(writer, batch_records)


def append_records(writer: RunWriter, batch: pa.RecordBatch) -> None:
    """Last-position rows go to a file of their own, so next-token queries skip the rest."""
    last = batch.column("is_last_pos")
    writer.append("records", batch.filter(last), schema.RECORDS, part="next")
    writer.append("records", batch.filter(pa.compute.invert(last)), schema.RECORDS)


def lens_logits(model: LoadedModel, lens: str, residuals: torch.Tensor, layers: np.ndarray) -> torch.Tensor:
    """Lens logits (len(layers), rows, d_vocab) in float32: all layers of the chunk in one matmul."""
    refs = [lens_math.norm_for(lens, int(layer), model.n_layers, model.architecture) for layer in layers]
    if all(ref == refs[0] for ref in refs):
        normalized = lens_math.apply_norm(residuals, _norm(model, refs[0]))
    else:
        normalized = torch.stack(
            [lens_math.apply_norm(residuals[i], _norm(model, ref)) for i, ref in enumerate(refs)]
        )
    return lens_math.project(normalized, model.unembed_weight, model.unembed_bias)


def _norm(model: LoadedModel, ref):
    return None if ref is None else model.norms[ref]


def _write_finals_and_consistency(model, output, batch, lenses, top_k, writer, vocab, check: LastLayerCheck):
    lengths = np.array([len(p.input_ids) for p in batch])
    last_rows = torch.tensor(np.cumsum(lengths) - 1, device=model.device)
    head_logits = output.logits[last_rows]
    head_log_probs = torch.log_softmax(head_logits, dim=-1)
    writer.append("finals", finals_table(model, batch, head_logits, top_k, vocab), schema.FINALS)
    last_layer = np.array([model.n_layers])
    last_residuals = output.residuals[model.n_layers :, last_rows]
    # Lenses that apply the same norm at the last layer (norm and final_ln on pre-norm
    # models) share one projection and one fit.
    fits: dict = {}
    consistency = []
    for lens in dict.fromkeys((*lenses, "final_ln")):
        ref = lens_math.norm_for(lens, model.n_layers, model.n_layers, model.architecture)
        if ref not in fits:
            logits = lens_logits(model, lens, last_residuals, last_layer)[0]
            fits[ref] = (logits, None)
        logits, fit = fits[ref]
        if lens == "final_ln":
            kl = lens_stats.kl_bits(torch.log_softmax(logits, dim=-1), head_log_probs)
            check.max_kl_bits = max(check.max_kl_bits, float(kl.max().item()))
            check.agreeing += int((logits.argmax(-1) == head_logits.argmax(-1)).sum().item())
            check.prompts += len(batch)
            if lens not in lenses:
                continue
        if fit is None:
            fit = lens_stats.head_consistency(
                logits, head_log_probs, model.logit_scale, model.logit_softcap, one_row_at_a_time=model.device.type == "cpu"
            )
            fits[ref] = (logits, fit)
        consistency.append(
            {
                "prompt_id": [p.prompt.id for p in batch],
                "prompt_variant": [p.prompt.variant for p in batch],
                "lens": [lens] * len(batch),
                "temp_est": fit.temp_est,
                "kl_after_temp_bits": fit.kl_after_temp_bits,
                "cfg_scale": [model.logit_scale] * len(batch),
                "cfg_softcap": [model.logit_softcap] * len(batch),
                "kl_after_scale_bits": fit.kl_after_scale_bits,
                "kl_after_softcap_bits": fit.kl_after_softcap_bits,
                "kl_after_scale_then_softcap_bits": fit.kl_after_scale_then_softcap_bits,
            }
        )
    for columns in consistency:
        writer.append("consistency", pa.Table.from_pydict(columns, schema=schema.CONSISTENCY), schema.CONSISTENCY)


def finals_table(model, batch, head_logits: torch.Tensor, top_k: int, vocab: pa.Array) -> pa.Table:
    """The model's own distribution at each prompt's last position (temperature 1.0) and at the
    temperatures the prompt asks for: top max(top_k, 20) and entropy, all rows in one pass."""
    rows = [(i, t) for i, item in enumerate(batch) for t in dict.fromkeys((1.0, *item.prompt.temperatures))]
    index = torch.tensor([i for i, _ in rows], device=head_logits.device)
    temperatures = torch.tensor([t for _, t in rows], device=head_logits.device, dtype=head_logits.dtype)
    scaled = head_logits[index] / temperatures[:, None]
    ids, probs = lens_stats.top_k_of(scaled, min(max(top_k, FINAL_TOP_K), model.d_vocab))
    return finals_batch(
        prompt_ids=[batch[i].prompt.id for i, _ in rows],
        prompt_variants=[batch[i].prompt.variant for i, _ in rows],
        temperatures=[t for _, t in rows],
        entropy_bits=lens_stats.entropy_bits(scaled),
        topk_ids=ids,
        topk_probs=probs,
        vocab=vocab,
    )


def manifest_table(
    model: LoadedModel,
    prompt_set: PromptSet,
    run_id: str,
    lenses: tuple[str, ...],
    top_k: int,
    seed: int,
    started: datetime,
    finished: datetime,
    check: LastLayerCheck,
    *,
    load_seconds: float | None = None,
    load_peak_host_rss_bytes: int | None = None,
    peak_host_rss_bytes: int | None = None,
) -> pa.Table:
    half = model.dtype in (torch.float16, torch.bfloat16)
    norm_family = model.norm_class_names
    primary = prompt_set.primary()
    row = {
        "run_id": run_id,
        "model": model.source.name,
        "model_path": str(model.source.local_path) if model.source.local_path else None,
        "model_revision": model.revision,
        "source": "extract",
        "status": "committed",
        "schema_version": schema.SCHEMA_VERSION,
        "created_at": started.replace(tzinfo=None),
        "finished_at": finished.replace(tzinfo=None),
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
        "lenses": list(lenses),
        "top_k": top_k,
        "prompt_set": prompt_set.name,
        "prompt_set_sha256": prompt_set.sha256,
        "seed": seed,
        "unembed_dtype": str(model.unembed_weight.dtype),
        "use_fp32_unembed": half,
        "first_block_ln1_type": norm_family["ln1"],
        "final_ln_type": norm_family["final"],
        "use_norm_lens": "norm" in lenses,
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
        "device_map": json.dumps(model.device_map, sort_keys=True) if model.device_map else None,
        "load_seconds": load_seconds,
        "load_peak_host_rss_bytes": load_peak_host_rss_bytes,
        "peak_host_rss_bytes": peak_host_rss_bytes,
    }
    return pa.Table.from_pylist([row], schema=schema.MANIFEST)


def _token_or_none(gold: GoldAlignment | None) -> int:
    if gold is None or gold.first_id is None:
        return lens_stats.NO_TOKEN
    return gold.first_id


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None

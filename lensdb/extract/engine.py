"""`extract`: run a prompt set through a model and commit every lens record as one run.

This module only orders the stages (see pipeline.py for the data flow):
check the options -> load the model (model.py) -> build the lenses (lenses.py) ->
prepare prompts and batches (batches.py) -> run the batches (pipeline.py), the writer
thread (sink.py) writing Parquet into staging -> manifest -> atomic commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import torch

from lensdb.errors import LensdbError
from lensdb.extract.batches import make_batches, prepare_prompts, vocabulary_strings
from lensdb.extract.device import choose_device, choose_dtype
from lensdb.extract.lenses import Unembedding, build_lenses, choose_unembedding_strategy
from lensdb.extract.manifest import RunFacts, manifest_table
from lensdb.extract.model import check_causal_lm, estimate_weight_bytes, load_config, load_model, resolve_source
from lensdb.extract.pipeline import (
    LAST_LAYER_KL_FLAG_BITS,
    LAST_LAYER_KL_FLAG_BITS_HALF,
    LastLayerCheck,
    RunContext,
    run_batches,
)
from lensdb.extract.records import prompts_table, vocab_table
from lensdb.extract.sink import RecordSink
from lensdb.lenses import DEFAULT_LENSES, parse_lens_specs, reference_lens
from lensdb.prompts import load_prompt_set
from lensdb.warehouse import layout, schema
from lensdb.warehouse.writer import RunWriter

DEFAULT_TOP_K = 20
DEFAULT_BATCH_SIZE = {"cpu": 8, "mps": 8, "cuda": 32}  # prompts per forward pass, per device type
DEFAULT_SEED = 316  # the original experiment's seed
CHUNK_BYTES = {"cpu": 128 << 20, "gpu": 512 << 20}  # float32 logits of one chunk of layers x positions


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
    unembed_precision: str = "float32"
    timings: dict[str, float] = field(default_factory=dict)  # time.perf_counter() marks, e.g. "loaded_at"


def extract(
    model: str,
    *,
    prompts: str | Path | None = None,
    warehouse: str | Path | None = None,
    lenses=DEFAULT_LENSES,
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
    reference: str | None = None,
    unembed: str = "auto",
) -> RunSummary:
    """Extract every prompt x lens x layer x position record of `model` into the warehouse.

    `lenses` is a list or comma string of lens specs (lensdb/lenses.py: norm, final_ln, raw,
    tuned:DIR, ...); `reference` names the lens kl_vs_norm_bits compares with (default norm);
    `unembed` is auto | float32 | split (lenses.Unembedding).
    The run is written to a staging folder and committed atomically at the end; on any
    error nothing becomes visible.
    """
    specs = parse_lens_specs(lenses)
    reference = reference_lens(specs, reference)
    if top_k < 1:
        raise LensdbError("--top-k must be at least 1")
    if batch_size is not None and batch_size < 1:
        raise LensdbError("--batch-size must be at least 1")
    if unembed not in ("auto", "float32", "split"):
        raise LensdbError(f"--unembed {unembed}: choose auto, float32 or split")
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
        chosen_device = choose_device(device, weight_bytes)
        chosen_dtype = choose_dtype(dtype, chosen_device, getattr(config, "model_type", None), weight_bytes)
        torch.manual_seed(seed)
        loaded = load_model(source, config, chosen_device, chosen_dtype)
        loaded_at = time.perf_counter()
        load_seconds = loaded_at - t0
        if top_k > loaded.d_vocab:
            raise LensdbError(f"--top-k {top_k} exceeds the vocabulary size {loaded.d_vocab}")
        t1 = time.perf_counter()
        lens_objects = build_lenses(specs, loaded, warehouse_path)
        strategy = choose_unembedding_strategy(unembed, loaded.unembed_weight)
        prepared = prepare_prompts(loaded, prompt_set)
        vocab = vocabulary_strings(loaded.tokenizer, loaded.d_vocab)
        writer.write("prompts", prompts_table(prepared, vocab), schema.PROMPTS)
        writer.write("vocab", vocab_table(loaded.tokenizer, loaded.d_vocab, vocab), schema.VOCAB)
        batch_size = batch_size or default_batch_size(loaded.device.type)
        if chunk_bytes is None:
            chunk_bytes = CHUNK_BYTES["cpu" if loaded.device.type == "cpu" else "gpu"]
        ctx = RunContext(
            model=loaded,
            lenses=lens_objects,
            reference=reference,
            unembedding=Unembedding(loaded.unembed_weight, loaded.unembed_bias, strategy),
            top_k=top_k,
            batch_size=batch_size,
            chunk_bytes=chunk_bytes,
            keep_residuals=keep_residuals,
            vocab=vocab,
            prompt_ids=pa.array([p.prompt.id for p in prepared], pa.string()),
            prompt_variants=pa.array([p.prompt.variant for p in prepared], pa.string()),
            progress=progress,
            check=LastLayerCheck(
                flag_threshold_bits=LAST_LAYER_KL_FLAG_BITS if loaded.dtype == torch.float32 else LAST_LAYER_KL_FLAG_BITS_HALF
            ),
        )
        with RecordSink(writer) as sink:
            check = run_batches(ctx, make_batches(prepared, batch_size), sink)
            sink.close()
        facts = RunFacts(run_id, prompt_set, top_k, seed, started, datetime.now(timezone.utc), check)
        path = writer.commit(manifest_table(ctx, facts), schema.MANIFEST)
        extract_seconds = time.perf_counter() - t1  # the last Parquet writes and the commit included
        rows = dict(writer.rows_written)
    return RunSummary(
        run_id=run_id,
        model=source.name,
        path=path,
        rows=rows,
        n_prompts=len(prepared),
        lenses=ctx.lens_names,
        device=str(loaded.device),
        dtype=str(chosen_dtype).removeprefix("torch."),
        load_seconds=load_seconds,
        extract_seconds=extract_seconds,
        bytes_on_disk=sum(p.stat().st_size for p in path.rglob("*.parquet")),
        last_layer_max_kl_bits=check.max_kl_bits,
        last_layer_flagged=check.flagged,
        unembed_precision=ctx.unembedding.description,
        timings={"loaded_at": loaded_at},
    )


def default_batch_size(device_type: str) -> int:
    return DEFAULT_BATCH_SIZE.get(device_type, DEFAULT_BATCH_SIZE["cpu"])

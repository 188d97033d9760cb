"""`extract`: run a prompt set through a model and commit every lens record as one run.

This module only orders the stages (see pipeline.py for the data flow):
check the options (config.py: ExtractConfig) -> load the model (source.py, model.py) -> build
the lenses (lensdb/lenses) ->
prepare prompts and batches (batches.py) -> run the batches (pipeline.py), the writer
thread (sink.py) writing Parquet into staging -> manifest -> atomic commit.
Under torchrun, ranks share the batches and rank 0 commits once (distributed.py).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import torch

from lensdb.errors import LensdbError
from lensdb.extract import distributed
from lensdb.extract.attribution_records import plan as attribution_plan
from lensdb.extract.group_records import prepare_groups
from lensdb.extract.batches import make_batches, prepare_prompts, vocabulary_strings
from lensdb.extract.device import choose_dtype, choose_placement, peak_host_memory_bytes, reset_peak_host_memory
from lensdb.extract.config import ExtractConfig, check_model_argument
from lensdb.extract.manifest import RunFacts, manifest_table
from lensdb.extract.model import load_model
from lensdb.extract.pipeline import (
    LAST_LAYER_KL_FLAG_BITS,
    LAST_LAYER_KL_FLAG_BITS_HALF,
    LastLayerCheck,
    RunContext,
    run_batches,
)
from lensdb.extract.records import prompts_table, vocab_table
from lensdb.extract.sink import RecordSink
from lensdb.extract.source import check_causal_lm, estimate_lens_bytes, estimate_weight_bytes, load_config, resolve_source
from lensdb.extract.unembedding import Unembedding, choose_unembedding_strategy
from lensdb.extract.sites import parallel_block_reason, resolve_sites
from lensdb.lenses import build_lenses
from lensdb.prompts import default_prompt_set, load_prompt_set
from lensdb.run_settings import LensIdentity
from lensdb.warehouse import layout, schema
from lensdb.warehouse.writer import RunWriter

DEFAULT_BATCH_SIZE = {"cpu": 8, "mps": 8, "cuda": 32}  # prompts per forward pass, per device type
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
    rank: int = 0  # this process's rank under torchrun
    world_size: int = 1  # processes that extracted the run
    device_map: dict[str, str] = field(default_factory=dict)  # realised placement: module name -> device
    load_peak_host_rss_bytes: int | None = None  # peak resident host memory while loading
    peak_host_rss_bytes: int | None = None  # peak resident host memory of the whole run (load included)


def extract(
    model: str,
    config: ExtractConfig | None = None,
    *,
    prompts: str | Path | None = None,
    warehouse: str | Path | None = None,
    **options,
) -> RunSummary:
    """Extract every prompt x lens x layer x position record of `model` into the warehouse.

    `config` holds the options (lensdb/extract/config.py: lenses, top_k, device, dtype, ...);
    keywords build one instead, as `lensdb.extract(model, top_k=5, lenses="norm,raw")`
    (ExtractConfig.from_keywords: `reference` names the reference lens, and no progress bar
    is drawn unless progress=True). The run is written to a staging folder and committed
    atomically at the end; on any error nothing becomes visible. Under torchrun
    (WORLD_SIZE > 1) every rank runs a share of the batches into the same run, committed
    once by rank 0 (distributed.py).
    """
    check_model_argument(model)
    if config is None:
        config = ExtractConfig.from_keywords(**options)
    elif options:
        raise TypeError(f"extract() takes a config or keywords, not both (got {', '.join(options)})")
    prompt_set = load_prompt_set(default_prompt_set(model) if prompts is None else prompts)
    warehouse_path = layout.resolve_warehouse(warehouse)
    requested_run_id = layout.check_run_id(config.run_id) if config.run_id else None
    source = resolve_source(model, config.revision, config.model_name)
    started = datetime.now(timezone.utc)
    with distributed.from_environment(config.device) as ranks:
        writer = distributed.shared_writer(ranks, warehouse_path, source.name, requested_run_id)
        run_id = writer.run_id
        try:
            share, error = None, None
            try:
                if not ranks.leader:
                    writer.open()  # checks that this rank sees rank 0's staging folder
                share = _extract_share(source, prompt_set, warehouse_path, config, ranks, writer)
                if ranks.distributed:
                    writer.finish()  # every file closed before the vote
            except BaseException as exc:  # noqa: BLE001 - every rank votes, then raises
                error = exc
            reports = ranks.vote(
                distributed.RankReport(ranks.rank, None, share.check_facts, dict(writer.rows_written))
                if error is None
                else distributed.RankReport(ranks.rank, distributed.describe_error(error)),
                error,
                abandon=writer.abort,
            )
            check = distributed.combined_check(reports, share.ctx.check.flag_threshold_bits)
            run_peak_rss = peak_host_memory_bytes()  # read once: the manifest and the summary report the same number
            peak_read_at = time.perf_counter()

            def commit():
                facts = RunFacts(
                    run_id, prompt_set, config.top_k, config.seed, started, datetime.now(timezone.utc), check, share.settings_sha256, ranks.world_size,
                    load_seconds=share.load_seconds, load_peak_host_rss_bytes=share.load_peak_rss, peak_host_rss_bytes=run_peak_rss,
                )
                path = writer.commit(manifest_table(share.ctx, facts), schema.MANIFEST)
                return path, writer.bytes_committed, writer.rows_written.get("manifest", 0)

            path, bytes_on_disk, manifest_rows = ranks.from_leader(commit)
            writer.committed = True  # rank 0's commit holds every rank's files: no rank may delete its own now
        finally:
            if not writer.committed:
                writer.abort()
    extract_seconds = time.perf_counter() - share.extract_started  # the last Parquet writes and the commit included
    rows = (distributed.summed_rows(reports) | {"manifest": manifest_rows}) if ranks.distributed else dict(writer.rows_written)
    loaded = share.ctx.model
    return RunSummary(
        run_id=run_id,
        model=source.name,
        path=path,
        rows=rows,
        n_prompts=share.n_prompts,
        lenses=share.ctx.lens_names,
        device=str(loaded.device),
        dtype=str(loaded.dtype).removeprefix("torch."),
        load_seconds=share.load_seconds,
        extract_seconds=extract_seconds,
        bytes_on_disk=bytes_on_disk,
        last_layer_max_kl_bits=check.max_kl_bits,
        last_layer_flagged=check.flagged,
        unembed_precision=share.ctx.unembedding.description,
        timings={"loaded_at": share.loaded_at, "peak_read_at": peak_read_at},
        rank=ranks.rank,
        world_size=ranks.world_size,
        device_map=loaded.device_map,
        load_peak_host_rss_bytes=share.load_peak_rss,
        peak_host_rss_bytes=run_peak_rss,
    )


@dataclass
class _Share:
    """One process's part of a run, written and closed."""

    ctx: RunContext
    n_prompts: int
    settings_sha256: str
    load_seconds: float
    loaded_at: float
    extract_started: float
    load_peak_rss: int | None = None

    @property
    def check_facts(self) -> tuple[float, int, int]:
        return (self.ctx.check.max_kl_bits, self.ctx.check.agreeing, self.ctx.check.prompts)


def _extract_share(source, prompt_set, warehouse_path: Path, options: ExtractConfig, ranks, writer: RunWriter) -> _Share:
    """Load the model, then run this rank's batches (all of them in a single process) into `writer`."""
    t0 = time.perf_counter()
    config = load_config(source)
    check_causal_lm(config, source)
    resolve_sites(options.sites, source.name, parallel_block_reason(config))  # --sites mid: refused before the weights load
    weight_bytes = estimate_weight_bytes(source, config)
    placement = ranks.placement(
        choose_placement(
            options.device,
            weight_bytes,
            device_map=options.device_map,
            max_memory=options.max_memory,
            offload_folder=options.offload_folder,
            lens_bytes=estimate_lens_bytes(config),
        )
    )
    chosen_dtype = choose_dtype(options.dtype, placement.device_type, getattr(config, "model_type", None), weight_bytes)
    torch.manual_seed(options.seed)
    reset_peak_host_memory()
    loaded = load_model(source, config, placement, chosen_dtype)
    loaded_at = time.perf_counter()
    load_peak_rss = peak_host_memory_bytes()
    if options.top_k > loaded.d_vocab:
        raise LensdbError(f"--top-k {options.top_k} exceeds the vocabulary size {loaded.d_vocab}")
    t1 = time.perf_counter()
    sites, note = resolve_sites(options.sites, source.name, parallel_block_reason(loaded.config, loaded.bridge.cfg, loaded.bridge.hook_dict))
    if note and ranks.leader:
        print(f"lensdb: {note}", file=sys.stderr)
    lens_objects = build_lenses(options.lenses, loaded, warehouse_path)
    for lens in lens_objects:
        lens.check_sites(sites)
    strategy = choose_unembedding_strategy(options.unembed, loaded.unembed_weight)
    prepared = prepare_prompts(loaded, prompt_set)
    progress = not options.quiet
    if progress and ranks.leader and (options.device == "auto" or placement.single_device is None):
        # After the input checks, so that bad input still gets one line on stderr.
        print(f"lensdb: {placement.reason}", file=sys.stderr)
    vocab = vocabulary_strings(loaded.tokenizer, loaded.d_vocab)
    if ranks.leader:
        writer.write("prompts", prompts_table(prepared, vocab), schema.PROMPTS)
        writer.write("vocab", vocab_table(loaded.tokenizer, loaded.d_vocab, vocab), schema.VOCAB)
    groups = prepare_groups(loaded.tokenizer, options.track, prepared, vocab, loaded.device)
    if ranks.leader and options.track:
        writer.write("group_tokens", groups.words, schema.GROUP_TOKENS)
    if ranks.leader and groups.prompt_answer_index is not None:
        writer.write("answer_tokens", groups.answers, schema.ANSWER_TOKENS)
    batch_size = options.batch_size or default_batch_size(loaded.device.type)
    chunk_bytes = options.chunk_bytes or CHUNK_BYTES["cpu" if loaded.device.type == "cpu" else "gpu"]
    ctx = RunContext(
        model=loaded,
        lenses=lens_objects,
        reference=options.reference,
        unembedding=Unembedding(loaded.unembed_weight, loaded.unembed_bias, strategy),
        top_k=options.top_k,
        batch_size=batch_size,
        chunk_bytes=chunk_bytes,
        keep_residuals=options.keep_residuals,
        vocab=vocab,
        prompt_ids=pa.array([p.prompt.id for p in prepared], pa.string()),
        prompt_variants=pa.array([p.prompt.variant for p in prepared], pa.string()),
        progress=progress and ranks.leader,
        sites=sites,
        check=LastLayerCheck(
            flag_threshold_bits=LAST_LAYER_KL_FLAG_BITS if loaded.dtype == torch.float32 else LAST_LAYER_KL_FLAG_BITS_HALF
        ),
        groups=groups if groups.active else None,
        attribution=attribution_plan(loaded) if options.attribution else None,
    )
    # The batches of a one-process run, dealt out whole: each batch's records stay the same.
    batches = make_batches(prepared, batch_size)
    mine = [batches[i] for i in ranks.share([sum(len(p.input_ids) for p in batch.prompts) for batch in batches])]
    with RecordSink(writer) as sink:
        run_batches(ctx, mine, sink)
        sink.close()
    settings = options.record_settings(lenses=tuple(LensIdentity(lens.name, lens.kind, lens.describe().get("sha256")) for lens in lens_objects))
    return _Share(ctx, len(prepared), settings.sha256(), loaded_at - t0, loaded_at, t1, load_peak_rss)


def default_batch_size(device_type: str) -> int:
    return DEFAULT_BATCH_SIZE.get(device_type, DEFAULT_BATCH_SIZE["cpu"])

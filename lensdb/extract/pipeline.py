"""Stages 2-5 of an extraction: capture -> lens -> statistics -> records, batch after batch.

    batches (batches.py)  prompts -> token ids, gold, batches of rows
    capture (capture.py)  one forward pass per batch: residuals of every layer, final logits
    lens    (lensdb/lenses) residuals of a chunk of layers x rows -> logits of every lens
    stats   (stats.py)    logits -> entropy, top-k, gold ranks, KL, cosine (on the device)
    records (records.py)  statistics -> Arrow record batches
    writer  (sink.py)     Arrow -> Parquet, on a thread of its own (warehouse/writer.py)

Only statistics (top-k, gold, scalars) leave the device, through non-blocking copies into
pinned memory; the compute stages never wait for the host except once per batch for the
next batch's inputs.
"""

from __future__ import annotations

import ctypes
import math
import sys
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute  # noqa: F401 - pa.compute
import torch

from lensdb.errors import ModelError
from lensdb.extract import capture, stats as lens_stats
from lensdb.extract.batches import Batch
from lensdb.extract.records import consistency_table, finals_batch, records_batch, residuals_batch
from lensdb.extract.sink import RecordSink, to_host
from lensdb.extract.sites import MID, SiteLayout, site_layout
from lensdb.extract.unembedding import Unembedding
from lensdb.lenses import Lens
from lensdb.warehouse import schema

FINAL_TOP_K = 20  # the legacy final_prediction lists 20 tokens
# The final-norm lens at the last layer should reproduce the head: flag a KL above this.
LAST_LAYER_KL_FLAG_BITS = 1e-3  # float32
LAST_LAYER_KL_FLAG_BITS_HALF = 5e-2  # float16 / bfloat16: rounding alone reaches ~1e-2 bits


@dataclass
class LastLayerCheck:
    """The final-norm lens at the last layer vs the model head, at each prompt's last position.

    Running maxima and counts stay on the device until `finish()`."""

    flag_threshold_bits: float = LAST_LAYER_KL_FLAG_BITS
    max_kl_bits: float = 0.0
    agreeing: int = 0
    prompts: int = 0
    _max_kl: torch.Tensor | None = None
    _agreeing: torch.Tensor | None = None

    def add(self, kl_bits: torch.Tensor, agree: torch.Tensor) -> None:
        batch_max, batch_agree = kl_bits.max(), agree.sum()
        self._max_kl = batch_max if self._max_kl is None else torch.maximum(self._max_kl, batch_max)
        self._agreeing = batch_agree if self._agreeing is None else self._agreeing + batch_agree
        self.prompts += int(agree.shape[0])

    def finish(self) -> "LastLayerCheck":
        if self._max_kl is not None:
            self.max_kl_bits = float(self._max_kl.item())
            self.agreeing = int(self._agreeing.item())
        return self

    @property
    def top1_agreement(self) -> float:
        return self.agreeing / self.prompts if self.prompts else math.nan

    @property
    def flagged(self) -> bool:
        return self.max_kl_bits > self.flag_threshold_bits


@dataclass
class RunContext:
    """Everything the stages share during one extraction."""

    model: object  # LoadedModel
    lenses: tuple[Lens, ...]
    reference: str | None  # the lens kl_vs_norm_bits compares with
    unembedding: Unembedding
    top_k: int
    batch_size: int
    chunk_bytes: int  # float32 logits of one chunk of layers x rows, all lenses together
    keep_residuals: bool
    vocab: pa.Array  # decoded string of every vocabulary id
    prompt_ids: pa.Array  # by prompt index
    prompt_variants: pa.Array
    progress: bool = False
    check: LastLayerCheck = field(default_factory=LastLayerCheck)
    sites: str = "post"  # --sites: post, mid or all (sites.py)
    groups: object | None = None  # group_records.RunGroups: --track groups and answer sets
    attribution: object | None = None  # attribution_records.AttributionPlan with --attribution
    _layout: SiteLayout | None = field(default=None, init=False, repr=False)

    @property
    def layout(self) -> SiteLayout:
        """Which residual each captured slot holds (its hook, layer and site)."""
        if self._layout is None:
            self._layout = site_layout(self.model.n_layers, self.sites)
        return self._layout

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def lens_names(self) -> tuple[str, ...]:
        return tuple(lens.name for lens in self.lenses)


def run_batches(ctx: RunContext, batches: list[Batch], sink: RecordSink) -> LastLayerCheck:
    """Every batch through every stage; statistics go to `sink`. Returns the last-layer check."""
    from tqdm import tqdm

    model = ctx.model
    hooks = list(ctx.layout.hooks)
    if not (ctx.layout.sites[: ctx.layout.n_recorded] != MID).any():
        # --sites mid: an empty records/ file, since every run has that table (health.REQUIRED_TABLES)
        sink.submit(lambda: iter([("records", schema.RECORDS.empty_table(), schema.RECORDS, "part")]))
    extra_hooks = list(ctx.attribution.hooks) if ctx.attribution is not None else []  # after the residual hooks
    post_slots = np.flatnonzero(ctx.layout.sites == "post")  # attribution reads the post residuals, in layer order
    pad_id = model.tokenizer.pad_token_id if model.tokenizer.pad_token_id is not None else 0
    total = sum(len(batch.prompts) for batch in batches)
    bar = tqdm(total=total, unit="prompt", desc=model.source.name, file=sys.stderr, disable=None if ctx.progress else True)
    with bar:
        for batch in batches:
            # token ids go to the embedding's device; residuals and logits come back on the lens device
            output = capture.run_pass(model.bridge, hooks + extra_hooks, batch.sequences, pad_id, model.input_device or ctx.device, lens_device=ctx.device)
            if ctx.attribution is not None:
                from lensdb.extract import attribution_records

                extra = attribution_records.split_capture(output, len(hooks))
                post = output if len(post_slots) == len(hooks) else capture.PassOutput(output.residuals[post_slots], output.logits)
                sink.submit(attribution_records.attribution_job(ctx, post, extra, batch))
                del extra, post
            lens_records(ctx, output, batch, sink)
            finals_and_consistency(ctx, output, batch, sink)
            if ctx.keep_residuals:
                residual_rows(ctx, output, batch, sink)
            del output
            return_freed_memory()
            bar.update(len(batch.prompts))
    return ctx.check.finish()


def lens_records(ctx: RunContext, output: capture.PassOutput, batch: Batch, sink: RecordSink) -> None:
    """Lens and statistics stages over chunks of slots (layer, site) x rows small enough for
    the chunk budget: with --sites all there are twice as many slots, each chunk the same size."""
    device = ctx.device
    n_rows = output.logits.shape[0]
    layout = ctx.layout
    n_layers = layout.n_recorded
    sites = None if layout.post_only else layout.sites
    answer_ids = torch.from_numpy(batch.answer_ids).to(device, non_blocking=True)
    paired_ids = torch.from_numpy(batch.paired_ids).to(device, non_blocking=True)
    has_answer = batch.answer_ids != lens_stats.NO_TOKEN
    has_paired = batch.paired_ids != lens_stats.NO_TOKEN
    final_log_probs = torch.log_softmax(output.logits, dim=-1)
    final_unit = output.logits / (torch.linalg.vector_norm(output.logits, dim=-1, keepdim=True) + 1e-12)
    rows_per_chunk = max(1, ctx.chunk_bytes // (ctx.unembedding.d_vocab * 4 * len(ctx.lenses)))
    positions_per_chunk = min(n_rows, rows_per_chunk)
    layers_per_chunk = max(1, rows_per_chunk // positions_per_chunk)
    for row_start in range(0, n_rows, positions_per_chunk):
        row_slice = slice(row_start, row_start + positions_per_chunk)
        chunk_rows = batch.rows.take(row_slice)
        for layer_start in range(0, n_layers, layers_per_chunk):
            slots = slice(layer_start, min(n_layers, layer_start + layers_per_chunk))
            layers = layout.layers[slots]
            chunk_sites = None if sites is None else sites[slots]
            residuals = output.residuals[slots, row_slice]
            results = lens_stats.chunk_statistics(
                {lens.name: lens.logits(residuals, layers, ctx.unembedding, chunk_sites) for lens in ctx.lenses},
                final_log_probs=final_log_probs[row_slice],
                final_logits_unit=final_unit[row_slice],
                answer_ids=answer_ids[row_slice],
                paired_ids=paired_ids[row_slice],
                top_k=ctx.top_k,
                reference=ctx.reference,
                # Cache-sized blocks on CPUs; on GPUs many small kernels cost more than memory traffic.
                block_bytes=lens_stats.BLOCK_BYTES if device.type == "cpu" else None,
                has_answer=has_answer[row_slice],
                has_paired=has_paired[row_slice],
                groups=ctx.groups.tracker(chunk_rows, device) if ctx.groups is not None else None,
            )
            host, copied = to_host(results)
            sink.submit(_records_job(ctx, host, copied, layers, chunk_rows, chunk_sites))


def _records_job(ctx: RunContext, results, copied, layers, rows, sites=None):
    def job():
        copied.wait()
        check_finite(ctx, results, layers, rows)
        for lens_name, stats in results.items():
            batch = records_batch(
                stats,
                lens=lens_name,
                layers=layers,
                rows=rows,
                prompt_ids=ctx.prompt_ids,
                prompt_variants=ctx.prompt_variants,
                vocab=ctx.vocab,
            )
            for table, rows_of_site in _by_site(batch, sites, len(rows.pos)):
                # Last-position rows go to a file of their own, so next-token queries skip the rest.
                last = rows_of_site.column("is_last_pos")
                yield table, rows_of_site.filter(last), schema.RECORDS, "next"
                yield table, rows_of_site.filter(pa.compute.invert(last)), schema.RECORDS, "part"
            if stats.groups is not None:
                for table, data, table_schema in ctx.groups.batches(
                    stats.groups, lens=lens_name, layers=layers, rows=rows,
                    prompt_ids=ctx.prompt_ids, prompt_variants=ctx.prompt_variants, vocab=ctx.vocab, sites=sites,
                ):
                    yield table, data, table_schema, "part"

    return job


def _by_site(batch: pa.RecordBatch, sites, n_rows: int):
    """(table, rows) for each site of a chunk: post records in `records`, mid ones in
    `records_mid` (schema.py: the site is the table, so older runs' files stay readable)."""
    if sites is None:
        yield "records", batch
        return
    mid = np.repeat(sites == MID, n_rows)
    if not mid.all():
        yield "records", batch.filter(pa.array(~mid))
    if mid.any():
        yield "records_mid", batch.filter(pa.array(mid))


def check_finite(ctx: RunContext, results: dict, layers: np.ndarray, rows) -> None:
    """Stop the run at a chunk whose logits hold a NaN or an infinity: their distributions
    would rank anything first. Reads the statistics' finite flags, already on the host."""
    bad = [(lens, stats) for lens, stats in results.items() if stats.finite is not None and not bool(stats.finite)]
    if not bad:
        return
    name = ctx.model.source.name
    for lens, stats in bad:  # a lens's own logits first, at their first layer
        entropy = _numpy_of(stats.entropy_bits)
        if not np.isfinite(entropy).all():
            layer_index, row = np.argwhere(~np.isfinite(entropy))[0]
            where = _row_text(ctx, rows, row)
            raise ModelError(
                f"model {name} gives non-finite logits (NaN or infinity) at layer {int(layers[layer_index])}, lens {lens}, {where}: "
                "its weights or activations hold NaN or overflow; nothing was committed"
            )
    kl = _numpy_of(bad[0][1].kl_to_final_bits)
    row = np.argwhere(~np.isfinite(kl))[0][1]
    raise ModelError(
        f"model {name} gives non-finite final logits (NaN or infinity), {_row_text(ctx, rows, row)}: "
        "its weights or activations hold NaN or overflow; nothing was committed"
    )


def _numpy_of(tensor: torch.Tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy()


def _row_text(ctx: RunContext, rows, row: int) -> str:
    prompt = int(rows.prompt[row])
    return f"prompt {ctx.prompt_ids[prompt].as_py()!r} ({ctx.prompt_variants[prompt].as_py()}) position {int(rows.pos[row])}"


def finals_and_consistency(ctx: RunContext, output: capture.PassOutput, batch: Batch, sink: RecordSink) -> None:
    """The model's own distribution at each prompt's last position, and every lens's last
    layer against it (the head-consistency fit and the final_ln last-layer check)."""
    model = ctx.model
    last_rows = torch.from_numpy(batch.last_rows).to(ctx.device)
    head_logits = output.logits[last_rows]
    head_log_probs = torch.log_softmax(head_logits, dim=-1)
    finals = _finals(ctx, batch, head_logits)
    last_layer = np.array([model.n_layers])
    last_post = ctx.layout.last_post
    last_residuals = output.residuals[last_post : last_post + 1, last_rows]
    # Lenses whose last layer is the same map (norm, final_ln and tuned on pre-norm models)
    # share one projection and one fit.
    by_key: dict = {}
    fits = []
    final_ln_key = None
    for lens in ctx.lenses:
        if lens.last_layer_key not in by_key:
            logits = lens.logits(last_residuals, last_layer, ctx.unembedding)[0]
            fit = lens_stats.head_consistency(
                logits, head_log_probs, model.logit_scale, model.logit_softcap, one_row_at_a_time=ctx.device.type == "cpu"
            )
            by_key[lens.last_layer_key] = (logits, fit)
        fits.append((lens.name, by_key[lens.last_layer_key][1]))
        if lens.kind == "final_ln":
            final_ln_key = lens.last_layer_key
    if final_ln_key is not None:
        final_ln_logits = by_key[final_ln_key][0]
    else:
        from lensdb.lenses import FinalNormLens, LensSpec

        final_ln_logits = FinalNormLens(LensSpec("final_ln", "final_ln"), model).logits(last_residuals, last_layer, ctx.unembedding)[0]
    ctx.check.add(
        lens_stats.kl_bits(torch.log_softmax(final_ln_logits, dim=-1), head_log_probs),
        final_ln_logits.argmax(-1) == head_logits.argmax(-1),
    )
    host, copied = to_host((finals, fits))

    def job():
        copied.wait()
        host_finals, host_fits = host
        yield "finals", finals_batch(vocab=ctx.vocab, **host_finals), schema.FINALS, "part"
        for lens_name, fit in host_fits:
            table = consistency_table(batch.prompts, lens_name, fit, model.logit_scale, model.logit_softcap)
            yield "consistency", table, schema.CONSISTENCY, "part"

    sink.submit(job)


def _finals(ctx: RunContext, batch: Batch, head_logits: torch.Tensor) -> dict:
    """Top max(top_k, 20) and entropy at temperature 1.0 and at the temperatures each prompt asks for."""
    rows = [(i, t) for i, item in enumerate(batch.prompts) for t in dict.fromkeys((1.0, *item.prompt.temperatures))]
    index = torch.tensor([i for i, _ in rows], device=head_logits.device)
    temperatures = torch.tensor([t for _, t in rows], device=head_logits.device, dtype=head_logits.dtype)
    scaled = head_logits[index] / temperatures[:, None]
    ids, probs = lens_stats.top_k_of(scaled, min(max(ctx.top_k, FINAL_TOP_K), ctx.model.d_vocab))
    return {
        "prompt_ids": [batch.prompts[i].prompt.id for i, _ in rows],
        "prompt_variants": [batch.prompts[i].prompt.variant for i, _ in rows],
        "temperatures": [t for _, t in rows],
        "entropy_bits": lens_stats.entropy_bits(scaled),
        "topk_ids": ids,
        "topk_probs": probs,
    }


def residual_rows(ctx: RunContext, output: capture.PassOutput, batch: Batch, sink: RecordSink) -> None:
    """--keep-residuals: every residual vector in the model's dtype (bfloat16 widened to float32)."""
    model = ctx.model
    value_type = pa.float16() if model.dtype == torch.float16 else pa.float32()
    layout = ctx.layout
    host, copied = to_host(output.residuals if layout.n_recorded == layout.n_slots else output.residuals[: layout.n_recorded])
    tables = [("residuals", layout.sites[: layout.n_recorded] != MID), ("residuals_mid", layout.sites[: layout.n_recorded] == MID)]

    def job():
        copied.wait()
        for table, keep in tables:
            if keep.any():
                values = host if keep.all() else host[torch.from_numpy(np.flatnonzero(keep))]
                data = residuals_batch(
                    values, layers=layout.layers[: layout.n_recorded][keep], rows=batch.rows, prompt_ids=ctx.prompt_ids, prompt_variants=ctx.prompt_variants
                )
                yield table, data, schema.residuals_schema(value_type, model.d_model), "part"

    sink.submit(job)


def return_freed_memory() -> None:
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

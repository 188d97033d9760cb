"""`lensdb extract`, `train-lens` and `sweep`."""

from __future__ import annotations

import dataclasses
import json
import sys

import click

from lensdb.cli.group import _interrupted, interrupt_exit_code, main
from lensdb.cli_options import config_options, warehouse_option
from lensdb.extract.config import DEVICES, DTYPES, ExtractConfig, option_of


@main.command()
@click.argument("model")
@click.option("--prompts", "prompts", help="Prompt set: a name from prompts/ (seed, capitals, stories) or a .yaml/.jsonl file [default: seed; stories for demo].")
@warehouse_option
@config_options(ExtractConfig, before={"quiet": [
    click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (run_id, model, path, rows, ...)."),
]})  # fmt: skip
def extract(model, prompts, warehouse, as_json, **options):
    """Run a prompt set through MODEL and commit one run to the warehouse.

    MODEL is a Hugging Face hub id, a local model directory, or `demo`: the small
    stories260K model shipped with lensdb (runs offline, over the stories prompts).
    Every prompt x lens x layer x position record (top-k tokens, entropy, gold-token
    probability and rank, KL to the final distribution, ...) is written as Parquet; the run becomes visible
    only once it is completely written. The summary goes to stdout (--json: as JSON;
    --quiet: the run id alone); progress and logs go to stderr. Under torchrun
    (`torchrun --nproc-per-node N -m lensdb extract ...`) the ranks share the prompts
    and commit one run together.

    \b
    Example:
      lensdb extract demo
      lensdb extract meta-llama/Meta-Llama-3-8B --prompts capitals --lens norm,raw
      RUN=$(lensdb extract demo --quiet)
      lensdb extract meta-llama/Meta-Llama-3-70B --device-map auto --max-memory 0=75GiB,1=75GiB
      lensdb extract meta-llama/Meta-Llama-3-70B --device cpu --max-memory cpu=64GiB --offload-folder /scratch/offload
    """
    from lensdb.extract.engine import extract as run_extract

    config = ExtractConfig.from_params(options)
    summary = run_extract(model, config, prompts=prompts, warehouse=warehouse)
    if summary.rank != 0:  # under torchrun, rank 0 speaks for the run
        return
    if as_json:
        click.echo(json.dumps(_summary_dict(summary)))
    elif config.quiet:
        click.echo(summary.run_id)
    else:
        click.echo(_extract_summary(summary))


def _summary_dict(summary) -> dict:
    fields = {f.name: getattr(summary, f.name) for f in dataclasses.fields(summary) if f.name != "timings"}
    return fields | {"path": str(summary.path), "lenses": list(summary.lenses)}


def _extract_summary(summary) -> str:
    from lensdb.runs import shown_path

    check = "FLAGGED (see v1.last_layer_consistency)" if summary.last_layer_flagged else "ok"
    lines = [
        f"run        {summary.run_id}",
        f"model      {summary.model}  ({summary.device}, {summary.dtype})",
        *([f"device map {_device_map_text(summary.device_map)}; lenses on {summary.device}"] if len(summary.device_map) > 1 else []),
        f"prompts    {summary.n_prompts}   lenses {','.join(summary.lenses)}" + (f"   ranks {summary.world_size}" if summary.world_size > 1 else ""),
        f"records    {summary.rows.get('records', 0):,}" + (f"   mid {summary.rows['records_mid']:,}" if "records_mid" in summary.rows else "")
        + (f"   residuals {summary.rows['residuals']:,}" if "residuals" in summary.rows else ""),
        f"time       load {summary.load_seconds:.1f} s, extract {summary.extract_seconds:.1f} s",
        f"host peak  load {_gb(summary.load_peak_host_rss_bytes)}, run {_gb(summary.peak_host_rss_bytes)} (resident memory)",
        f"last layer final_ln vs head: max KL {summary.last_layer_max_kl_bits:.2e} bits, {check}",
        f"written    {shown_path(summary.path)}  ({summary.bytes_on_disk / 1e6:.1f} MB)",
    ]
    return "\n".join(lines)


def _gb(n: int | None) -> str:
    return "n/a" if n is None else f"{n / 1e9:.2f} GB"


def _device_map_text(device_map: dict[str, str]) -> str:
    """Modules per device in first-seen order, e.g. `cuda:0 17 modules, cuda:1 16 modules`."""
    counts: dict[str, int] = {}
    for device in device_map.values():
        counts[device] = counts.get(device, 0) + 1
    return ", ".join(f"{device} {n} module{'s' if n > 1 else ''}" for device, n in counts.items())


@main.command("train-lens")
@click.argument("model")
@click.option("--text", "text", required=True, type=click.Path(dir_okay=False), help="Training corpus: a .txt file, or a .jsonl file with a `text` key per line.")
@click.option("--out", type=click.Path(file_okay=False), help="Write the lens to this folder (tuned-lens format: config.json, params.pt).")
@click.option("--name", help="Store the lens in the warehouse as lenses/NAME (queryable as v1.lenses).")
@warehouse_option
@click.option("--steps", type=click.IntRange(min=1), default=250, show_default=True, help="Optimizer steps (tuned-lens's default).")
@click.option("--tokens-per-step", type=click.IntRange(min=1), help="Tokens per step, rounded to whole windows [default: 2^18, at most the training tokens / steps, at least one window].")
@click.option("--lr", type=float, default=1.0, show_default=True, help="Learning-rate scale as in tuned-lens: SGD (Nesterov momentum 0.9) runs at lr x 0.1, decaying linearly to 0.")
@click.option("--seq-len", type=click.IntRange(min=2), help="Tokens per window [default: min(2048, the model's context)].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Windows per forward pass [default: by memory].")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=25, show_default=True, help="Save a checkpoint every N steps; rerunning the command resumes from it.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the window order (tuned-lens's default).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True, help="As for extract.")
@click.option("--dtype", type=click.Choice(DTYPES), default="auto", show_default=True, help="The model's dtype, as for extract; the lens trains in float32.")
@click.option("--sites", type=click.Choice(("post", "all")), default="post", show_default=True,
              help="post: a translator per layer (the tuned-lens format); all: one more per block's mid site (between attention and MLP, in params_mid.pt), for extract --sites mid|all.")
@click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def train_lens(model, text, out, name, warehouse, steps, tokens_per_step, lr, seq_len, batch_size, checkpoint_every, seed, device, dtype, sites, revision, quiet):
    """Train a tuned lens for MODEL on a text corpus.

    One affine translator per layer (the last layer's is the identity), trained as the
    tuned-lens paper does: KL from the model's final distribution to the lens's, SGD
    with Nesterov momentum, the translators starting at zero. The last 10% of the
    corpus's windows are held out to report each layer's KL against the final_ln
    logit lens. Give --out DIR (files the tuned-lens project loads) or --name NAME
    (stored in the warehouse); use it with `lensdb extract MODEL --lens tuned:DIR`.

    \b
    Example:
      lensdb train-lens demo --text stories.jsonl --name stories
    """
    from lensdb.tuned.train import TrainSettings, train_lens as run_train

    settings = TrainSettings(
        steps=steps,
        tokens_per_step=tokens_per_step,
        lr=lr,
        seq_len=seq_len,
        batch_size=batch_size,
        checkpoint_every=checkpoint_every,
        seed=seed,
        device=device,
        dtype=dtype,
        sites=sites,
    )
    try:
        result = run_train(model, text, out=out, name=name, warehouse=warehouse, settings=settings, revision=revision, progress=not quiet)
    except KeyboardInterrupt as exc:
        click.echo(f"lensdb: {_interrupted(exc)}; rerun the same command to resume from the last checkpoint", err=True)
        sys.exit(interrupt_exit_code(exc))
    if not quiet:
        click.echo(_train_summary(result), err=True)


def _train_summary(result) -> str:
    s = result.settings
    resumed = f", resumed at step {result.resumed_at_step}" if result.resumed_at_step else ""
    lines = [
        f"lens       {s['lens']}  sha256 {s['lens_sha256'][:12]}",
        f"model      {s['model']}  ({s['device']}, {s['dtype']})",
        f"training   {s['steps']} steps x {s['tokens_per_step']:,} tokens on {s['train_tokens']:,} tokens, {s['train_seconds']:.1f} s{resumed}",
        f"held out   {s['eval_tokens']:,} tokens: mean KL(final || lens), bits",
        "  layer site     tuned  final_ln",
    ]
    for row in result.layers:
        tuned, logit = row["kl_bits"], row["final_ln_kl_bits"]
        shown = "      n/a       n/a" if tuned is None else f"{tuned:9.3f} {logit:9.3f}"
        lines.append(f"  {row['layer']:>5} {row['site']:<4} {shown}")
    lines.append(f"written    {result.path}")
    return "\n".join(lines)


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("models_file", metavar="MODELS.txt", type=click.Path(dir_okay=False))
@click.option("--prompts", "prompts", default="seed", show_default=True, help="Prompt set for every model (as for extract).")
@warehouse_option
@click.option("--export", "export_dir", type=click.Path(file_okay=False), help="At the end, write every model's legacy files into this folder (as lensdb export --run).")
@click.argument("extract_options", nargs=-1, type=click.UNPROCESSED, metavar="[EXTRACT OPTIONS]")
def sweep(models_file, prompts, warehouse, export_dir, extract_options):
    """Extract every model listed in MODELS.txt, one process per model.

    MODELS.txt lists one model per line (a hub id or a model directory); '#' starts a
    comment. A model that already has a committed run of the same prompt set and the same
    settings is skipped, so a sweep that stopped resumes where it stopped. A failed model
    does not stop the sweep; the exit code is 1 if any failed. EXTRACT OPTIONS are those of
    `lensdb extract` (--lens, --top-k, --dtype, --device, --batch-size, ...) except
    --run-id and --model-name.

    \b
    Example:
      lensdb sweep models.txt --prompts capitals --lens norm,raw --export ./legacy-out
    """
    from lensdb.sweep import FAILED, format_table, sweep as run_sweep

    rows = run_sweep(models_file, prompts=prompts, warehouse=warehouse, options=_sweep_options(extract_options), export_dir=export_dir)
    click.echo(format_table(rows))
    if any(row.status == FAILED for row in rows):
        sys.exit(1)


def _sweep_options(arguments) -> ExtractConfig:
    """The sweep's extract options, parsed and checked by `lensdb extract`'s own parser."""
    try:
        # main's settings: click keeps the help option of the first context it made for a command
        with extract.make_context("lensdb extract", ["MODEL", *arguments], **main.context_settings) as context:
            params = context.params
    except click.UsageError as exc:
        raise click.UsageError(f"extract option: {exc.format_message()}") from None
    for config_field in dataclasses.fields(ExtractConfig):
        if option_of(config_field).per_run and params.get(config_field.name):
            raise click.UsageError(f"{option_of(config_field).flag} names one run; a sweep extracts several models")
    return ExtractConfig.from_params(params)

"""The `lensdb` command line: parses arguments and calls library functions.

Model libraries (torch, transformers) are imported only by the commands that need them,
so `lensdb --help` and `lensdb query` start quickly.
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import click

from lensdb import __version__
from lensdb.errors import LensdbError

WAREHOUSE_HELP = "Warehouse folder [default: $LENSDB_WAREHOUSE or ./warehouse]."


class _Main(click.Group):
    """Turns LensdbError into one line on stderr and a non-zero exit."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except LensdbError as exc:
            click.echo(f"lensdb: error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt:
            click.echo("lensdb: interrupted; nothing was committed", err=True)
            sys.exit(130)


@click.group(cls=_Main, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="lensdb")
def main():
    """Logit-lens records of causal language models, as a Parquet warehouse with SQL views.

    \b
    lensdb extract MODEL         run a prompt set through a model, commit one run
    lensdb query "SQL"           query every run with the versioned v1 views
    lensdb export --out DIR      write the original experiment's JSON/CSV files
    lensdb import-legacy DIR     bring legacy output folders into the warehouse
    lensdb train-lens MODEL      train a tuned lens (per-layer affine translators)
    """


def _split_lenses(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@main.command()
@click.argument("model")
@click.option("--prompts", "prompts", default="seed", show_default=True, help="Prompt set: a name from prompts/ (seed, capitals, stories) or a .yaml/.jsonl file.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--lens", "lenses", default="norm,final_ln,raw", show_default=True, callback=_split_lenses, help="Comma list of lenses: norm (architecture-aware), final_ln (final norm at every layer), raw (no norm).")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True, help="Top tokens kept per record.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="auto: cuda, then mps, then cpu, by a conservative memory-fit estimate.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="auto: CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above ~30B parameters).")
@click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per forward pass [default: 8 on CPU and MPS, 32 on CUDA].")
@click.option("--keep-residuals", is_flag=True, help="Also store every residual vector (its own table, model dtype).")
@click.option("--run-id", help="Id of the new run [default: UTC time and a random suffix].")
@click.option("--model-name", help="Name recorded for the model [default: hub id, or the directory's name].")
@click.option("--seed", type=int, default=316, show_default=True, help="torch seed set before loading.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def extract(model, prompts, warehouse, lenses, top_k, device, dtype, revision, batch_size, keep_residuals, run_id, model_name, seed, quiet):
    """Run a prompt set through MODEL and commit one run to the warehouse.

    MODEL is a Hugging Face hub id or a local model directory. Every prompt x lens x
    layer x position record (top-k tokens, entropy, gold-token probability and rank,
    KL to the final distribution, ...) is written as Parquet; the run becomes visible
    only once it is completely written.

    \b
    Example:
      lensdb extract ../shared/fixtures/models/stories260K --prompts stories
      lensdb extract meta-llama/Meta-Llama-3-8B --prompts capitals --lens norm,raw
    """
    from lensdb.extract.engine import extract as run_extract

    summary = run_extract(
        model,
        prompts=prompts,
        warehouse=warehouse,
        lenses=lenses,
        top_k=top_k,
        device=device,
        dtype=dtype,
        revision=revision,
        batch_size=batch_size,
        keep_residuals=keep_residuals,
        run_id=run_id,
        model_name=model_name,
        seed=seed,
        progress=not quiet,
    )
    if not quiet:
        click.echo(_extract_summary(summary), err=True)


def _extract_summary(summary) -> str:
    check = "FLAGGED (see v1.last_layer_consistency)" if summary.last_layer_flagged else "ok"
    lines = [
        f"run        {summary.run_id}",
        f"model      {summary.model}  ({summary.device}, {summary.dtype})",
        f"prompts    {summary.n_prompts}   lenses {','.join(summary.lenses)}",
        f"records    {summary.rows.get('records', 0):,}" + (f"   residuals {summary.rows['residuals']:,}" if "residuals" in summary.rows else ""),
        f"time       load {summary.load_seconds:.1f} s, extract {summary.extract_seconds:.1f} s",
        f"last layer final_ln vs head: max KL {summary.last_layer_max_kl_bits:.2e} bits, {check}",
        f"written    {summary.path}  ({summary.bytes_on_disk / 1e6:.1f} MB)",
    ]
    return "\n".join(lines)


@main.command()
@click.argument("sql", required=False)
@click.option("--file", "sql_file", type=click.Path(dir_okay=False), help="Read the SQL from a file.")
@click.option("--name", help="Run a named query shipped with lensdb (see --list).")
@click.option("--list", "list_only", is_flag=True, help="List the named queries and the v1 views, then exit.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True, help="json is an array of row objects; parquet needs --out.")
@click.option("--out", type=click.Path(dir_okay=False), help="Write the result to this file instead of stdout.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def query(sql, sql_file, name, list_only, output_format, out, warehouse):
    """Run SQL against every committed run, with the versioned v1 views.

    \b
    Views: v1.runs, v1.prompts, v1.records, v1.pure_next_token, v1.diagnostics,
    v1.control_summary, v1.ablation_summary, v1.raw_lens_check, v1.raw_lens_summary,
    v1.last_layer_consistency, v1.final_predictions, v1.residuals, v1.lenses; macros
    v1.diagnostics_with(threshold, margin, k) and v1.pure_next_token_with(...).

    \b
    Examples:
      lensdb query "SELECT model, L_semantic FROM v1.diagnostics WHERE lens = 'norm'"
      lensdb query --name semantic_collapse --format csv --out collapse.csv
      lensdb query "FROM v1.diagnostics_with(threshold := 0.9, k := 2)"
    """
    from lensdb import catalog
    from lensdb.output import write_result

    if list_only:
        click.echo(_listing(catalog))
        return
    given = [x for x in (sql, sql_file, name) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of: SQL, --file FILE, --name NAME")
    if sql_file:
        try:
            sql = Path(sql_file).read_text(encoding="utf-8")
        except OSError as exc:
            raise LensdbError(f"cannot read {sql_file}: {exc.strerror or exc}") from None
    elif name:
        sql = catalog.named_query(name).sql
    if output_format == "parquet" and not out:
        raise click.UsageError("--format parquet needs --out FILE")
    table = catalog.query(sql, warehouse)
    write_result(table, output_format, out)


def _listing(catalog) -> str:
    lines = ["Named queries (lensdb query --name NAME):"]
    for named in catalog.named_queries().values():
        lines.append(f"  {named.name:<22} {named.description}")
    lines.append("")
    lines.append("Views and macros, by SQL file:")
    for sql_file in catalog.sql_files():
        public = [name for name in sql_file.defines if name.startswith("v1.")]
        if not public:
            continue
        lines.append(f"  {sql_file.path.name} (version {sql_file.version})")
        lines.extend(textwrap.wrap(", ".join(public), 96, initial_indent="      ", subsequent_indent="      "))
        lines.extend(textwrap.wrap(sql_file.what, 96, initial_indent="      ", subsequent_indent="      "))
    return "\n".join(lines)


@main.command()
@click.option("--run", "run_id", help="Export this run.")
@click.option("--model", help="Export the latest committed run of this model (hub id, or the part after its last '/').")
@click.option("--lens", default="norm", show_default=True, help="The lens whose records the files show.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write the files into.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--without-variant", is_flag=True, help="CSVs without the prompt_variant column (the seed documents' schema).")
def export(run_id, model, lens, out, warehouse, without_variant):
    """Write the original experiment's files of committed runs.

    Per run: output-<model>.json, output-<model>-records.csv and
    output-<model>-pure-next-token.csv (<model>: the model id after its last '/').
    Without --run or --model, the latest committed run of every model is exported.

    \b
    Example:
      lensdb export --model meta-llama/Meta-Llama-3-8B --out ./legacy-out
    """
    from lensdb.legacy.export import export as run_export

    if run_id and model:
        raise click.UsageError("give --run or --model, not both")
    for path in run_export(out, warehouse=warehouse, run_id=run_id, model=model, lens=lens, with_variant=not without_variant):
        click.echo(str(path))


@main.command("import-legacy")
@click.argument("folder", type=click.Path())
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def import_legacy(folder, warehouse):
    """Import a legacy output folder: one committed run per model.

    FOLDER holds output-<model>.json, output-<model>-records.csv and
    output-<model>-pure-next-token.csv for one or more models. Every file is checked
    before anything is written; on any error nothing is imported.
    """
    from lensdb.legacy.importer import import_legacy as run_import

    for imported in run_import(folder, warehouse):
        click.echo(f"{imported.model}  run {imported.run_id}  ({imported.rows.get('records', 0):,} records)")


@main.command("train-lens")
@click.argument("model")
@click.option("--text", "text", required=True, type=click.Path(dir_okay=False), help="Training corpus: a .txt file, or a .jsonl file with a `text` key per line.")
@click.option("--out", type=click.Path(file_okay=False), help="Write the lens to this folder (tuned-lens format: config.json, params.pt).")
@click.option("--name", help="Store the lens in the warehouse as lenses/NAME (queryable as v1.lenses).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--steps", type=click.IntRange(min=1), default=250, show_default=True, help="Optimizer steps (tuned-lens's default).")
@click.option("--tokens-per-step", type=click.IntRange(min=1), help="Tokens per step, rounded to whole windows [default: 2^18, at most the training tokens / steps, at least one window].")
@click.option("--lr", type=float, default=1.0, show_default=True, help="Learning-rate scale as in tuned-lens: SGD (Nesterov momentum 0.9) runs at lr x 0.1, decaying linearly to 0.")
@click.option("--seq-len", type=click.IntRange(min=2), help="Tokens per window [default: min(2048, the model's context)].")
@click.option("--batch-size", type=click.IntRange(min=1), help="Windows per forward pass [default: by memory].")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=25, show_default=True, help="Save a checkpoint every N steps; rerunning the command resumes from it.")
@click.option("--seed", type=int, default=42, show_default=True, help="Seed of the window order (tuned-lens's default).")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="As for extract.")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="The model's dtype, as for extract; the lens trains in float32.")
@click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def train_lens(model, text, out, name, warehouse, steps, tokens_per_step, lr, seq_len, batch_size, checkpoint_every, seed, device, dtype, revision, quiet):
    """Train a tuned lens for MODEL on a text corpus.

    One affine translator per layer (the last layer's is the identity), trained as the
    tuned-lens paper does: KL from the model's final distribution to the lens's, SGD
    with Nesterov momentum, the translators starting at zero. The last 10% of the
    corpus's windows are held out to report each layer's KL against the final_ln
    logit lens. Give --out DIR (files the tuned-lens project loads) or --name NAME
    (stored in the warehouse); use it with `lensdb extract MODEL --lens tuned:DIR`.

    \b
    Example:
      lensdb train-lens ../shared/fixtures/models/stories260K --text stories.jsonl --name stories
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
    )
    try:
        result = run_train(model, text, out=out, name=name, warehouse=warehouse, settings=settings, revision=revision, progress=not quiet)
    except KeyboardInterrupt:
        click.echo("lensdb: interrupted; rerun the same command to resume from the last checkpoint", err=True)
        sys.exit(130)
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
        "  layer     tuned  final_ln",
    ]
    for row in result.layers:
        tuned, logit = row["kl_bits"], row["final_ln_kl_bits"]
        shown = "      n/a       n/a" if tuned is None else f"{tuned:9.3f} {logit:9.3f}"
        lines.append(f"  {row['layer']:>5} {shown}")
    lines.append(f"written    {result.path}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    main()

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
    lensdb sweep MODELS.txt      extract a list of models, resuming where it stopped
    """


def _lens_specs(ctx, param, value: str):
    from lensdb.lenses import parse_lens_specs

    return parse_lens_specs(value)  # a bad lens is a one-line LensdbError, like every bad input


@main.command()
@click.argument("model")
@click.option("--prompts", "prompts", default="seed", show_default=True, help="Prompt set: a name from prompts/ (seed, capitals, stories) or a .yaml/.jsonl file.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--lens", "lenses", default="norm,final_ln,raw", show_default=True, callback=_lens_specs, help="Comma list of lenses: norm (architecture-aware), final_ln (final norm at every layer), raw (no norm), tuned:DIR or tuned:NAME (a tuned lens: a folder in the tuned-lens format, or one stored with `lensdb train-lens --name`); ALIAS=tuned:... names the records.")
@click.option("--reference-lens", help="The lens every other lens is compared with (kl_vs_norm_bits) [default: norm, when in the run].")
@click.option("--unembed", type=click.Choice(["auto", "float32", "split"]), default="auto", show_default=True, help="Unembedding precision strategy: float32 matmuls, or split (half-precision models on CUDA: float32 products from tensor-core matmuls). auto: split on CUDA for float16/bfloat16 models.")
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
def extract(model, prompts, warehouse, lenses, reference_lens, unembed, top_k, device, dtype, revision, batch_size, keep_residuals, run_id, model_name, seed, quiet):
    """Run a prompt set through MODEL and commit one run to the warehouse.

    MODEL is a Hugging Face hub id or a local model directory. Every prompt x lens x
    layer x position record (top-k tokens, entropy, gold-token probability and rank,
    KL to the final distribution, ...) is written as Parquet; the run becomes visible
    only once it is completely written. Under torchrun (`torchrun --nproc-per-node N
    -m lensdb extract ...`) the ranks share the prompts and commit one run together.

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
        reference=reference_lens,
        unembed=unembed,
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
    if not quiet and summary.rank == 0:  # under torchrun, rank 0 speaks for the run
        click.echo(_extract_summary(summary), err=True)


def _extract_summary(summary) -> str:
    check = "FLAGGED (see v1.last_layer_consistency)" if summary.last_layer_flagged else "ok"
    lines = [
        f"run        {summary.run_id}",
        f"model      {summary.model}  ({summary.device}, {summary.dtype})",
        f"prompts    {summary.n_prompts}   lenses {','.join(summary.lenses)}" + (f"   ranks {summary.world_size}" if summary.world_size > 1 else ""),
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
    v1.last_layer_consistency, v1.final_predictions, v1.residuals; macros
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


@main.command(context_settings={"ignore_unknown_options": True})
@click.argument("models_file", metavar="MODELS.txt", type=click.Path(dir_okay=False))
@click.option("--prompts", "prompts", default="seed", show_default=True, help="Prompt set for every model (as for extract).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
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


def _sweep_options(arguments):
    """The sweep's extract options, parsed and checked by `lensdb extract`'s own parser."""
    from lensdb.sweep import ExtractOptions

    try:
        with extract.make_context("lensdb extract", ["MODEL", *arguments]) as context:
            params = context.params
    except click.UsageError as exc:
        raise click.UsageError(f"extract option: {exc.format_message()}") from None
    for name, flag in (("run_id", "--run-id"), ("model_name", "--model-name")):
        if params.get(name):
            raise click.UsageError(f"{flag} names one run; a sweep extracts several models")
    return ExtractOptions(
        lenses=",".join(str(spec) for spec in params["lenses"]),
        reference_lens=params["reference_lens"],
        unembed=params["unembed"],
        top_k=params["top_k"],
        device=params["device"],
        dtype=params["dtype"],
        revision=params["revision"],
        batch_size=params["batch_size"],
        keep_residuals=params["keep_residuals"],
        seed=params["seed"],
        quiet=params["quiet"],
    )


if __name__ == "__main__":  # pragma: no cover
    main()

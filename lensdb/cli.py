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
    """


def _split_lenses(ctx, param, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


@main.command()
@click.argument("model")
@click.option("--prompts", "prompts", default="seed", show_default=True, help="Prompt set: a name from prompts/ (seed, capitals, stories) or a .yaml/.jsonl file.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--lens", "lenses", default="norm,final_ln,raw", show_default=True, callback=_split_lenses, help="Comma list of lenses: norm (architecture-aware), final_ln (final norm at every layer), raw (no norm).")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True, help="Top tokens kept per record.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="auto: one GPU, else all GPUs, else mps, else cpu (with disk offload if host memory is short), by a conservative memory-fit estimate; it says what it chose.")
@click.option("--device-map", metavar="auto|balanced|FILE.json", help="Spread the model over devices: auto or balanced (accelerate's strategies, over all GPUs, or CPU and disk with --device cpu), or a JSON file {module: device}.")
@click.option("--max-memory", metavar="DEVICE=SIZE,...", help="Memory budgets per device, e.g. 0=75GiB,1=75GiB or cpu=200GiB (GPU index, cpu, mps, disk; B, KB/MB/GB, KiB/MiB/GiB); weights beyond the CPU budget go to disk.")
@click.option("--offload-folder", metavar="DIR", type=click.Path(file_okay=False), help="Folder for disk-offloaded weights that must be re-saved (non-safetensors checkpoints).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="auto: CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above ~30B parameters).")
@click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per forward pass [default: 8 on CPU and MPS, 32 on CUDA].")
@click.option("--keep-residuals", is_flag=True, help="Also store every residual vector (its own table, model dtype).")
@click.option("--run-id", help="Id of the new run [default: UTC time and a random suffix].")
@click.option("--model-name", help="Name recorded for the model [default: hub id, or the directory's name].")
@click.option("--seed", type=int, default=316, show_default=True, help="torch seed set before loading.")
@click.option("--quiet", is_flag=True, help="No progress bar and no summary.")
def extract(model, prompts, warehouse, lenses, top_k, device, device_map, max_memory, offload_folder, dtype, revision, batch_size, keep_residuals, run_id, model_name, seed, quiet):
    """Run a prompt set through MODEL and commit one run to the warehouse.

    MODEL is a Hugging Face hub id or a local model directory. Every prompt x lens x
    layer x position record (top-k tokens, entropy, gold-token probability and rank,
    KL to the final distribution, ...) is written as Parquet; the run becomes visible
    only once it is completely written.

    \b
    Example:
      lensdb extract ../shared/fixtures/models/stories260K --prompts stories
      lensdb extract meta-llama/Meta-Llama-3-8B --prompts capitals --lens norm,raw
      lensdb extract meta-llama/Meta-Llama-3-70B --device-map auto --max-memory 0=75GiB,1=75GiB
      lensdb extract meta-llama/Meta-Llama-3-70B --device cpu --max-memory cpu=64GiB --offload-folder /scratch/offload
    """
    from lensdb.extract.engine import extract as run_extract

    summary = run_extract(
        model,
        prompts=prompts,
        warehouse=warehouse,
        lenses=lenses,
        top_k=top_k,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
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
        *([f"device map {_device_map_text(summary.device_map)}; lenses on {summary.device}"] if len(summary.device_map) > 1 else []),
        f"prompts    {summary.n_prompts}   lenses {','.join(summary.lenses)}",
        f"records    {summary.rows.get('records', 0):,}" + (f"   residuals {summary.rows['residuals']:,}" if "residuals" in summary.rows else ""),
        f"time       load {summary.load_seconds:.1f} s, extract {summary.extract_seconds:.1f} s",
        f"host peak  load {_gb(summary.load_peak_host_rss_bytes)}, run {_gb(summary.peak_host_rss_bytes)} (resident memory)",
        f"last layer final_ln vs head: max KL {summary.last_layer_max_kl_bits:.2e} bits, {check}",
        f"written    {summary.path}  ({summary.bytes_on_disk / 1e6:.1f} MB)",
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


if __name__ == "__main__":  # pragma: no cover
    main()

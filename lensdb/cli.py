"""The `lensdb` command line: parses arguments and calls library functions.

Model libraries (torch, transformers) are imported only by the commands that need them,
so `lensdb --help` and `lensdb query` start quickly.
"""

from __future__ import annotations

import os
import sys
import textwrap
import traceback
import warnings
from pathlib import Path

import click

from lensdb import __version__
from lensdb.errors import DamagedRunsWarning, LensdbError

WAREHOUSE_HELP = "Warehouse folder [default: $LENSDB_WAREHOUSE or ./warehouse]."
DEBUG_ENV = "LENSDB_DEBUG"


class _Main(click.Group):
    """Turns errors into one line on stderr and a non-zero exit (LENSDB_DEBUG=1 adds the
    traceback), and lensdb's warnings into `lensdb: warning: ...` lines once a command succeeds."""

    def invoke(self, ctx):
        pending: list[str] = []
        with warnings.catch_warnings():
            warnings.simplefilter("always", DamagedRunsWarning)
            shown = warnings.showwarning

            def show(message, category, filename, lineno, file=None, line=None):
                if issubclass(category, DamagedRunsWarning):
                    pending.append(str(message))
                else:
                    shown(message, category, filename, lineno, file, line)

            warnings.showwarning = show
            try:
                result = super().invoke(ctx)
            except LensdbError as exc:
                _fail(str(exc), exc.exit_code)
            except KeyboardInterrupt:
                click.echo("lensdb: interrupted; nothing was committed", err=True)
                sys.exit(130)
            except BrokenPipeError:
                _quiet_stdout()  # the reader went away (| head): nothing left to say
                sys.exit(1)
            except OSError as exc:
                _fail(_os_error(exc), 2)
            except (UnicodeError, MemoryError) as exc:
                _fail(f"{type(exc).__name__}: {_one_line(exc)}", 2)
            except Exception as exc:
                if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
                    raise
                _fail(_one_line(exc), 2)
        for message in pending:
            click.echo(f"lensdb: warning: {_printable(message)}", err=True)
        return result


def _fail(message: str, exit_code: int):
    if os.environ.get(DEBUG_ENV, "").strip() not in ("", "0"):
        traceback.print_exc()
    click.echo(f"lensdb: error: {_printable(message)}", err=True)
    sys.exit(exit_code)


def _printable(message: str) -> str:
    """One line whatever the message holds (a path with a newline, undecodable bytes)."""
    message = message.replace("\r", "\\r").replace("\n", "\\n")
    return message.encode("utf-8", "backslashreplace").decode("utf-8")


def _os_error(exc: OSError) -> str:
    where = " and ".join(str(name) for name in (exc.filename, exc.filename2) if name is not None)
    what = exc.strerror or _one_line(exc)
    return f"{where}: {what}" if where else what


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _quiet_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


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
@click.option("--file", "sql_file", type=click.Path(), help="Read the SQL from a file (UTF-8).")
@click.option("--name", help="Run a named query shipped with lensdb (see --list).")
@click.option("--list", "list_only", is_flag=True, help="List the named queries and the v1 views, then exit.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True, help="json is an array of row objects; parquet needs --out.")
@click.option("--out", type=click.Path(), help="Write the result to this file instead of stdout (its folder must exist).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--allow-files", is_flag=True, help="Let the SQL use all of DuckDB: any statement (COPY, ATTACH, ...) and any file. Without it, only read-only statements run and DuckDB reads the warehouse only.")
def query(sql, sql_file, name, list_only, output_format, out, warehouse, allow_files):
    """Run SQL against every committed run, with the versioned v1 views.

    The SQL is read-only by default: SELECT (FROM, WITH, VALUES, DESCRIBE, SHOW,
    SUMMARIZE, EXPLAIN) over the views and the warehouse's own files; --allow-files lifts
    that. Damaged runs are left out of every view, with one warning line (v1.damaged_runs).

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
    from lensdb.output import check_output_file, read_text_file, write_result

    if list_only:
        click.echo(_listing(catalog))
        return
    given = [x for x in (sql, sql_file, name) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of: SQL, --file FILE, --name NAME")
    if sql_file:
        sql = read_text_file(sql_file, "--file")
    elif name:
        sql = catalog.named_query(name).sql
    if output_format == "parquet" and not out:
        raise click.UsageError("--format parquet needs --out FILE")
    if out:
        check_output_file(out, "--out")
    table = catalog.query(sql, warehouse, allow_files=allow_files)
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
@click.option("--out", required=True, type=click.Path(), help="Folder to write the files into (created if missing; its parent must exist).")
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
    from lensdb.output import check_output_folder

    if run_id and model:
        raise click.UsageError("give --run or --model, not both")
    check_output_folder(out, "--out")
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

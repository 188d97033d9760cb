"""The `lensdb` command line: parses arguments and calls library functions.

Model libraries (torch, transformers) are imported only by the commands that need them,
so `lensdb --help` and `lensdb query` start quickly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import sys
import threading
import textwrap
import traceback
import warnings

import click

from lensdb import __version__
from lensdb.errors import DamagedRunsWarning, LensdbError, Terminated, folded

WAREHOUSE_HELP = (
    "Warehouse folder or URL (s3://bucket/prefix, gs://..., file://...; credentials from the "
    "environment) [default: $LENSDB_WAREHOUSE or ./warehouse]."
)
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
                with _terminate_as_interrupt():
                    result = super().invoke(ctx)
            except LensdbError as exc:
                _fail(str(exc), exc.exit_code)
            except KeyboardInterrupt as exc:
                click.echo(f"lensdb: {_interrupted(exc)}; nothing was committed", err=True)
                sys.exit(interrupt_exit_code(exc))
            except BrokenPipeError:
                _quiet_stdout()  # the reader went away (| head): nothing left to say
                sys.exit(1)
            except OSError as exc:
                _fail(_os_error(exc), 2)
            except (UnicodeError, MemoryError) as exc:
                _fail(f"{type(exc).__name__}: {folded(exc)}", 2)
            except Exception as exc:
                if not type(exc).__module__.startswith(("duckdb", "_duckdb")):
                    raise
                _fail(folded(exc), 2)
        for message in pending:
            click.echo(f"lensdb: warning: {_printable(message)}", err=True)
        return result


@contextlib.contextmanager
def _terminate_as_interrupt():
    """SIGTERM raises Terminated (a KeyboardInterrupt) in the main thread, so that a command
    stops as after Ctrl-C: its `finally` blocks remove what it staged. A second SIGTERM
    while they run kills the process as by default."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def terminate(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _interrupted(exc: BaseException) -> str:
    return "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"


def interrupt_exit_code(exc: BaseException) -> int:
    """128 + the signal: 143 for SIGTERM, 130 for Ctrl-C."""
    return 128 + signal.SIGTERM if isinstance(exc, Terminated) else 130


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
    what = exc.strerror or folded(exc)
    return f"{where}: {what}" if where else what


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
    lensdb runs                  list the runs;  lensdb show RUN;  lensdb rm RUN
    lensdb export --out DIR      write the original experiment's JSON/CSV files
    lensdb import-legacy DIR     bring legacy output folders into the warehouse
    lensdb plot heatmap|curves|lenses --out F   figures (.png/.svg/.pdf/.html)
    lensdb report --out report.html             one self-contained HTML page
    lensdb train-lens MODEL      train a tuned lens (per-layer affine translators)
    lensdb sweep MODELS.txt      extract a list of models, resuming where it stopped
    """


def _lens_specs(ctx, param, value: str):
    from lensdb.lenses import parse_lens_specs

    return parse_lens_specs(value)  # a bad lens is a one-line LensdbError, like every bad input


def _track_specs(ctx, param, value):
    from lensdb.token_groups import parse_track_specs

    return parse_track_specs(value)


@main.command()
@click.argument("model")
@click.option("--prompts", "prompts", help="Prompt set: a name from prompts/ (seed, capitals, stories) or a .yaml/.jsonl file [default: seed; stories for demo].")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--lens", "lenses", default="norm,final_ln,raw", show_default=True, callback=_lens_specs, help="Comma list of lenses: norm (architecture-aware), final_ln (final norm at every layer), raw (no norm), tuned:DIR or tuned:NAME (a tuned lens: a folder in the tuned-lens format, or one stored with `lensdb train-lens --name`); ALIAS=tuned:... names the records.")
@click.option("--reference-lens", help="The lens every other lens is compared with (kl_vs_norm_bits) [default: norm, when in the run].")
@click.option("--unembed", type=click.Choice(["auto", "float32", "split"]), default="auto", show_default=True, help="Unembedding precision strategy: float32 matmuls, or split (half-precision models on CUDA: float32 products from tensor-core matmuls). auto: split on CUDA for float16/bfloat16 models.")
@click.option("--top-k", type=click.IntRange(min=1), default=20, show_default=True, help="Top tokens kept per record.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda", "mps"]), default="auto", show_default=True, help="auto: one GPU, else all GPUs, else mps, else cpu (with disk offload if host memory is short), by a conservative memory-fit estimate; it says what it chose.")
@click.option("--device-map", metavar="auto|balanced|FILE.json", help="Spread the model over devices: auto or balanced (accelerate's strategies, over all GPUs, or CPU and disk with --device cpu), or a JSON file {module: device}.")
@click.option("--max-memory", metavar="DEVICE=SIZE,...", help="Memory budgets per device, e.g. 0=75GiB,1=75GiB or cpu=200GiB (GPU index, cpu, mps, disk; B, KB/MB/GB, KiB/MiB/GiB); weights beyond the CPU budget go to disk.")
@click.option("--offload-folder", metavar="DIR", type=click.Path(file_okay=False), help="Folder for disk-offloaded weights that must be re-saved (non-safetensors checkpoints).")
@click.option("--dtype", type=click.Choice(["auto", "float32", "float16", "bfloat16"]), default="auto", show_default=True, help="auto: CUDA float16 (Gemma bfloat16), MPS float16, CPU float32 (bfloat16 above ~30B parameters).")
@click.option("--revision", help="Hub revision (branch, tag or commit) of a hub model.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Prompts per forward pass [default: 8 on CPU and MPS, 32 on CUDA].")
@click.option("--keep-residuals", is_flag=True, help="Also store every residual vector (its own table, model dtype).")
# issue 20 (h-groups): token groups and component attribution
@click.option("--track", "track", multiple=True, metavar="NAME=WORD,...|NAME=@FILE", callback=_track_specs, help="Track a token group (repeatable): its probability mass, best token and rank at every record (v1.token_groups), and every prompt's gold answers together (v1.answer_mass). Words inline, comma-separated, or @FILE with one word a line (UTF-8; # comments); each word counts with its first token with and without a leading space.")
@click.option("--attribution", is_flag=True, help="Also store the direct logit attribution of the embedding and every block's attention and MLP to the gold, final top-1 and tracked tokens (v1.attributions).")
@click.option("--run-id", help="Id of the new run [default: UTC time and a random suffix].")
@click.option("--model-name", help="Name recorded for the model [default: hub id, or the directory's name].")
@click.option("--seed", type=int, default=316, show_default=True, help="torch seed set before loading.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as one JSON object (run_id, model, path, rows, ...).")
@click.option("--quiet", is_flag=True, help="No progress bar; print only the run id.")
def extract(model, prompts, warehouse, lenses, reference_lens, unembed, top_k, device, device_map, max_memory, offload_folder, dtype, revision, batch_size, keep_residuals, track, attribution, run_id, model_name, seed, as_json, quiet):
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

    summary = run_extract(
        model,
        prompts=prompts,
        warehouse=warehouse,
        lenses=lenses,
        reference=reference_lens,
        unembed=unembed,
        top_k=top_k,
        device=device,
        device_map=device_map,
        max_memory=max_memory,
        offload_folder=offload_folder,
        dtype=dtype,
        revision=revision,
        batch_size=batch_size,
        keep_residuals=keep_residuals,
        track=track,
        attribution=attribution,
        run_id=run_id,
        model_name=model_name,
        seed=seed,
        progress=not quiet,
    )
    if summary.rank != 0:  # under torchrun, rank 0 speaks for the run
        return
    if as_json:
        click.echo(json.dumps(_summary_dict(summary)))
    elif quiet:
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
        f"records    {summary.rows.get('records', 0):,}" + (f"   residuals {summary.rows['residuals']:,}" if "residuals" in summary.rows else ""),
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


@main.command()
@click.argument("sql", required=False)
@click.option("--file", "sql_file", type=click.Path(), help="Read the SQL from a file (UTF-8).")
@click.option("--name", help="Run a named query shipped with lensdb (see --list).")
@click.option("--latest", is_flag=True, help="Every view shows only the latest committed run of each model and prompt set.")
@click.option("--list", "list_only", is_flag=True, help="List the named queries and the v1 views, then exit.")
@click.option("--all", "list_all", is_flag=True, help="With --list: also the helper macros.")
@click.option("--describe", metavar="VIEW", help="List a view's columns, their types and meanings, then exit.")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json", "parquet"]), default="table", show_default=True, help="json is an array of row objects; parquet needs --out.")
@click.option("--out", type=click.Path(), help="Write the result to this file instead of stdout (its folder must exist).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--allow-files", is_flag=True, help="Let the SQL use all of DuckDB: any statement (COPY, ATTACH, ...) and any file. Without it, only read-only statements run and DuckDB reads the warehouse only.")
def query(sql, sql_file, name, latest, list_only, list_all, describe, output_format, out, warehouse, allow_files):
    """Run SQL against every committed run, with the versioned v1 views.

    The SQL is read-only by default: SELECT (FROM, WITH, VALUES, DESCRIBE, SHOW,
    SUMMARIZE, EXPLAIN) over the views and the warehouse's own files; --allow-files lifts
    that. Damaged runs are left out of every view, with one warning line (v1.damaged_runs).

    \b
    Views: v1.runs, v1.latest_runs, v1.prompts, v1.records, v1.pure_next_token,
    v1.diagnostics, v1.control_summary, v1.ablation_summary, v1.raw_lens_check,
    v1.raw_lens_summary, v1.last_layer_consistency, v1.final_predictions, v1.residuals,
    v1.vocab, v1.lenses; macros v1.diagnostics_with(threshold, margin, k) and
    v1.pure_next_token_with(...). `--describe VIEW` lists a view's columns.

    \b
    Examples:
      lensdb query "SELECT model, L_semantic FROM v1.diagnostics WHERE lens = 'norm'"
      lensdb query --latest --name semantic_collapse --format csv --out collapse.csv
      lensdb query "FROM v1.diagnostics_with(threshold := 0.9, k := 2)"
      lensdb query --describe v1.diagnostics
    """
    from lensdb import catalog
    from lensdb.output import check_output_file, write_result
    from lensdb.textfile import read_utf8

    if list_only:
        click.echo(_listing(catalog, list_all))
        return
    if describe:
        description = catalog.describe(describe)
        if output_format == "table" and not out:
            click.echo(_description(description))
        else:
            write_result(_description_table(description), output_format, out)
        return
    given = [x for x in (sql, sql_file, name) if x]
    if len(given) != 1:
        raise click.UsageError("give exactly one of: SQL, --file FILE, --name NAME")
    if sql_file:
        sql = read_utf8(sql_file, label="--file")
    elif name:
        sql = catalog.named_query(name).sql
    if output_format == "parquet" and not out:
        raise click.UsageError("--format parquet needs --out FILE")
    if out:
        check_output_file(out, "--out")
    table = catalog.query(sql, warehouse, latest=latest, allow_files=allow_files)
    write_result(table, output_format, out)


def _listing(catalog, show_all: bool) -> str:
    lines = ["Named queries (lensdb query --name NAME):"]
    width = max(len(name) for name in catalog.named_queries())
    for named in catalog.named_queries().values():
        lines += textwrap.wrap(named.description, 96, initial_indent=f"  {named.name:<{width}}  ", subsequent_indent=" " * (width + 4))
    lines += ["", "Views and table macros, by SQL file (lensdb query --describe VIEW lists the columns):"]
    helpers = []
    for sql_file in catalog.sql_files():
        public = [d for d in sql_file.definitions if d.public and d.kind != "macro"]
        helpers += [d for d in sql_file.definitions if d.public and d.kind == "macro"]
        if not public:
            continue
        lines += ["", f"  {sql_file.path.name} (version {sql_file.version})"]
        lines += textwrap.wrap(", ".join(d.signature for d in public), 96, initial_indent="    ", subsequent_indent="    ", break_on_hyphens=False)
        lines += [f"    {line}".rstrip() for line in sql_file.what_lines]
    if show_all:
        lines += ["", "Helper macros (scalar, usable in any query):"]
        lines += [f"  {d.signature}" for d in helpers]
    else:
        lines += ["", f"({len(helpers)} helper macros not shown: --list --all)"]
    return "\n".join(lines)


def _description(description) -> str:
    from lensdb.output import terminal_width

    definition, sql_file = description.definition, description.sql_file
    kind = "table macro " + definition.signature if definition.kind == "table macro" else "view"
    lines = [f"{definition.name}: {kind}, sql/{sql_file.path.parent.name}/{sql_file.path.name} version {sql_file.version}"]
    name_width = max(len("column"), *(len(c.name) for c in description.columns))
    type_width = max(len("type"), *(len(c.type) for c in description.columns))
    indent = name_width + type_width + 4
    lines.append(f"{'column':<{name_width}}  {'type':<{type_width}}  meaning")
    meaning_width = max(30, terminal_width() - indent)
    for column in description.columns:
        wrapped = textwrap.wrap(column.meaning, meaning_width) or [""]
        lines.append(f"{column.name:<{name_width}}  {column.type:<{type_width}}  {wrapped[0]}".rstrip())
        lines += [" " * indent + more for more in wrapped[1:]]
    return "\n".join(lines)


def _description_table(description):
    import pyarrow as pa

    return pa.table(
        {
            "column": [c.name for c in description.columns],
            "type": [c.type for c in description.columns],
            "meaning": [c.meaning for c in description.columns],
        }
    )


@main.command()
@click.option("--run", "run_id", help="Export this run.")
@click.option("--model", help="Export the latest committed run of this model (hub id, or the part after its last '/').")
@click.option("--lens", default="norm", show_default=True, help="The lens whose records the files show.")
@click.option("--out", required=True, type=click.Path(), help="Folder to write the files into (created if missing; its parent must exist).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--without-variant", is_flag=True, help="CSVs without the prompt_variant column (the seed documents' schema).")
@click.option("--latest", is_flag=True, help="The latest committed run of each model (of --model's model): the default without --run.")
def export(run_id, model, lens, out, warehouse, without_variant, latest):
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
    if run_id and latest:
        raise click.UsageError("give --run or --latest, not both")
    check_output_folder(out, "--out")
    for path in run_export(out, warehouse=warehouse, run_id=run_id, model=model, lens=lens, with_variant=not without_variant):
        click.echo(str(path))


@main.command("import-legacy")
@click.argument("folder", type=click.Path())
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@click.option("--force", is_flag=True, help="Import files again even if the same files were imported before.")
def import_legacy(folder, warehouse, force):
    """Import a legacy output folder: one committed run per model.

    FOLDER holds output-<model>.json, output-<model>-records.csv and
    output-<model>-pure-next-token.csv for one or more models. Every file is checked
    before anything is written; on any error nothing is imported. A model whose files
    (by content) were imported before is not imported again unless --force.
    """
    from lensdb.legacy.importer import import_legacy as run_import

    for imported in run_import(folder, warehouse, force=force):
        if imported.already_imported:
            click.echo(f"{imported.model}  already imported as run {imported.run_id}  (--force imports it again)")
        else:
            click.echo(f"{imported.model}  run {imported.run_id}  ({imported.rows.get('records', 0):,} records)")


@main.command("runs")
@click.option("--model", help="Only this model's runs (hub id, or the part after its last '/').")
@click.option("--format", "output_format", type=click.Choice(["table", "csv", "json"]), default="table", show_default=True, help="csv and json add bytes_on_disk and path.")
@click.option("--uncommitted", is_flag=True, help="List what crashed writers left instead (never in any view; `lensdb cleanup` removes it).")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def runs_command(model, output_format, uncommitted, warehouse):
    """List the runs of the warehouse, damaged ones included.

    Reads the run folders and their manifests directly, so a run whose files cannot be
    read is listed with status damaged (and why) and never hides the others.
    """
    from lensdb import runs
    from lensdb.output import write_result

    if uncommitted:
        write_result(runs.leftovers_table(runs.leftovers(warehouse)), output_format, None, types=False)
        return
    listed = runs.list_runs(warehouse, model=model)
    write_result(runs.runs_table(listed, for_humans=output_format == "table"), output_format, None, types=False)


@main.command()
@click.argument("run_id", metavar="RUN")
@click.option("--format", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def show(run_id, output_format, warehouse):
    """Show one run: manifest, settings, versions, tables, and its diagnostics summarised."""
    from lensdb import runs

    details = runs.show_run(warehouse, run_id)
    if output_format == "json":
        click.echo(json.dumps(runs.details_as_dict(details), default=str, ensure_ascii=False))
    else:
        click.echo(runs.format_details(details), nl=False)


@main.command()
@click.option("--older-than", default="1h", show_default=True, metavar="AGE", help="Only leftovers whose newest file is older (s, min, h, d): a younger one may be a writer still at work on another machine.")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def cleanup(older_than, dry_run, warehouse):
    """Remove what crashed writers left: staging and trash folders of processes that no longer
    run (local), run prefixes without a manifest and files no manifest lists (object storage).

    None of it is in any view; `lensdb runs --uncommitted` lists it.
    """
    from lensdb import runs

    removed = runs.cleanup(warehouse, parse_age(older_than), dry_run=dry_run)
    verb = "would remove" if dry_run else "removed"
    for left in removed:
        click.echo(f"{verb} {left.kind} {left.run_id}  ({left.files} files, {runs.human_size(left.bytes_on_disk)})  {left.location}")
    if not removed:
        click.echo("nothing to remove", err=True)


def parse_age(text: str) -> float:
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|min|m|h|d)?\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r}: use a number with s, min, h or d (e.g. 30min)", param_hint="--older-than")
    scale = {"s": 1, None: 1, "min": 60, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    return float(match.group(1)) * scale


@main.command()
@click.argument("run_ids", metavar="RUN...", nargs=-1, required=True)
@click.option("--yes", "-y", is_flag=True, help="Remove without asking.")
@click.option("--model", help="Only the runs of this model (hub id, or the part after its last '/'): for a run id under several model folders.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
def rm(run_ids, yes, model, warehouse):
    """Remove runs: each leaves every view at once, then its files are deleted.

    Every RUN is checked first: with an unknown run id, or one found under several model
    folders (without --model), nothing is removed.
    """
    from lensdb import runs

    found = runs.runs_to_remove(warehouse, list(run_ids), model)
    if not yes:
        for run in found:
            click.echo(f"  {run.run_id}  {run.model}  {run.status}  {run.size}", err=True)
        if not click.confirm(f"Remove {len(found)} run{'s' if len(found) != 1 else ''}?", default=False, err=True):
            click.echo("lensdb: nothing removed", err=True)
            sys.exit(1)
    for run in runs.remove_runs(warehouse, [run.run_id for run in found], model):
        click.echo(f"removed {run.run_id}  ({run.model}, {run.size})")


FIGURE_OUT_HELP = "File to write: .png, .svg or .pdf (matplotlib), or .html (plotly, self-contained: plotly.js embedded)."


def _metric_option(default: str):
    from lensdb.plot.metrics import METRICS

    return click.option("--metric", type=click.Choice(list(METRICS)), default=default, show_default=True,
                        help="What the colour (heatmap, lenses) or the y axis (curves) shows; answer_rank on a log scale.")


@main.group()
def plot():
    """Figures of committed runs, read from the v1 views.

    \b
    lensdb plot heatmap --model M --prompt ID --out heatmap.png   layers x tokens, top-1 token per cell
    lensdb plot curves --depth relative --out kl.html             a last-position metric across layers
    lensdb plot lenses --model M --prompt ID --out lenses.png     every lens of a run for one prompt

    --out FILE decides the format: .png, .svg or .pdf (matplotlib), .html (plotly, one
    self-contained file that works offline; hovering a cell shows its top-k tokens).
    """


def _latest_option(command):
    """--latest: say explicitly what --model and no selector already mean; refused with --run."""
    return click.option(
        "--latest", is_flag=True, help="Each model's latest committed run (what --model and no selector already pick); not with --run."
    )(command)


def _check_latest(latest: bool, runs) -> None:
    if latest and runs:
        raise click.UsageError("give --run or --latest, not both")


@plot.command("heatmap")
@click.option("--run", "run_id", help="The run to show.")
@click.option("--model", help="Show the latest committed run of this model that has the prompt (hub id, or the part after its last '/').")
@click.option("--prompt", required=True, help="Prompt id (see: lensdb query \"SELECT DISTINCT prompt_id FROM v1.prompts\").")
@click.option("--variant", default="orig", show_default=True, help="Prompt variant.")
@click.option("--lens", default="norm", show_default=True, help="Lens whose records are shown.")
@_metric_option("p_top1")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=FIGURE_OUT_HELP)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def plot_heatmap(run_id, model, prompt, variant, lens, metric, out, warehouse, latest):
    """Layers (0 at the bottom) x the prompt's tokens of one run: colour = --metric, each
    cell's text = its top-1 token; the layers of L_copy and L_semantic (v1.diagnostics) are
    marked at the last position.

    \b
    Example:
      lensdb plot heatmap --model stories260K --prompt lily --out lily.png
    """
    _check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("heatmap", out, run=run_id, model=model, prompt=prompt, variant=variant, lens=lens, metric=metric, warehouse=warehouse)))


@plot.command("curves")
@click.option("--run", "run_ids", multiple=True, help="A run to draw (repeatable).")
@click.option("--model", "models", multiple=True, help="Draw the latest committed run of this model (repeatable).")
@click.option("--prompt", "prompts", multiple=True, help="Only this prompt (repeatable) [default: every prompt of the variant].")
@click.option("--variant", default="orig", show_default=True, help="Prompt variant.")
@click.option("--lens", default="norm", show_default=True, help="Lens whose records are shown.")
@_metric_option("kl_to_final_bits")
@click.option("--depth", type=click.Choice(["layer", "relative"]), default="layer", show_default=True, help="x axis: the layer, or layer / n_layers (to compare models of different depth).")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=FIGURE_OUT_HELP)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def plot_curves(run_ids, models, prompts, variant, lens, metric, depth, out, warehouse, latest):
    """A metric at each prompt's last position across layers, one line per run
    (v1.pure_next_token). Several prompts: the median and a 10-90 % band. The median
    L_semantic of each run is a dashed line. Without --run or --model: the latest run of
    every model that has the lens.

    \b
    Example:
      lensdb plot curves --metric kl_to_final_bits --depth relative --out kl.html
    """
    _check_latest(latest, run_ids)
    from lensdb.plot import write

    click.echo(str(write("curves", out, runs=run_ids, models=models, prompts=prompts, variant=variant, lens=lens, metric=metric,
                         depth=depth, warehouse=warehouse)))


@plot.command("lenses")
@click.option("--run", "run_id", help="The run to show.")
@click.option("--model", help="Show the latest committed run of this model that has the prompt.")
@click.option("--prompt", required=True, help="Prompt id.")
@click.option("--variant", default="orig", show_default=True, help="Prompt variant.")
@_metric_option("p_top1")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=FIGURE_OUT_HELP)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def plot_lenses(run_id, model, prompt, variant, metric, out, warehouse, latest):
    """Every lens of one run (norm, final_ln, raw, ...) for one prompt: a heatmap per lens
    on one colour scale, and the last position's metric per lens (the raw-vs-norm artifact
    check as a picture).

    \b
    Example:
      lensdb plot lenses --model stories260K --prompt lily --out lenses.png
    """
    _check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("lenses", out, run=run_id, model=model, prompt=prompt, variant=variant, metric=metric, warehouse=warehouse)))


@plot.command("groups")
@click.option("--run", "run_id", help="The run to show.")
@click.option("--model", help="Show the latest committed run of this model.")
@click.option("--prompt", "prompts", multiple=True, help="Only this prompt (repeatable) [default: every prompt of the variant].")
@click.option("--group", "groups", multiple=True, help="Only this tracked group (repeatable; leaves out the answer sets) [default: every group and the answer sets].")
@click.option("--variant", default="orig", show_default=True, help="Prompt variant.")
@click.option("--lens", default="norm", show_default=True, help="Lens whose records are shown.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=FIGURE_OUT_HELP)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def plot_groups(run_id, model, prompts, groups, variant, lens, out, warehouse, latest):
    """The mean probability mass of each tracked token group (extract --track) and of the
    prompts' answer sets (v1.answer_mass) by layer, at the last position, with a 95 % band
    over prompts: the latent-language figure of Wendler et al. (2024).

    \b
    Example:
      lensdb extract MODEL --prompts translation --track en=@prompts/words/en.txt --track zh=@prompts/words/zh.txt
      lensdb plot groups --model MODEL --out latent.png
    """
    _check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("groups", out, run=run_id, model=model, prompts=prompts, groups=groups, variant=variant, lens=lens, warehouse=warehouse)))


@plot.command("attribution")
@click.option("--run", "run_id", help="The run to show.")
@click.option("--model", help="Show the latest committed run of this model that has the prompt.")
@click.option("--prompt", required=True, help="Prompt id.")
@click.option("--variant", default="orig", show_default=True, help="Prompt variant.")
@click.option("--target", type=click.Choice(["top1", "gold", "group"]), default="top1", show_default=True, help="Whose logit: the model's own top-1 token, the gold first token, or a tracked group's most probable final token (with --group).")
@click.option("--group", help="With --target group: the tracked group.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help=FIGURE_OUT_HELP)
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def plot_attribution(run_id, model, prompt, variant, target, group, out, warehouse, latest):
    """Direct logit attribution at the prompt's last position (extract --attribution): per
    block, the attention and MLP contributions to the target token's logit as bars, the
    embedding's at layer 0, and their running total (v1.attribution_by_layer).

    \b
    Example:
      lensdb plot attribution --model stories260K --prompt lily --target gold --out lily-dla.png
    """
    _check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("attribution", out, run=run_id, model=model, prompt=prompt, variant=variant, target=target, group=group, warehouse=warehouse)))


@main.command()
@click.option("--run", "run_ids", multiple=True, help="A run to report on (repeatable).")
@click.option("--model", "models", multiple=True, help="Report on the latest committed run of this model (repeatable).")
@click.option("--lens", default="norm", show_default=True, help="Lens of the diagnostics tables and figures.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="The .html file to write.")
@click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)
@_latest_option
def report(run_ids, models, lens, out, warehouse, latest):
    """One self-contained HTML page about some runs (works offline).

    Per run: the manifest, the last-layer check, diagnostics, control margins, ablation
    deltas and the raw-lens check (flags highlighted), a heatmap and the lenses of its
    main prompt and its KL curve; for several models, L_semantic / n_layers and curves at
    relative depth across models. Without --run or --model: the latest run of every model.

    \b
    Example:
      lensdb report --out report.html
    """
    _check_latest(latest, run_ids)
    from lensdb.report import report as write_report

    click.echo(str(write_report(out, runs=run_ids, models=models, lens=lens, warehouse=warehouse)))


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
        "  layer     tuned  final_ln",
    ]
    for row in result.layers:
        tuned, logit = row["kl_bits"], row["final_ln_kl_bits"]
        shown = "      n/a       n/a" if tuned is None else f"{tuned:9.3f} {logit:9.3f}"
        lines.append(f"  {row['layer']:>5} {shown}")
    lines.append(f"written    {result.path}")
    return "\n".join(lines)


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
        # main's settings: click keeps the help option of the first context it made for a command
        with extract.make_context("lensdb extract", ["MODEL", *arguments], **main.context_settings) as context:
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
        device_map=params["device_map"],
        max_memory=params["max_memory"],
        offload_folder=params["offload_folder"],
    )


if __name__ == "__main__":  # pragma: no cover
    main()

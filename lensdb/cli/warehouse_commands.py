"""`lensdb query`, `export`, `import-legacy`, `runs`, `show`, `cleanup`, `rm`: the warehouse's commands."""

from __future__ import annotations

import sys
import textwrap

import click

from lensdb.cli.group import main
from lensdb.cli_options import format_option, model_option, run_option, warehouse_option
from lensdb.output import DOCUMENT, TABLE


@main.command()
@click.argument("sql", required=False)
@click.option("--file", "sql_file", type=click.Path(), help="Read the SQL from a file (UTF-8).")
@click.option("--name", help="Run a named query shipped with lensdb (see --list).")
@click.option("--latest", is_flag=True, help="Every view shows only the latest committed run of each model and prompt set.")
@click.option("--list", "list_only", is_flag=True, help="List the named queries and the v1 views, then exit.")
@click.option("--all", "list_all", is_flag=True, help="With --list: also the helper macros.")
@click.option("--describe", metavar="VIEW", help="List a view's columns, their types and meanings, then exit.")
@format_option(TABLE, help="json is an array of row objects; parquet needs --out.")
@click.option("--out", type=click.Path(), help="Write the result to this file instead of stdout (its folder must exist).")
@warehouse_option
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
    from lensdb.output import check_output_file, renderer_for, write_result
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
    if renderer_for(output_format, TABLE).needs_file and not out:
        raise click.UsageError(f"--format {output_format} needs --out FILE")
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
@run_option(help="Export this run.")
@model_option(help="Export the latest committed run of this model (hub id, or the part after its last '/').")
@click.option("--lens", default="norm", show_default=True, help="The lens whose records the files show.")
@click.option("--out", required=True, type=click.Path(), help="Folder to write the files into (created if missing; its parent must exist).")
@warehouse_option
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
@warehouse_option
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
@model_option(help="Only this model's runs (hub id, or the part after its last '/').")
@format_option(TABLE, to_file=False, help="csv and json add bytes_on_disk and path.")
@click.option("--uncommitted", is_flag=True, help="List what crashed writers left instead (never in any view; `lensdb cleanup` removes it).")
@warehouse_option
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
@format_option(DOCUMENT)
@warehouse_option
def show(run_id, output_format, warehouse):
    """Show one run: manifest, settings, versions, tables, and its diagnostics summarised."""
    from lensdb import runs
    from lensdb.output import Document, render_document

    details = runs.show_run(warehouse, run_id)
    document = Document(text=lambda: runs.format_details(details), data=lambda: runs.details_as_dict(details))
    click.echo(render_document(document, output_format), nl=False)


@main.command()
@click.option("--older-than", default="1h", show_default=True, metavar="AGE", help="Only leftovers whose newest file is older (s, min, h, d): a younger one may be a writer still at work on another machine.")
@click.option("--dry-run", is_flag=True, help="List what would be removed; remove nothing.")
@warehouse_option
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
@model_option(help="Only the runs of this model (hub id, or the part after its last '/'): for a run id under several model folders.")
@warehouse_option
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

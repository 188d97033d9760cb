"""Options that several `lensdb` commands take, each declared once; and click options declared
from a frozen config's fields (lensdb/extract/config.py: one field, one command-line option).

A command stacks these decorators where it lists the option (the order of its --help).
Choices and defaults come from where they are defined: the output formats from
lensdb.output.RENDERERS, the metrics, variant and lens from lensdb.plot.metrics.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

import click

from lensdb.extract.config import option_of

WAREHOUSE_HELP = (
    "Warehouse folder or URL (s3://bucket/prefix, gs://..., file://...; credentials from the "
    "environment) [default: $LENSDB_WAREHOUSE or ./warehouse]."
)
FIGURE_OUT_HELP = "File to write: .png, .svg or .pdf (matplotlib), or .html (plotly, self-contained: plotly.js embedded)."

warehouse_option = click.option("--warehouse", envvar="LENSDB_WAREHOUSE", help=WAREHOUSE_HELP)


def format_option(kind: str, *, to_file: bool = True, help: str | None = None):
    """--format: the formats that render `kind` (lensdb.output.TABLE or DOCUMENT), the first
    the default; to_file=False for a command without --out (no binary format)."""
    from lensdb.output import formats

    names = formats(kind, to_file=to_file)
    return click.option("--format", "output_format", type=click.Choice(names), default=names[0], show_default=True, help=help)


# ---------------------------------------------------------------- figures (plot, report)


def run_option(help: str = "The run to show."):
    """--run RUN: one run (the figures of one run)."""
    return click.option("--run", "run_id", help=help)


def runs_option(help: str):
    """--run RUN, repeatable: runs side by side (curves, report)."""
    return click.option("--run", "run_ids", multiple=True, help=help)


def model_option(help: str = "Show the latest committed run of this model that has the prompt (hub id, or the part after its last '/')."):
    """--model MODEL: the latest run of one model."""
    return click.option("--model", help=help)


def models_option(help: str):
    """--model MODEL, repeatable: the latest run of each."""
    return click.option("--model", "models", multiple=True, help=help)


def prompt_option(help: str = "Prompt id."):
    """--prompt ID (required): the prompt of a run's figure."""
    return click.option("--prompt", required=True, help=help)


def variant_option(command):
    from lensdb.plot.metrics import DEFAULT_VARIANT

    return click.option("--variant", default=DEFAULT_VARIANT, show_default=True, help="Prompt variant.")(command)


def lens_option(help: str = "Lens whose records are shown."):
    from lensdb.plot.metrics import DEFAULT_LENS

    return click.option("--lens", default=DEFAULT_LENS, show_default=True, help=help)


def metric_option(default: str):
    from lensdb.plot.metrics import METRICS

    return click.option("--metric", type=click.Choice(list(METRICS)), default=default, show_default=True,
                        help="What the colour (heatmap, lenses) or the y axis (curves) shows; answer_rank on a log scale.")


def figure_out_option(help: str = FIGURE_OUT_HELP):
    """--out FILE (required): the figure's or the page's file."""
    return click.option("--out", required=True, type=click.Path(dir_okay=False), help=help)


def latest_option(command):
    """--latest: say explicitly what --model and no selector already mean; refused with --run."""
    return click.option(
        "--latest", is_flag=True, help="Each model's latest committed run (what --model and no selector already pick); not with --run."
    )(command)


def check_latest(latest: bool, runs) -> None:
    if latest and runs:
        raise click.UsageError("give --run or --latest, not both")


# ---------------------------------------------------------------- extract's options, from ExtractConfig


def config_options(config_class, before: dict | None = None):
    """A decorator adding a click option for every field of `config_class` that has a flag,
    in field order; `before` maps a field name to option decorators placed ahead of it
    (options of the command itself, such as extract's --json)."""
    before = before or {}

    def decorate(command):
        declared = []
        for config_field in fields(config_class):
            declared += before.get(config_field.name, [])
            if option_of(config_field).flag is not None:
                declared.append(click_option(config_field))
        for declare in reversed(declared):  # click lists options in the order the decorators are written
            command = declare(command)
        return command

    return decorate


def click_option(config_field):
    opt = option_of(config_field)
    settings: dict = {"help": opt.help}
    default = None if config_field.default is MISSING else config_field.default
    if opt.is_flag:
        settings["is_flag"] = True
    elif opt.multiple:
        settings["multiple"] = True
    elif default is not None:
        settings["default"] = opt.as_text(default) if not isinstance(default, (int, float)) else default
    if opt.show_default:
        settings["show_default"] = True
    if opt.metavar:
        settings["metavar"] = opt.metavar
    if opt.choices is not None:
        settings["type"] = click.Choice(list(opt.choices))
    elif opt.minimum is not None:
        settings["type"] = click.IntRange(min=opt.minimum)
    elif opt.number:
        settings["type"] = int
    elif opt.folder:
        settings["type"] = click.Path(file_okay=False)
    return click.option(opt.flag, config_field.name, **settings)

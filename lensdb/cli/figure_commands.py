"""`lensdb plot ...` and `lensdb report`: figures and the HTML page."""

from __future__ import annotations

import click

from lensdb.cli.group import main
from lensdb.cli_options import (check_latest, figure_out_option, latest_option, lens_option, metric_option, model_option,
                                models_option, prompt_option, run_option, runs_option, variant_option, warehouse_option)


@main.group()
def plot():
    """Figures of committed runs, read from the v1 views.

    \b
    lensdb plot heatmap --model M --prompt ID --out heatmap.png   layers x tokens, top-1 token per cell
    lensdb plot curves --depth relative --out kl.html             a last-position metric across layers
    lensdb plot lenses --model M --prompt ID --out lenses.png     every lens of a run for one prompt
    lensdb plot groups --model M --out latent.png                 tracked token groups' mass by layer
    lensdb plot attribution --model M --prompt ID --out dla.png   attention and MLP logit attribution

    --out FILE decides the format: .png, .svg or .pdf (matplotlib), .html (plotly, one
    self-contained file that works offline; hovering a cell shows its top-k tokens).
    """


@plot.command("heatmap")
@run_option()
@model_option()
@prompt_option(help="Prompt id (see: lensdb query \"SELECT DISTINCT prompt_id FROM v1.prompts\").")
@variant_option
@lens_option()
@metric_option("p_top1")
@figure_out_option()
@warehouse_option
@latest_option
def plot_heatmap(run_id, model, prompt, variant, lens, metric, out, warehouse, latest):
    """Layers (0 at the bottom) x the prompt's tokens of one run: colour = --metric, each
    cell's text = its top-1 token; the layers of L_copy and L_semantic (v1.diagnostics) are
    marked at the last position.

    \b
    Example:
      lensdb plot heatmap --model stories260K --prompt lily --out lily.png
    """
    check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("heatmap", out, run=run_id, model=model, prompt=prompt, variant=variant, lens=lens, metric=metric, warehouse=warehouse)))


@plot.command("curves")
@runs_option(help="A run to draw (repeatable).")
@models_option(help="Draw the latest committed run of this model (repeatable).")
@click.option("--prompt", "prompts", multiple=True, help="Only this prompt (repeatable) [default: every prompt of the variant].")
@variant_option
@lens_option()
@metric_option("kl_to_final_bits")
@click.option("--depth", type=click.Choice(["layer", "relative"]), default="layer", show_default=True, help="x axis: the layer, or layer / n_layers (to compare models of different depth).")
@figure_out_option()
@warehouse_option
@latest_option
def plot_curves(run_ids, models, prompts, variant, lens, metric, depth, out, warehouse, latest):
    """A metric at each prompt's last position across layers, one line per run
    (v1.pure_next_token). Several prompts: the median and a 10-90 % band. The median
    L_semantic of each run is a dashed line. Without --run or --model: the latest run of
    every model that has the lens.

    \b
    Example:
      lensdb plot curves --metric kl_to_final_bits --depth relative --out kl.html
    """
    check_latest(latest, run_ids)
    from lensdb.plot import write

    click.echo(str(write("curves", out, runs=run_ids, models=models, prompts=prompts, variant=variant, lens=lens, metric=metric,
                         depth=depth, warehouse=warehouse)))


@plot.command("lenses")
@run_option()
@model_option(help="Show the latest committed run of this model that has the prompt.")
@prompt_option()
@variant_option
@metric_option("p_top1")
@figure_out_option()
@warehouse_option
@latest_option
def plot_lenses(run_id, model, prompt, variant, metric, out, warehouse, latest):
    """Every lens of one run (norm, final_ln, raw, ...) for one prompt: a heatmap per lens
    on one colour scale, and the last position's metric per lens (the raw-vs-norm artifact
    check as a picture).

    \b
    Example:
      lensdb plot lenses --model stories260K --prompt lily --out lenses.png
    """
    check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("lenses", out, run=run_id, model=model, prompt=prompt, variant=variant, metric=metric, warehouse=warehouse)))


@plot.command("groups")
@run_option()
@model_option(help="Show the latest committed run of this model.")
@click.option("--prompt", "prompts", multiple=True, help="Only this prompt (repeatable) [default: every prompt of the variant].")
@click.option("--group", "groups", multiple=True, help="Only this tracked group (repeatable; leaves out the answer sets) [default: every group and the answer sets].")
@variant_option
@lens_option()
@figure_out_option()
@warehouse_option
@latest_option
def plot_groups(run_id, model, prompts, groups, variant, lens, out, warehouse, latest):
    """The mean probability mass of each tracked token group (extract --track) and of the
    prompts' answer sets (v1.answer_mass) by layer, at the last position, with a 95 % band
    over prompts: the latent-language figure of Wendler et al. (2024).

    \b
    Example:
      lensdb extract MODEL --prompts translation --track en=@prompts/words/en.txt --track zh=@prompts/words/zh.txt
      lensdb plot groups --model MODEL --out latent.png
    """
    check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("groups", out, run=run_id, model=model, prompts=prompts, groups=groups, variant=variant, lens=lens, warehouse=warehouse)))


@plot.command("attribution")
@run_option()
@model_option()
@prompt_option()
@variant_option
@click.option("--target", type=click.Choice(["top1", "gold", "group"]), default="top1", show_default=True, help="Whose logit: the model's own top-1 token, the gold first token, or a tracked group's most probable final token (with --group).")
@click.option("--group", help="With --target group: the tracked group.")
@figure_out_option()
@warehouse_option
@latest_option
def plot_attribution(run_id, model, prompt, variant, target, group, out, warehouse, latest):
    """Direct logit attribution at the prompt's last position (extract --attribution): per
    block, the attention and MLP contributions to the target token's logit as bars, the
    embedding's at layer 0, and their running total (v1.attribution_by_layer).

    \b
    Example:
      lensdb plot attribution --model stories260K --prompt lily --target gold --out lily-dla.png
    """
    check_latest(latest, run_id)
    from lensdb.plot import write

    click.echo(str(write("attribution", out, run=run_id, model=model, prompt=prompt, variant=variant, target=target, group=group, warehouse=warehouse)))


@main.command()
@runs_option(help="A run to report on (repeatable).")
@models_option(help="Report on the latest committed run of this model (repeatable).")
@lens_option(help="Lens of the diagnostics tables and figures.")
@figure_out_option(help="The .html file to write.")
@warehouse_option
@latest_option
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
    check_latest(latest, run_ids)
    from lensdb.report import report as write_report

    click.echo(str(write_report(out, runs=run_ids, models=models, lens=lens, warehouse=warehouse)))

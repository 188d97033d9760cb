"""Figures of a warehouse's runs, read from the v1 views.

    import lensdb.plot
    fig = lensdb.plot.heatmap(model="stories260K", prompt="lily")            # matplotlib Figure
    fig = lensdb.plot.curves(models=["stories260K"], backend="plotly")       # plotly Figure
    lensdb.plot.save(fig, "curves.html")

`heatmap`, `curves` and `lenses` return a figure object (matplotlib by default, plotly
with backend="plotly"); `save` writes it (.png/.svg/.pdf from matplotlib, .html from
plotly with plotly.js embedded, so the page works offline); `write` does both, choosing
the backend from the file's extension. matplotlib, plotly and the warehouse code are
imported when a figure is made, so importing lensdb.plot is cheap.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from lensdb.errors import LensdbError
from lensdb.output import write_whole
from lensdb.plot.metrics import DEFAULT_LENS, DEFAULT_VARIANT, DEPTHS, METRICS

__all__ = ["heatmap", "curves", "lenses", "groups", "attribution", "save", "write", "METRICS", "DEPTHS", "KINDS", "EXTENSIONS"]

BACKENDS = ("matplotlib", "plotly")
EXTENSIONS = {".png": "matplotlib", ".svg": "matplotlib", ".pdf": "matplotlib", ".html": "plotly"}
KINDS = ("heatmap", "curves", "lenses", "groups", "attribution")


def heatmap(run: str | None = None, *, model: str | None = None, prompt: str, variant: str = DEFAULT_VARIANT,
            lens: str = DEFAULT_LENS, metric: str = "p_top1", warehouse=None, backend: str = "matplotlib"):
    """Layers x the prompt's tokens of one run (`run`, or the latest run of `model` that has
    `prompt`): colour = `metric`, text = each cell's top-1 token, L_copy and L_semantic marked."""
    _check_backend(backend)
    from lensdb.plot import data

    with data.Warehouse(warehouse) as db:
        grid = data.grid(db, db.select_run(run, model, prompt), prompt, variant=variant, lens=lens, metric_name=metric)
    return _module(backend).heatmap_figure(grid)


def lenses(run: str | None = None, *, model: str | None = None, prompt: str, variant: str = DEFAULT_VARIANT,
           metric: str = "p_top1", warehouse=None, backend: str = "matplotlib"):
    """Every lens of one run for one prompt: a heatmap per lens on one colour scale, and the
    last position's metric per lens across layers."""
    _check_backend(backend)
    from lensdb.plot import data

    with data.Warehouse(warehouse) as db:
        grids = data.lens_grids(db, db.select_run(run, model, prompt), prompt, variant=variant, metric_name=metric)
    return _module(backend).lenses_figure(grids)


def curves(runs=(), *, models=(), prompts=(), metric: str = "kl_to_final_bits", lens: str = DEFAULT_LENS,
           variant: str = DEFAULT_VARIANT, depth: str = "layer", warehouse=None, backend: str = "matplotlib"):
    """A last-position metric across layers, one line per run (`runs`, the latest run of each
    of `models`, or without either the latest run of every model that has the lens); several
    prompts (all of the variant unless `prompts` names some) give the median and a 10-90 % band.
    depth="relative" puts layer / n_layers on the x axis so models of different depth compare."""
    _check_backend(backend)
    runs, models, prompts = as_tuple(runs), as_tuple(models), as_tuple(prompts)
    from lensdb.plot import data

    with data.Warehouse(warehouse) as db:
        chosen = db.select_runs(runs, models, prompts[0] if prompts else None, lens)
        lines = data.curves(db, chosen, metric_name=metric, lens=lens, variant=variant, prompts=prompts, depth=depth)
    return _module(backend).curves_figure(lines)


def groups(run: str | None = None, *, model: str | None = None, prompts=(), groups=(), lens: str = DEFAULT_LENS,
           variant: str = DEFAULT_VARIANT, warehouse=None, backend: str = "matplotlib"):
    """Mean probability mass of each tracked token group (`extract --track`) and of the
    prompts' answer sets by layer at the last position, with a 95 % band over prompts (the
    latent-language figure of Wendler et al. 2024). `groups` picks some groups (then the
    answer sets are left out)."""
    _check_backend(backend)
    prompts, groups = as_tuple(prompts), as_tuple(groups)
    from lensdb.plot import data, group_data

    with data.Warehouse(warehouse) as db:
        run_info = db.select_run(run, model, prompts[0] if prompts else None)
        curves = group_data.group_curves(db, run_info, lens=lens, variant=variant, prompts=prompts, groups=groups)
    return _module(backend).groups_figure(curves)


def attribution(run: str | None = None, *, model: str | None = None, prompt: str, variant: str = DEFAULT_VARIANT,
                target: str = "top1", group: str | None = None, warehouse=None, backend: str = "matplotlib"):
    """Direct logit attribution at the prompt's last position (`extract --attribution`): per
    block, the attention and MLP contributions to the logit of the `target` token (top1: the
    model's own prediction, gold, or group with `group`), with the embedding and the running total."""
    _check_backend(backend)
    from lensdb.plot import attribution_data, data

    with data.Warehouse(warehouse) as db:
        found = attribution_data.layer_attribution(db, db.select_run(run, model, prompt), prompt, variant=variant, target=target, group=group)
    return _module(backend).attribution_figure(found)


def save(figure, out) -> Path:
    """Write `figure` to `out`: a matplotlib figure as .png/.svg/.pdf, a plotly figure as a
    self-contained .html (plotly.js embedded). The file appears complete or not at all."""
    path = Path(out)
    extension = path.suffix.lower()
    if extension not in EXTENSIONS:
        raise LensdbError(f"cannot write {path.name}: use a .png, .svg, .pdf or .html file")
    is_plotly = hasattr(figure, "write_html")
    if EXTENSIONS[extension] == "plotly" and not is_plotly:
        raise LensdbError(f"{path.name}: a matplotlib figure is written as .png, .svg or .pdf (make the figure with backend='plotly' for .html)")
    if EXTENSIONS[extension] == "matplotlib" and is_plotly:
        raise LensdbError(f"{path.name}: a plotly figure is written as .html (make the figure with backend='matplotlib' for {extension})")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LensdbError(f"cannot write {path}: {exc.strerror or exc}") from None
    def write(temporary):
        if is_plotly:
            figure.write_html(str(temporary), include_plotlyjs=True, full_html=True, config={"displaylogo": False})
        else:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Glyph .* missing from")
                figure.savefig(temporary, format=extension[1:], dpi=120)

    write_whole(path, write)
    return path


def write(kind: str, out, **options) -> Path:
    """Make the `kind` figure ('heatmap', 'curves' or 'lenses') with `options` and save it to
    `out`, with matplotlib or plotly as the file's extension asks."""
    if kind not in KINDS:
        raise LensdbError(f"unknown figure {kind!r}; choose one of {', '.join(KINDS)}")
    extension = Path(out).suffix.lower()
    if extension not in EXTENSIONS:
        raise LensdbError(f"cannot write {Path(out).name}: use a .png, .svg, .pdf or .html file")
    figure = {"heatmap": heatmap, "curves": curves, "lenses": lenses, "groups": groups, "attribution": attribution}[kind](backend=EXTENSIONS[extension], **options)
    return save(figure, out)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise LensdbError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")


def _module(backend: str):
    if backend == "plotly":
        from lensdb.plot import interactive

        return interactive
    from lensdb.plot import static

    return static


def as_tuple(value) -> tuple:
    """None -> (), one string -> (it,), any other iterable -> a tuple of it (the --run/--model options)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(value)

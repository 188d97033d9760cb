"""Matplotlib figures (for .png, .svg, .pdf) from the data of lensdb.plot.data.

Figures are built as `matplotlib.figure.Figure` objects without pyplot, so nothing here
depends on a display or a global backend. Every artist that carries data has a gid
("median:<run>", "band:<run>", "L_semantic:<run>", "mark:<name>") so tests and users can
find it again.
"""

from __future__ import annotations

import functools
import math

from lensdb.plot import text
from lensdb.plot.data import Curves, Grid, LensGrids
from lensdb.plot.metrics import MARKS, Metric
from lensdb.plot.style import AXIS_CHARS, CELL_CHARS, MARK_COLOURS, MISSING_COLOUR, colour, curves_title, marks_caption

CELL_WIDTH_IN = 0.62
CELL_HEIGHT_IN = 0.27
MAX_GRID_IN = 150.0  # a very long prompt or deep model gets narrower cells (matplotlib caps images at 2**16 px)
MARK_STYLE = {
    "L_copy": dict(edgecolor=MARK_COLOURS["L_copy"], linestyle="--"),
    "L_semantic": dict(edgecolor=MARK_COLOURS["L_semantic"], linestyle="-"),
}
# Text that comes from the data (model, lens and prompt names, tokens) is drawn as it is:
# never mathtext ('$' starts it) nor LaTeX (a matplotlibrc's text.usetex).
PLAIN = dict(parse_math=False, usetex=False)
FONT_FAMILY = ["DejaVu Sans"]  # extended with installed fonts that cover more scripts
_FALLBACK_FONTS = ("Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans", "Noto Color Emoji", "Liberation Sans")


@functools.lru_cache(maxsize=1)
def _fonts() -> list[str]:
    from matplotlib import font_manager

    installed = {font.name for font in font_manager.fontManager.ttflist}
    return FONT_FAMILY + [name for name in _FALLBACK_FONTS if name in installed]


def _norm_and_cmap(metric: Metric, values: list[float]):
    from matplotlib import colormaps, colors

    finite = [v for v in values if not math.isnan(v)]
    top = max(finite) if finite else 1.0
    if metric.log:
        norm = colors.LogNorm(vmin=1.0, vmax=max(10.0, top))
    elif metric.bounds:
        norm = colors.Normalize(*metric.bounds)
    else:
        norm = colors.Normalize(min(0.0, min(finite, default=0.0)), top if top > 0 else 1.0)
    cmap = colormaps["viridis_r" if metric.lower_is_better else "viridis"].with_extremes(bad=MISSING_COLOUR)
    return norm, cmap


def _text_colour(rgba) -> str:
    red, green, blue = rgba[:3]
    return "black" if 0.299 * red + 0.587 * green + 0.114 * blue > 0.5 else "white"


def _grid_size(grid: Grid) -> tuple[float, float]:
    return min(MAX_GRID_IN, len(grid.positions) * CELL_WIDTH_IN), min(MAX_GRID_IN, len(grid.layers) * CELL_HEIGHT_IN)


def _draw_grid(ax, grid: Grid, norm, cmap):
    """The heatmap of one grid on `ax`: colour = metric, text = top-1 token, marks at the last position."""
    import numpy as np
    from matplotlib.patches import Rectangle

    values = np.ma.masked_invalid(np.array(grid.values, dtype=float))
    n_rows, n_cols = values.shape
    # Rows one layer apart, or half a layer with mid sites (layer - 0.5) between them.
    half_row = 0.5 if n_rows < 2 else (grid.layers[-1] - grid.layers[0]) / (n_rows - 1) / 2
    image = ax.imshow(
        values, origin="lower", aspect="auto", interpolation="nearest", cmap=cmap, norm=norm,
        extent=(-0.5, n_cols - 0.5, grid.layers[0] - half_row, grid.layers[-1] + half_row),
    )
    image.set_gid("heatmap")
    fontsize = 6.5 if n_cols > 30 else 7.5
    for i, layer in enumerate(grid.layers):
        for j in range(n_cols):
            value = grid.values[i][j]
            ink = "black" if math.isnan(value) else _text_colour(cmap(norm(value)))
            ax.text(j, layer, text.truncate(grid.top1[i][j], CELL_CHARS), ha="center", va="center",
                    fontsize=fontsize, color=ink, fontfamily=_fonts(), **PLAIN)
    ax.set_xticks(range(n_cols), [text.truncate(t, AXIS_CHARS) for t in grid.position_labels],
                  rotation=60, ha="right", rotation_mode="anchor", fontsize=8, fontfamily=_fonts(), **PLAIN)
    step = 1 if n_rows <= 48 else 2
    ax.set_yticks(grid.layers[::step])
    ax.tick_params(axis="y", labelsize=8)
    ax.set_ylabel("layer")
    last = n_cols - 1
    right_labels: dict[int, list[str]] = {}
    for name in MARKS:
        layer = grid.marks.get(name)
        if layer is None:
            continue
        box = Rectangle((last - 0.5, layer - 0.5), 1, 1, fill=False, linewidth=2.6, gid=f"mark:{name}", **MARK_STYLE[name])
        ax.add_patch(box)
        right_labels.setdefault(layer, []).append(name)
    if right_labels:
        side = ax.secondary_yaxis("right")
        side.set_yticks(sorted(right_labels), [", ".join(right_labels[layer]) for layer in sorted(right_labels)], fontsize=8)
        for tick, layer in zip(side.get_yticklabels(), sorted(right_labels)):
            tick.set_color(MARK_STYLE[right_labels[layer][-1]]["edgecolor"])
            tick.set_fontweight("bold")
    ax.set_title(f"{grid.lens} lens   {marks_caption(grid.marks)} (last position)", fontsize=9, loc="left", **PLAIN)
    return image


def heatmap_figure(grid: Grid):
    """Layers (0 at the bottom) x the prompt's tokens; colour = metric, text = top-1 token."""
    from matplotlib.figure import Figure

    width, height = _grid_size(grid)
    fig = Figure(figsize=(max(6.0, width + 3.2), height + 2.2), layout="constrained")
    ax = fig.add_subplot()
    norm, cmap = _norm_and_cmap(grid.metric, [v for row in grid.values for v in row])
    image = _draw_grid(ax, grid, norm, cmap)
    fig.colorbar(image, ax=ax, label=grid.metric.label, pad=0.02, fraction=0.04 if width > 8 else 0.08)
    fig.suptitle(f"{grid.run.model}   prompt {grid.prompt_id} ({grid.variant})   run {grid.run.run_id}",
                 fontsize=10, **PLAIN)
    ax.set_xlabel(f"position (colour: {grid.metric.label}; text: top-1 token)")
    return fig


def lenses_figure(data: LensGrids):
    """One heatmap per lens on a shared colour scale, then the last position's metric per lens."""
    from matplotlib.figure import Figure

    width, height = _grid_size(data.grids[0])
    n = len(data.grids)
    line_height = 2.6
    fig = Figure(figsize=(max(6.0, width + 3.2), n * (height + 1.4) + line_height + 1.2), layout="constrained")
    axes = fig.subplots(n + 1, 1, height_ratios=[height + 1.0] * n + [line_height])
    norm, cmap = _norm_and_cmap(data.metric, [v for g in data.grids for row in g.values for v in row])
    images = [_draw_grid(ax, g, norm, cmap) for ax, g in zip(axes[:-1], data.grids)]
    fig.colorbar(images[0], ax=list(axes[:-1]), label=data.metric.label, pad=0.02, fraction=0.04 if width > 8 else 0.08)
    lines = axes[-1]
    handles = []
    for g in data.grids:
        last = [row[-1] for row in g.values]
        handles += lines.plot(g.layers, last, marker="o", markersize=3, label=g.lens, gid=f"lens:{g.lens}")
    if data.metric.log:
        lines.set_yscale("log")
    lines.set_xlabel("layer")
    lines.set_ylabel(data.metric.label)
    lines.set_title("last position, every lens", fontsize=9, loc="left")
    _legend(lines, handles, [g.lens for g in data.grids])
    lines.grid(alpha=0.3)
    fig.suptitle(f"{data.run.model}   prompt {data.prompt_id} ({data.variant})   lenses {', '.join(g.lens for g in data.grids)}",
                 fontsize=10, **PLAIN)
    return fig


def _legend(ax, handles, labels) -> None:
    """A legend of exactly these labels as plain text (matplotlib would drop a label that
    starts with '_' and read '$' as mathtext)."""
    legend = ax.legend(handles, labels, fontsize=8)
    for text in legend.get_texts():
        text.set_parse_math(False)
        text.set_usetex(False)


def curves_figure(data: Curves):
    """One line per run across layers; the median and a 10-90 % band for several prompts."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    handles, labels = [], []
    for i, curve in enumerate(data.curves):
        line_colour = colour(i)
        x = curve.depth(data.depth)
        n = f"{curve.n_prompts} prompt{'s' if curve.n_prompts != 1 else ''}"
        labels.append(f"{curve.label} ({n})")
        handles += ax.plot(x, curve.median, color=line_colour, marker="o", markersize=3, label=labels[-1], gid=f"median:{curve.run.run_id}")
        if curve.n_prompts > 1:
            ax.fill_between(x, curve.low, curve.high, color=line_colour, alpha=0.18, linewidth=0, gid=f"band:{curve.run.run_id}")
        if curve.l_semantic is not None:
            ax.axvline(curve.at_depth(curve.l_semantic, data.depth), color=line_colour, linestyle="--", linewidth=1.3,
                       gid=f"L_semantic:{curve.run.run_id}")
    if data.metric.log:
        ax.set_yscale("log")
    elif data.metric.bounds:
        ax.set_ylim(*data.metric.bounds)
    ax.set_xlabel("layer / n_layers" if data.depth == "relative" else "layer")
    ax.set_ylabel(data.metric.label)
    ax.grid(alpha=0.3)
    if any(curve.l_semantic is not None for curve in data.curves):
        handles.append(Line2D([], [], color="grey", linestyle="--"))
        labels.append("L_semantic" + (" (median over prompts)" if data.is_battery else ""))
    _legend(ax, handles, labels)
    fig.suptitle(curves_title(data), fontsize=10, **PLAIN)
    return fig


def groups_figure(data):
    """Mean token-group mass by layer (plot.group_data.GroupCurves), one line per group with
    its 95 % band over prompts (gids "mass:<group>", "band:<group>")."""
    from matplotlib.figure import Figure

    from lensdb.plot.group_data import groups_title

    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    handles, labels = [], []
    for i, curve in enumerate(data.curves):
        line_colour = colour(i)
        labels.append(f"{curve.label} ({curve.n_prompts} prompt{'s' if curve.n_prompts != 1 else ''})")
        handles += ax.plot(curve.layers, curve.mean, color=line_colour, marker="o", markersize=3, gid=f"mass:{curve.label}")
        if curve.n_prompts > 1:
            ax.fill_between(curve.layers, curve.low, curve.high, color=line_colour, alpha=0.18, linewidth=0, gid=f"band:{curve.label}")
    ax.set_ylim(0, 1)
    ax.set_xlabel("layer")
    ax.set_ylabel("probability mass")
    ax.grid(alpha=0.3)
    _legend(ax, handles, labels)
    fig.suptitle(groups_title(data), fontsize=10, **PLAIN)
    return fig


def attribution_figure(data):
    """Per block, the attention and MLP contributions to the token's logit as bars (gids
    "attn", "mlp"), the embedding at layer 0 ("embed") and the running total as a line ("cumulative")."""
    from matplotlib.figure import Figure

    from lensdb.plot.attribution_data import attribution_title

    fig = Figure(figsize=(8.5, 5.0), layout="constrained")
    ax = fig.add_subplot()
    width = 0.38
    attn = ax.bar([b - width / 2 for b in data.blocks], data.attn, width, color=colour(0), gid="attn")
    mlp = ax.bar([b + width / 2 for b in data.blocks], data.mlp, width, color=colour(1), gid="mlp")
    embed = ax.bar([0], [data.embed], width, color=colour(7), gid="embed")
    (total,) = ax.plot(list(range(len(data.cumulative))), data.cumulative, color="black", marker="o", markersize=3, gid="cumulative")
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_xlabel("layer (block + 1)")
    ax.set_ylabel("contribution to the logit")
    ax.grid(alpha=0.3)
    _legend(ax, [embed, attn, mlp, total], ["embedding", "attention", "MLP", "running total"])
    fig.suptitle(attribution_title(data), fontsize=10, **PLAIN)
    return fig

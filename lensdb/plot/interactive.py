"""Plotly figures (for .html and the report) from the data of lensdb.plot.data.

Hovering a heatmap cell shows its layer, position, input token, metric value and top-k
tokens with their probabilities. Token strings are HTML-escaped (plotly renders a subset of
HTML in text). Traces and shapes that carry data are named ("median", "band", "L_semantic",
"mark") in their `meta` / `name`, so tests and users can find them again.
"""

from __future__ import annotations

import html
import math

from lensdb.plot import text
from lensdb.plot.data import Curves, Grid, LensGrids
from lensdb.plot.metrics import MARKS, Metric
from lensdb.plot.style import AXIS_CHARS, CELL_CHARS, HOVER_TOP_K, MARK_COLOURS, MISSING_COLOUR, colour, curves_title, marks_caption

CELL_WIDTH_PX = 62
CELL_HEIGHT_PX = 26
MARGIN = dict(l=70, r=130, t=70, b=110)
FONT = "DejaVu Sans, Arial, sans-serif"


def _esc(value: str) -> str:
    """Escape for plotly's text, which decodes &amp; &lt; &gt; but not &quot;."""
    return html.escape(value, quote=False)


def _finite(values) -> list[float]:
    return [v for v in values if v is not None and not math.isnan(v)]


def _coloraxis(metric: Metric, values: list[float]) -> dict:
    """A sequential colour scale; a rank is shown on a log10 scale with 1, 10, 100 ... ticks."""
    finite = _finite(values)
    top = max(finite) if finite else 1.0
    axis = dict(colorscale="Viridis", reversescale=metric.lower_is_better,
                colorbar=dict(title=dict(text=metric.label, side="right"), thickness=14, x=1.0, xanchor="left", xpad=90))
    if metric.log:
        decades = max(1, math.ceil(math.log10(max(top, 10.0))))
        axis.update(cmin=0.0, cmax=math.log10(max(top, 10.0)))
        axis["colorbar"].update(tickvals=list(range(decades + 1)), ticktext=[f"{10 ** d:g}" for d in range(decades + 1)])
    elif metric.bounds:
        axis.update(cmin=metric.bounds[0], cmax=metric.bounds[1])
    else:
        axis.update(cmin=min(0.0, min(finite, default=0.0)), cmax=top if top > 0 else 1.0)
    return axis


def _shown(metric: Metric, value: float):
    """The z value plotted for a metric value (log10 for a log scale; None where NULL)."""
    if value is None or math.isnan(value):
        return None
    return math.log10(value) if metric.log else value


def _format(value: float) -> str:
    if value is None or math.isnan(value):
        return "NULL"
    return f"{value:.6g}"


def _hover(grid: Grid, i: int, j: int) -> str:
    layer, pos = grid.layers[i], grid.positions[j]
    lines = [
        f"<b>layer {layer}</b>, position {pos} (input {_esc(grid.position_labels[j])})",
        f"{_esc(grid.metric.label)}: {_format(grid.values[i][j])}",
        "top-k:",
    ]
    lines += [f"{rank}. {_esc(token)}  {p:.4f}" for rank, (token, p) in enumerate(grid.topk[i][j][:HOVER_TOP_K], 1)]
    return "<br>".join(lines)


def _heatmap_trace(grid: Grid, *, coloraxis: str = "coloraxis"):
    import plotly.graph_objects as go

    return go.Heatmap(
        z=[[_shown(grid.metric, v) for v in row] for row in grid.values],
        x=list(range(len(grid.positions))),
        y=grid.layers,
        text=[[_esc(text.truncate(t, CELL_CHARS)) for t in row] for row in grid.top1],
        texttemplate="%{text}",
        textfont=dict(size=10, family=FONT),
        hovertext=[[_hover(grid, i, j) for j in range(len(grid.positions))] for i in range(len(grid.layers))],
        hovertemplate="%{hovertext}<extra></extra>",
        coloraxis=coloraxis,
        xgap=1,
        ygap=1,
        name=grid.lens,
        meta={"role": "heatmap", "lens": grid.lens},
    )


def _axes(fig, grid: Grid, *, row=None, col=None) -> None:
    labels = [_esc(text.truncate(t, AXIS_CHARS)) for t in grid.position_labels]
    fig.update_xaxes(tickmode="array", tickvals=list(range(len(labels))), ticktext=labels, tickangle=-60,
                     range=[-0.5, len(labels) - 0.5], showgrid=False, zeroline=False, row=row, col=col)
    fig.update_yaxes(title_text="layer", tickmode="linear", dtick=1 if len(grid.layers) <= 48 else 2,
                     range=[grid.layers[0] - 0.5, grid.layers[-1] + 0.5], showgrid=False, zeroline=False, row=row, col=col)


def _marks(fig, grid: Grid, *, row=None, col=None) -> None:
    last = len(grid.positions) - 1
    at_layer: dict[int, list[str]] = {}
    for name in MARKS:
        layer = grid.marks.get(name)
        if layer is None:
            continue
        fig.add_shape(type="rect", x0=last - 0.5, x1=last + 0.5, y0=layer - 0.5, y1=layer + 0.5,
                      line=dict(color=MARK_COLOURS[name], width=3, dash="dash" if name == "L_copy" else "solid"),
                      name=f"mark:{name}", row=row, col=col)
        at_layer.setdefault(layer, []).append(name)
    for layer, names in at_layer.items():
        fig.add_annotation(x=last + 0.55, y=layer, text=f"<b>{', '.join(names)}</b>", showarrow=False, xanchor="left",
                           font=dict(color=MARK_COLOURS[names[-1]], size=11), row=row, col=col)


def _size(grid: Grid) -> tuple[int, int]:
    return len(grid.positions) * CELL_WIDTH_PX, len(grid.layers) * CELL_HEIGHT_PX


def heatmap_figure(grid: Grid):
    """Layers (0 at the bottom) x the prompt's tokens; colour = metric, text = top-1 token."""
    import plotly.graph_objects as go

    width, height = _size(grid)
    fig = go.Figure(_heatmap_trace(grid))
    _axes(fig, grid)
    _marks(fig, grid)
    fig.update_layout(
        title=dict(text=_esc(f"{grid.run.model}   prompt {grid.prompt_id} ({grid.variant})   {grid.lens} lens   "
                                    f"{marks_caption(grid.marks)} (last position)"), font=dict(size=14)),
        coloraxis=_coloraxis(grid.metric, [v for row in grid.values for v in row]),
        width=max(700, width + MARGIN["l"] + MARGIN["r"] + 100), height=max(320, height + MARGIN["t"] + MARGIN["b"]),
        margin=MARGIN, font=dict(family=FONT), plot_bgcolor=MISSING_COLOUR,
        xaxis_title=f"position (colour: {grid.metric.label}; text: top-1 token; run {grid.run.run_id})",
    )
    return fig


def lenses_figure(data: LensGrids):
    """One heatmap per lens on a shared colour scale, then the last position's metric per lens."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    width, height = _size(data.grids[0])
    n = len(data.grids)
    line_height = 260
    heights = [height + 90] * n + [line_height]
    titles = [_esc(f"{g.lens} lens   {marks_caption(g.marks)} (last position)") for g in data.grids]
    fig = make_subplots(rows=n + 1, cols=1, row_heights=heights, vertical_spacing=80 / sum(heights),
                        subplot_titles=titles + ["last position, every lens"])
    for row, g in enumerate(data.grids, 1):
        fig.add_trace(_heatmap_trace(g), row=row, col=1)
        _axes(fig, g, row=row, col=1)
        _marks(fig, g, row=row, col=1)
    for i, g in enumerate(data.grids):
        fig.add_trace(go.Scatter(x=g.layers, y=[_none_if_nan(row[-1]) for row in g.values], mode="lines+markers",
                                 name=g.lens, line=dict(color=colour(i)), meta={"role": "lens", "lens": g.lens}),
                      row=n + 1, col=1)
    fig.update_xaxes(title_text="layer", row=n + 1, col=1)
    fig.update_yaxes(title_text=data.metric.label, type="log" if data.metric.log else "linear", row=n + 1, col=1)
    fig.update_layout(
        title=dict(text=_esc(f"{data.run.model}   prompt {data.prompt_id} ({data.variant})   run {data.run.run_id}"),
                   font=dict(size=14)),
        coloraxis=_coloraxis(data.metric, [v for g in data.grids for row in g.values for v in row]),
        width=max(700, width + MARGIN["l"] + MARGIN["r"] + 100), height=sum(heights) + MARGIN["t"] + MARGIN["b"] + 80 * n,
        margin=MARGIN, font=dict(family=FONT), plot_bgcolor=MISSING_COLOUR,
        legend=dict(y=line_height / (sum(heights) + 80 * n), yanchor="top"),
    )
    fig.update_layout(coloraxis_colorbar=dict(len=1 - line_height / sum(heights), y=1.0, yanchor="top"))
    return fig


def _none_if_nan(value):
    return None if value is None or math.isnan(value) else value


def curves_figure(data: Curves):
    """One line per run across layers; the median and a 10-90 % band for several prompts."""
    import plotly.graph_objects as go

    fig = go.Figure()
    for i, curve in enumerate(data.curves):
        line_colour = colour(i)
        x = curve.depth(data.depth)
        run_id = curve.run.run_id
        if curve.n_prompts > 1:
            fig.add_trace(go.Scatter(x=x, y=curve.high, mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip",
                                     meta={"role": "band_high", "run_id": run_id}, legendgroup=run_id))
            fig.add_trace(go.Scatter(x=x, y=curve.low, mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(line_colour, 0.18), showlegend=False, hoverinfo="skip",
                                     meta={"role": "band_low", "run_id": run_id}, legendgroup=run_id))
        n = f"{curve.n_prompts} prompt{'s' if curve.n_prompts != 1 else ''}"
        fig.add_trace(go.Scatter(
            x=x, y=curve.median, mode="lines+markers", name=_esc(f"{curve.label} ({n})"), line=dict(color=line_colour),
            legendgroup=run_id, meta={"role": "median", "run_id": run_id},
            customdata=[[layer, lo, hi] for layer, lo, hi in zip(curve.layers, curve.low, curve.high)],
            hovertemplate=(f"{_esc(curve.label)}<br>layer %{{customdata[0]}}<br>{_esc(data.metric.label)} "
                           + ("median %{y:.4g} (10-90 %: %{customdata[1]:.4g} to %{customdata[2]:.4g})" if curve.n_prompts > 1 else "%{y:.4g}")
                           + "<extra></extra>"),
        ))
        if curve.l_semantic is not None:
            fig.add_shape(type="line", x0=curve.at_depth(curve.l_semantic, data.depth), x1=curve.at_depth(curve.l_semantic, data.depth),
                          y0=0, y1=1, yref="paper", line=dict(color=line_colour, dash="dash", width=1.5),
                          name=f"L_semantic:{run_id}")
    dashed = "dashed: L_semantic" + (" (median over prompts)" if data.is_battery else "")
    fig.update_layout(
        title=dict(text=_esc(curves_title(data)) + f"<br><sup>{dashed}</sup>", font=dict(size=14)),
        xaxis_title="layer / n_layers" if data.depth == "relative" else "layer",
        yaxis_title=data.metric.label, yaxis_type="log" if data.metric.log else "linear",
        width=960, height=560, font=dict(family=FONT), hovermode="closest",
    )
    if data.metric.bounds and not data.metric.log:
        fig.update_yaxes(range=list(data.metric.bounds))
    return fig


def _rgba(hex_colour: str, alpha: float) -> str:
    red, green, blue = (int(hex_colour[k:k + 2], 16) for k in (1, 3, 5))
    return f"rgba({red},{green},{blue},{alpha})"


def groups_figure(data):
    """Mean token-group mass by layer (plot.group_data.GroupCurves) with 95 % bands; traces
    carry meta {"role": "mass" | "band_low" | "band_high", "group": ...}."""
    import plotly.graph_objects as go

    from lensdb.plot.group_data import groups_title

    fig = go.Figure()
    for i, curve in enumerate(data.curves):
        line_colour = colour(i)
        if curve.n_prompts > 1:
            fig.add_trace(go.Scatter(x=curve.layers, y=curve.high, mode="lines", line=dict(width=0), showlegend=False, hoverinfo="skip",
                                     meta={"role": "band_high", "group": curve.label}, legendgroup=curve.label))
            fig.add_trace(go.Scatter(x=curve.layers, y=curve.low, mode="lines", line=dict(width=0), fill="tonexty",
                                     fillcolor=_rgba(line_colour, 0.18), showlegend=False, hoverinfo="skip",
                                     meta={"role": "band_low", "group": curve.label}, legendgroup=curve.label))
        n = f"{curve.n_prompts} prompt{'s' if curve.n_prompts != 1 else ''}"
        fig.add_trace(go.Scatter(
            x=curve.layers, y=curve.mean, mode="lines+markers", name=_esc(f"{curve.label} ({n})"), line=dict(color=line_colour),
            legendgroup=curve.label, meta={"role": "mass", "group": curve.label},
            customdata=[[lo, hi] for lo, hi in zip(curve.low, curve.high)],
            hovertemplate=(f"{_esc(curve.label)}<br>layer %{{x}}<br>mean mass %{{y:.4g}}"
                           + (" (95 %: %{customdata[0]:.4g} to %{customdata[1]:.4g})" if curve.n_prompts > 1 else "")
                           + "<extra></extra>"),
        ))
    fig.update_layout(
        title=dict(text=_esc(groups_title(data)), font=dict(size=14)),
        xaxis_title="layer", yaxis_title="probability mass", yaxis_range=[0, 1],
        width=960, height=560, font=dict(family=FONT), hovermode="closest",
    )
    return fig


def attribution_figure(data):
    """Per block, attention and MLP contributions as bars, the embedding at layer 0 and the
    running total; traces carry meta {"role": "attn" | "mlp" | "embed" | "cumulative"}."""
    import plotly.graph_objects as go

    from lensdb.plot.attribution_data import attribution_title

    fig = go.Figure()
    fig.add_trace(go.Bar(x=[0], y=[data.embed], name="embedding", marker_color=colour(7), meta={"role": "embed"}))
    fig.add_trace(go.Bar(x=data.blocks, y=data.attn, name="attention", marker_color=colour(0), meta={"role": "attn"}))
    fig.add_trace(go.Bar(x=data.blocks, y=data.mlp, name="MLP", marker_color=colour(1), meta={"role": "mlp"}))
    fig.add_trace(go.Scatter(x=list(range(len(data.cumulative))), y=data.cumulative, mode="lines+markers", name="running total",
                             line=dict(color="black"), meta={"role": "cumulative"}))
    fig.update_layout(
        title=dict(text=_esc(attribution_title(data)), font=dict(size=14)), barmode="group",
        xaxis_title="layer (block + 1)", yaxis_title="contribution to the logit",
        width=960, height=560, font=dict(family=FONT), hovermode="closest",
    )
    return fig

"""Colours, sizes and captions shared by the matplotlib and plotly figures, so both say the same."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lensdb.plot.data import Curves

# matplotlib's tab10, the colours of the runs' lines in order
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
MARK_COLOURS = {"L_copy": "#00c8ff", "L_semantic": "#ff2020"}  # visible on both ends of viridis
MISSING_COLOUR = "#d9d9d9"  # a cell whose metric is NULL
CELL_CHARS = 7  # top-1 token characters shown in a cell
AXIS_CHARS = 12  # prompt token characters on the x axis
HOVER_TOP_K = 20  # top-k entries listed when hovering a cell


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def marks_caption(marks: dict[str, int | None]) -> str:
    return "   ".join(f"{name} {'never' if layer is None else layer}" for name, layer in marks.items())


def curves_title(data: Curves) -> str:
    which = f"prompt {', '.join(data.prompts)}" if data.prompts else "every prompt"
    spread = "; median and 10-90 % band over prompts" if data.is_battery else ""
    return f"{data.metric.label} at the last position   {data.lens} lens, {which} ({data.variant}){spread}"

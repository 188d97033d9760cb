"""The metrics and options of the figures: names only, cheap to import (the CLI's choices)."""

from __future__ import annotations

from dataclasses import dataclass

from lensdb.errors import LensdbError


@dataclass(frozen=True)
class Metric:
    """A per-record number a figure can show. `name` is its column: of v1.pure_next_token, and
    of v1.records where the figures' grid query (lensdb/queries/plot/grid.sql) adds p_top1."""

    name: str
    label: str
    bounds: tuple[float, float] | None = None  # a fixed colour / axis range
    log: bool = False  # a logarithmic colour scale / axis
    lower_is_better: bool = False  # reversed colour scale, so the "answer" end is bright
    needs_gold: bool = False


METRICS: dict[str, Metric] = {
    m.name: m
    for m in (
        Metric("p_top1", "p(top-1)", bounds=(0.0, 1.0)),
        Metric("entropy_bits", "entropy (bits)"),
        Metric("kl_to_final_bits", "KL to final (bits)"),
        Metric("p_answer", "p(answer)", bounds=(0.0, 1.0), needs_gold=True),
        Metric("answer_rank", "answer rank", log=True, lower_is_better=True, needs_gold=True),
    )
}
MARKS = ("L_copy", "L_semantic")  # v1.diagnostics columns marked on the figures
DEPTHS = ("layer", "relative")
DEFAULT_VARIANT = "orig"
DEFAULT_LENS = "norm"
LOW_QUANTILE, HIGH_QUANTILE = 0.1, 0.9


def metric(name: str) -> Metric:
    if name not in METRICS:
        raise LensdbError(f"unknown metric {name!r}; choose one of {', '.join(METRICS)}")
    return METRICS[name]

"""The data of `lensdb plot groups`, from v1.token_groups and v1.answer_mass only.

`GroupCurves`: for one run and lens, each tracked group's (and the answer set's) mass at
every prompt's last position, averaged over prompts per layer, with a 95 % confidence band
of that mean (mean +- 1.96 standard errors, clipped to [0, 1]): the latent-language figure
of Wendler et al. (2024).
"""

from __future__ import annotations

from dataclasses import dataclass

from lensdb.errors import WarehouseError
from lensdb.plot.data import RunInfo, Warehouse
from lensdb.plot.metrics import DEFAULT_LENS, DEFAULT_VARIANT

ANSWER = "answer"  # the label of the answer-set curve
Z_95 = 1.959964

@dataclass
class MassCurve:
    label: str  # a group's name, or "answer"
    layers: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    n_prompts: int


@dataclass
class GroupCurves:
    run: RunInfo
    lens: str
    variant: str
    prompts: tuple[str, ...]  # empty: every prompt of the variant
    curves: list[MassCurve]

    @property
    def is_battery(self) -> bool:
        return any(curve.n_prompts > 1 for curve in self.curves)


def group_curves(db: Warehouse, run: RunInfo, *, lens: str = DEFAULT_LENS, variant: str = DEFAULT_VARIANT, prompts=(),
                 groups=(), answer: bool = True) -> GroupCurves:
    """Mean mass by layer at the last position, per tracked group (all, or `groups`) and,
    with `answer`, for the prompts' answer sets where the run has them."""
    db.check_lens(run, lens)
    prompts, groups = tuple(prompts), tuple(groups)
    for prompt in prompts:
        db.check_prompt(run, prompt, variant)
    known = [row["group_name"] for row in db.rows("plot/tracked_groups", run=run.run_id)]
    unknown = [g for g in groups if g not in known]
    if unknown:
        have = ", ".join(known) if known else "none: extract with --track NAME=WORD,..."
        raise WarehouseError(f"run {run.run_id} tracks no group {unknown[0]!r} (its groups: {have})")
    params = dict(run=run.run_id, lens=lens, variant=variant, prompts=list(prompts) or None)
    rows = db.rows("plot/group_mass", **params, groups=list(groups) or None) if known else []
    if answer and not groups:
        rows += db.rows("plot/answer_mass", **params, answer=ANSWER)
    order = [*(groups or known), ANSWER]
    curves = []
    for label in order:
        mine = sorted((row for row in rows if row["curve"] == label), key=lambda row: row["layer"])
        if not mine:
            continue
        spread = [Z_95 * row["sd"] / row["n"] ** 0.5 for row in mine]
        curves.append(MassCurve(
            label=label, layers=[row["layer"] for row in mine], mean=[row["mean"] for row in mine],
            low=[max(0.0, row["mean"] - s) for row, s in zip(mine, spread)],
            high=[min(1.0, row["mean"] + s) for row, s in zip(mine, spread)],
            n_prompts=max(row["n"] for row in mine),
        ))
    if not curves:
        raise WarehouseError(f"run {run.run_id} has no token groups or answer sets ({lens}, {variant}): extract with --track NAME=WORD,...")
    return GroupCurves(run=run, lens=lens, variant=variant, prompts=prompts, curves=curves)


def groups_title(data: GroupCurves) -> str:
    which = f"prompt {', '.join(data.prompts)}" if data.prompts else "every prompt"
    band = "; mean and 95 % band over prompts" if data.is_battery else ""
    return f"token-group mass at the last position   {data.run.model}, {data.lens} lens, {which} ({data.variant}){band}"

"""How a `--lens` list is read: specs, aliases, the reference lens. No torch here.

A lens's record name (`records.lens`) is its kind, or ALIAS when given (two tuned lenses
in one run need aliases).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lensdb.errors import LensdbError, TunedLensError
from lensdb.lenses.registry import KINDS

DEFAULT_LENSES = ("norm", "final_ln", "raw")
DEFAULT_REFERENCE = "norm"  # kl_vs_norm_bits compares every lens with this one when it is in the run

_ALIAS = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True)
class LensSpec:
    kind: str
    name: str  # written in records.lens
    argument: str | None = None  # tuned: a folder or a stored lens name

    def __str__(self) -> str:
        text = self.kind if self.argument is None else f"{self.kind}:{self.argument}"
        return text if self.name == self.kind else f"{self.name}={text}"


def parse_lens_specs(items) -> tuple[LensSpec, ...]:
    """`norm,final_ln,tuned:lenses/llama` (a string or a list of items) -> lens specs, in order."""
    if isinstance(items, str):
        items = items.split(",")
    specs: list[LensSpec] = []
    for item in items:
        if isinstance(item, LensSpec):
            specs.append(item)
            continue
        text = str(item).strip()
        if text:
            specs.append(_parse_one(text))
    if not specs:
        raise LensdbError(f"no lens given: choose from {', '.join(KINDS)}")
    unique: dict[str, LensSpec] = {}
    for spec in specs:
        if spec.name in unique and unique[spec.name] != spec:
            raise LensdbError(f"two lenses are named {spec.name!r}: give one an alias (NAME=tuned:...)")
        unique[spec.name] = spec
    return tuple(unique.values())


def _parse_one(text: str) -> LensSpec:
    alias = None
    head = text.split(":", 1)[0]
    if "=" in head:
        alias, text = text.split("=", 1)
        alias = alias.strip()
        if not _ALIAS.match(alias):
            raise LensdbError(f"invalid lens alias {alias!r}: a letter, then letters, digits, '_', '.', '-'")
    kind, _, argument = text.partition(":")
    kind = kind.strip()
    if kind not in KINDS:
        with_arguments = ", ".join(f"{name} as {written_as(name)}" for name, cls in KINDS.items() if cls.argument is not None)
        raise LensdbError(f"unknown lens {kind}: choose from {', '.join(KINDS)}" + (f" ({with_arguments})" if with_arguments else ""))
    takes_argument = KINDS[kind].argument is not None
    if takes_argument and not argument.strip():
        raise LensdbError(f"lens {kind} needs an argument: {written_as(kind)}")
    if not takes_argument and argument:
        raise LensdbError(f"lens {kind} takes no argument (got {kind}:{argument})")
    if alias in KINDS and alias != kind:
        raise LensdbError(f"lens alias {alias!r} is the name of another lens kind")
    return LensSpec(kind=kind, name=alias or kind, argument=argument.strip() or None)


def reference_lens(specs: tuple[LensSpec, ...], requested: str | None = None) -> str | None:
    """The lens every other lens is compared with (kl_vs_norm_bits): `requested`, else norm when present."""
    names = [spec.name for spec in specs]
    if requested is not None:
        if requested not in names:
            raise LensdbError(f"--reference-lens {requested} is not among the run's lenses ({', '.join(names)})")
        return requested
    return DEFAULT_REFERENCE if DEFAULT_REFERENCE in names else None


def written_as(kind: str) -> str:
    """`norm`; `tuned:DIR or tuned:NAME` for a kind that takes an argument."""
    argument = KINDS[kind].argument
    return kind if argument is None else " or ".join(f"{kind}:{part}" for part in argument.split("|"))


def lens_option_help() -> str:
    """extract's --lens help: every kind as it is written, with its summary."""
    kinds = ", ".join(f"{written_as(name)} ({cls.summary})" for name, cls in KINDS.items())
    return f"Comma list of lenses: {kinds}; ALIAS=tuned:... names the records."


def check_not_a_kind(name: str) -> str:
    """A stored tuned lens's name must not be a lens kind's (it would read as that kind)."""
    if name in KINDS:
        raise TunedLensError(f"lens name {name!r} is taken by a built-in lens; choose another")
    return name

"""The lens family's registry: which lenses exist and how a `--lens` list is read.

No torch here: the CLI reads this for its help and to check arguments before any model
loads. The lenses themselves (residual of layer L -> logits) are classes in
`lensdb/extract/lenses.py`, one per kind below.

| kind       | written as        | what it applies before the unembedding                           |
| ---------- | ----------------- | ---------------------------------------------------------------- |
| `norm`     | `norm`            | the architecture-aware norm: the next block's input norm          |
| `final_ln` | `final_ln`        | the final norm at every layer (the classic logit lens)            |
| `raw`      | `raw`             | nothing                                                           |
| `tuned`    | `tuned:DIR`,      | a learned affine translator per layer (tuned-lens format), then   |
|            | `tuned:NAME`,     | the final norm; DIR is a folder with config.json and params.pt,  |
|            | `ALIAS=tuned:...` | NAME a lens stored in the warehouse (`lensdb train-lens --name`)  |

A lens's record name (`records.lens`) is its kind, or ALIAS when given (two tuned lenses
in one run need aliases).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lensdb.errors import LensdbError


@dataclass(frozen=True)
class LensKind:
    name: str
    summary: str
    takes_argument: bool = False


KINDS: dict[str, LensKind] = {
    kind.name: kind
    for kind in (
        LensKind("norm", "architecture-aware: each layer through the norm the next block applies"),
        LensKind("final_ln", "the final norm at every layer (the classic logit lens)"),
        LensKind("raw", "no norm"),
        LensKind("tuned", "tuned:DIR or tuned:NAME: learned per-layer translators, then the final norm", takes_argument=True),
    )
}
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
        raise LensdbError(f"unknown lens {kind}: choose from {', '.join(KINDS)} (tuned as tuned:DIR or tuned:NAME)")
    if KINDS[kind].takes_argument and not argument.strip():
        raise LensdbError(f"lens {kind} needs an argument: {kind}:DIR or {kind}:NAME")
    if not KINDS[kind].takes_argument and argument:
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


def help_table() -> str:
    return "; ".join(f"{kind.name} ({kind.summary})" for kind in KINDS.values())

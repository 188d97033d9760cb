"""Tracked token groups (`extract --track`): parsing and checking, no torch here (the CLI reads it).

    --track NAME=WORD,WORD,...   the words given inline (commas separate them)
    --track NAME=@FILE           one word a line, UTF-8; blank lines and `#` comments ignored

Repeatable. Each word counts with its first token in both spacing variants ("word" and
" word"); lensdb/extract/groups.py resolves them against the tokenizer.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lensdb.errors import LensdbError
from lensdb.textfile import read_utf8

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclass(frozen=True)
class TrackSpec:
    name: str  # token_groups.group
    words: tuple[str, ...]  # distinct, in the order given
    source: str  # "inline" or the file's path


def parse_track_specs(values) -> tuple[TrackSpec, ...]:
    """Each --track value -> a TrackSpec; a bad one stops with a one-line LensdbError."""
    specs: list[TrackSpec] = []
    for value in values or ():
        spec = value if isinstance(value, TrackSpec) else parse_track(value)
        if any(s.name == spec.name for s in specs):
            raise LensdbError(f"--track {spec.name}: the group name is given twice")
        specs.append(spec)
    return tuple(specs)


def parse_track(value: str) -> TrackSpec:
    name, equals, rest = value.partition("=")
    name = name.strip()
    if not equals:
        raise LensdbError(f"--track {value!r}: expected NAME=WORD,WORD,... or NAME=@FILE")
    if not name:
        raise LensdbError(f"--track {value!r}: empty group name")
    if not _NAME.match(name):
        raise LensdbError(f"--track {value!r}: a group name holds only letters, digits, '_', '.' and '-'")
    if rest.startswith("@"):
        path = Path(rest[1:]).expanduser()
        if not rest[1:]:
            raise LensdbError(f"--track {name}=@: no file named")
        text = read_utf8(path, label=f"--track {name} word file")
        words = [line.strip() for line in text.splitlines()]
        words = [w for w in words if w and not w.startswith("#")]
        source = str(path)
    else:
        words = [w.strip() for w in rest.split(",")]
        words = [w for w in words if w]
        source = "inline"
    if not words:
        raise LensdbError(f"--track {name}: no word given" + (f" ({source} holds none)" if source != "inline" else ""))
    return TrackSpec(name=name, words=tuple(dict.fromkeys(words)), source=source)

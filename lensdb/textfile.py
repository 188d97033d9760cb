"""Reading a user's text file (prompt sets, SQL files) as UTF-8, with one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

from lensdb.errors import LensdbError


def read_utf8(path: str | os.PathLike, *, label: str = "", error: type[LensdbError] = LensdbError) -> str:
    """The file as UTF-8 text (a BOM dropped). Errors are one line: `[label ]path: cannot
    read (...)`, or `[label ]path:LINE: not UTF-8 text (byte 0x..)` for bad bytes."""
    where = f"{label} {path}" if label else str(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise error(f"{where}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise error(f"{where}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None

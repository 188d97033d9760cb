"""Where the shipped SQL views, named queries and prompt sets are.

In a wheel they are inside the package (`lensdb/_data/`); in a source checkout
(editable install) they are the repository's own `sql/` and `prompts/` folders.
"""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def _data_dir(name: str) -> Path:
    bundled = _PACKAGE / "_data" / name
    if bundled.is_dir():
        return bundled
    return _PACKAGE.parent / name


def sql_dir() -> Path:
    return _data_dir("sql")


def prompts_dir() -> Path:
    return _data_dir("prompts")


def named_queries_dir() -> Path:
    return _PACKAGE / "queries"

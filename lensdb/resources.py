"""Where the shipped SQL views, named queries, prompt sets and the demo model are.

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


DEMO_MODEL = "demo"  # `lensdb extract demo`: the model shipped in the package
DEMO_PROMPTS = "stories"  # its default prompt set (the seed set asks for capitals)


def demo_model_dir() -> Path:
    """stories260K (llama2.c, MIT; LICENSE and ORIGIN.md beside it): runs offline."""
    return _PACKAGE / "models" / "stories260K"

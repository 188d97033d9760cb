"""docs/views.md and docs/cli.md are generated from the SQL files and the CLI: they match the code."""

from __future__ import annotations

from lensdb import reference_docs
from lensdb.catalog import definitions


def test_generated_pages_match_the_code():
    for path, text in reference_docs.pages().items():
        assert path.read_text(encoding="utf-8") == text, f"{path} is out of date: run python -m lensdb.reference_docs"


def test_views_page_lists_every_public_view_with_its_columns():
    page = reference_docs.views_page()
    for name, (definition, _file) in definitions().items():
        if definition.public:
            assert f"### `{definition.signature}`" in page, name
    assert "| `L_semantic` | INTEGER |" in page  # a column with its DuckDB type


def test_cli_page_has_every_command():
    page = reference_docs.cli_page()
    for command in ("extract", "query", "export", "import-legacy", "plot heatmap", "train-lens", "sweep", "cleanup"):
        assert f"## `lensdb {command}`" in page, command

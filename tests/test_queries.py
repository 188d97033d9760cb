"""The SQL files Python sends (lensdb/queries/plot, export, report) and the output renderers'
registry: headers that say what each query binds, and --format choices from one place."""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa
import pytest

from lensdb import catalog, output, queries
from lensdb.errors import LensdbError, QueryError

FOLDERS = ("plot", "export", "report")


def all_queries() -> list[str]:
    return [name for folder in FOLDERS for name in queries.names(folder)]


def test_every_folder_has_queries():
    for folder in FOLDERS:
        assert queries.names(folder), folder


@pytest.mark.parametrize("name", all_queries())
def test_each_query_says_what_it_returns_and_declares_exactly_the_parameters_it_uses(name):
    query = queries.query(name)
    assert query.what, f"{name}: no `-- what:` header"
    used = set(re.findall(r"\$(\w+)", query.sql))
    assert set(query.params) == used, f"{name}: `-- params:` names {sorted(query.params)}, the SQL uses {sorted(used)}"
    assert not query.sql.lstrip().startswith("--")  # the header is not part of the statement
    assert "{" not in query.sql  # nothing is formatted into the text


def test_the_internal_queries_are_not_named_queries_of_lensdb_query():
    assert not any("/" in name for name in catalog.named_queries())
    with pytest.raises(QueryError, match="unknown named query"):
        catalog.named_query("plot/grid")


def test_parameters_are_bound_not_formatted():
    con = duckdb.connect()
    con.execute("CREATE SCHEMA v1; CREATE TABLE v1.runs AS SELECT 'a''b' AS run_id, 1 AS n")
    assert queries.rows(con, "plot/run", run="a'b") == [{"run_id": "a'b", "n": 1}]
    assert queries.rows(con, "plot/run", run="x' OR '1'='1") == []


def test_a_duckdb_error_is_one_line_query_error():
    con = duckdb.connect()  # no views
    with pytest.raises(QueryError) as caught:
        queries.rows(con, "plot/run", run="x")
    assert "\n" not in str(caught.value) and "v1" in str(caught.value)
    with pytest.raises(QueryError, match="ships no query"):
        queries.query("plot/no_such_query")


def test_formats_come_from_the_registry_in_its_order():
    assert output.formats(output.TABLE) == ["table", "csv", "json", "parquet"]
    assert output.formats(output.TABLE, to_file=False) == ["table", "csv", "json"]  # lensdb runs: no --out
    assert output.formats(output.DOCUMENT) == ["text", "json"]  # lensdb show
    from lensdb.cli import main

    choices = {name: next(p for p in main.commands[name].params if p.name == "output_format").type.choices for name in ("query", "runs", "show")}
    assert list(choices["query"]) == output.formats(output.TABLE)
    assert list(choices["runs"]) == output.formats(output.TABLE, to_file=False)
    assert list(choices["show"]) == output.formats(output.DOCUMENT)


def test_a_renderer_added_to_the_registry_is_a_format_of_its_kind(monkeypatch, capsys):
    markdown = output.Renderer("markdown", table=lambda table, **_layout: "| " + " | ".join(table.column_names) + " |\n")
    monkeypatch.setitem(output.RENDERERS, "markdown", markdown)
    assert "markdown" in output.formats(output.TABLE) and "markdown" not in output.formats(output.DOCUMENT)
    output.write_result(pa.table({"a": [1], "b": [2]}), "markdown", None)
    assert capsys.readouterr().out == "| a | b |\n"


def test_documents_render_as_text_or_json_and_nothing_else():
    document = output.Document(text=lambda: "run  x\n", data=lambda: {"run": "x", "size": 1.5})
    assert output.render_document(document, "text") == "run  x\n"
    assert output.render_document(document, "json") == '{"run": "x", "size": 1.5}\n'
    with pytest.raises(LensdbError, match="unknown output format 'csv'; choose one of text, json"):
        output.render_document(document, "csv")

"""`lensdb query --describe`: a public view's columns, DuckDB's types with the SQL file's meanings."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from lensdb.catalog.sqlfiles import Definition, SqlFile, definitions
from lensdb.catalog.views import install
from lensdb.errors import QueryError
from lensdb.warehouse import anchors


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    meaning: str


@dataclass(frozen=True)
class Description:
    definition: Definition
    sql_file: SqlFile
    columns: tuple[Column, ...]


def describe(name: str, version: str = "v1") -> Description:
    """A public view's (or table macro's) columns: DuckDB's types and the SQL file's one-line meanings.

    Needs no warehouse: the views are installed over an empty one (the columns come from the
    schema files, not from the data).
    """
    import tempfile

    import duckdb

    known = definitions(version)
    full = name if "." in name else f"{version}.{name}"
    if full not in known or not known[full][0].public:
        public = ", ".join(n for n, (d, _f) in known.items() if d.public and d.kind != "macro")
        raise QueryError(f"no view {name!r} (views: {public})")
    definition, sql_file = known[full]
    if definition.kind == "macro":
        raise QueryError(f"{full} is a scalar macro, not a view: {definition.signature}")
    docs = definition.columns
    if definition.columns_as:
        docs = known[definition.columns_as][0].columns
    with tempfile.TemporaryDirectory(prefix="lensdb-describe-") as empty:
        anchors.write_schema_anchors(Path(empty))
        con = duckdb.connect()
        try:
            install(Path(empty), con)
            source = f"{full}()" if definition.kind == "table macro" else full
            rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        finally:
            con.close()
    columns = tuple(Column(row[0], row[1], docs.get(row[0], "")) for row in rows)
    return Description(definition, sql_file, columns)

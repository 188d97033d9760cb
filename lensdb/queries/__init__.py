"""The SQL lensdb sends besides the views (sql/v1): one statement per .sql file.

    lensdb/queries/*.sql          the named queries `lensdb query --name NAME` runs (--list)
    lensdb/queries/plot/*.sql     the figures' data (lensdb.plot.data, lensdb.plot.reader)
    lensdb/queries/export/*.sql   the legacy files' rows (lensdb.legacy.export, export_json)
    lensdb/queries/report/*.sql   the report's tables (lensdb.report)

Each file starts with a header: `-- what:` says what the rows are, and `-- params:` names
every `$parameter` of the statement. DuckDB binds the parameters (prepared statements), so
no value is ever formatted into the SQL. To add a query: write plot/NAME.sql (say) with its
header, and call `queries.rows(con, "plot/NAME", param=value, ...)`.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path

from lensdb.errors import QueryError, first_line

_FOLDER = Path(__file__).resolve().parent
_HEADER_FIELD = re.compile(r"^--\s*(\w+):\s*(.*)$")
_PARAMETER = re.compile(r"\$(\w+)")


@dataclass(frozen=True)
class Query:
    name: str  # "plot/grid": the file's path under lensdb/queries, without .sql
    what: str
    params: tuple[str, ...]  # the `-- params:` header's $names, in its order
    sql: str  # the statement, without the header


@functools.cache
def query(name: str) -> Query:
    """The query in lensdb/queries/NAME.sql."""
    path = _FOLDER / f"{name}.sql"
    if not path.is_file():
        raise QueryError(f"lensdb ships no query {name!r} ({path} is missing)")
    lines = path.read_text(encoding="utf-8").splitlines()
    header = 0
    while header < len(lines) and lines[header].startswith("--"):
        header += 1
    fields: dict[str, str] = {}
    last = None
    for line in lines[:header]:
        match = _HEADER_FIELD.match(line)
        if match:
            last = match.group(1)
            fields[last] = match.group(2).strip()
        elif last:
            fields[last] += " " + line[2:].strip()
    params = tuple(dict.fromkeys(_PARAMETER.findall(fields.get("params", ""))))
    return Query(name=name, what=fields.get("what", ""), params=params, sql="\n".join(lines[header:]).strip() + "\n")


def names(folder: str) -> list[str]:
    """The queries of one folder (plot, export, report), as names for `query`."""
    return sorted(f"{folder}/{path.stem}" for path in (_FOLDER / folder).glob("*.sql"))


def rows(con, name: str, **params) -> list[dict]:
    """Run the query `name` on `con` with `params` bound: its rows as dicts. A DuckDB error
    (a damaged file, say) is a QueryError of one line."""
    import duckdb

    try:
        cursor = con.execute(query(name).sql, params)
        columns = [column[0] for column in cursor.description]
        return [dict(zip(columns, values)) for values in cursor.fetchall()]
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None

"""The DuckDB catalog: the versioned SQL views over a warehouse's Parquet files.

`<warehouse>/lensdb.duckdb` holds schemas `v1_base` (internal) and `v1` (the public
views), installed from `sql/v1/*.sql`. The catalog records each file's version and
SQL hash in `lensdb_meta.views`; `connect()` reinstalls when lensdb's SQL, or the
warehouse's location, changed. Views read the Parquet files at query time, so new runs
appear without reinstalling anything; `extract` never opens the catalog.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import QueryError, WarehouseError
from lensdb.resources import named_queries_dir, sql_dir
from lensdb.warehouse import layout
from lensdb.warehouse.schema import LENSES, TABLES, with_metadata

VIEW_VERSIONS = ("v1",)
META_SCHEMA = "lensdb_meta"
_HEADER_FIELD = re.compile(r"^--\s*(view|version|what|inputs):\s*(.*)$")
_DEFINED = re.compile(r"CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+([\w.]+)", re.IGNORECASE)


@dataclass(frozen=True)
class SqlFile:
    path: Path
    text: str
    version: str
    what: str
    defines: tuple[str, ...]

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def sql_files(version: str = "v1") -> list[SqlFile]:
    files = []
    for path in sorted((sql_dir() / version).glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        header = _header(text)
        files.append(
            SqlFile(
                path=path,
                text=text,
                version=header.get("version", "?"),
                what=header.get("what", ""),
                defines=tuple(name for _kind, name in _DEFINED.findall(text)),
            )
        )
    return files


def _header(text: str) -> dict[str, str]:
    """The `-- key: value` lines at the top of a SQL file (continuation lines appended)."""
    fields: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _HEADER_FIELD.match(line)
        if match:
            last = match.group(1)
            fields[last] = match.group(2).strip()
        elif last:
            fields[last] += " " + line.lstrip("- ").strip()
    return fields


def render(text: str, warehouse: Path) -> str:
    return text.replace("{{WAREHOUSE}}", str(warehouse).replace("'", "''"))


def catalog_path(warehouse: Path) -> Path:
    return warehouse / layout.CATALOG_FILE


def committed_run_count(warehouse: Path) -> int:
    return len(list((warehouse / layout.RUNS_DIR).glob("model=*/run=*/manifest/*.parquet")))


def write_schema_anchors(warehouse: Path) -> None:
    """Empty Parquet files giving each view its columns before any run has that table."""
    for table, table_schema in TABLES.items():
        _write_anchor(warehouse / layout.SCHEMA_DIR / "model=_" / "run=_" / table / "part-00000.parquet", table_schema, table)
    # Stored tuned lenses (lenses/<name>/lens.parquet) are read by the glob */*/lens.parquet.
    _write_anchor(warehouse / layout.SCHEMA_DIR / "lenses" / "lens.parquet", LENSES, "lenses")


def _write_anchor(path: Path, table_schema: pa.Schema, table: str) -> None:
    wanted = with_metadata(table_schema, table)
    if path.is_file() and pq.read_schema(path).equals(wanted, check_metadata=True):
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    pq.write_table(pa.Table.from_pylist([], schema=wanted), temporary)
    temporary.replace(path)


def _fingerprint(warehouse: Path) -> dict[str, str]:
    return {str(f.path.relative_to(sql_dir())): f.sha256 for v in VIEW_VERSIONS for f in sql_files(v)} | {
        "warehouse": str(warehouse)
    }


def install(warehouse: Path, con) -> None:
    """(Re)create every view in `con` and record versions and hashes."""
    write_schema_anchors(warehouse)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA}")
        con.execute(
            f"CREATE OR REPLACE TABLE {META_SCHEMA}.views (name VARCHAR, view_version VARCHAR, file VARCHAR, "
            "version VARCHAR, sql_sha256 VARCHAR, installed_at TIMESTAMP DEFAULT current_timestamp)"
        )
        con.execute(f"CREATE OR REPLACE TABLE {META_SCHEMA}.fingerprint (key VARCHAR, value VARCHAR)")
        for view_version in VIEW_VERSIONS:
            for sql_file in sql_files(view_version):
                con.execute(render(sql_file.text, warehouse))
                for name in sql_file.defines:
                    con.execute(
                        f"INSERT INTO {META_SCHEMA}.views (name, view_version, file, version, sql_sha256) VALUES (?, ?, ?, ?, ?)",
                        [name, view_version, sql_file.path.name, sql_file.version, sql_file.sha256],
                    )
        con.executemany(f"INSERT INTO {META_SCHEMA}.fingerprint VALUES (?, ?)", list(_fingerprint(warehouse).items()))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _installed_fingerprint(con) -> dict[str, str] | None:
    try:
        return dict(con.execute(f"SELECT key, value FROM {META_SCHEMA}.fingerprint").fetchall())
    except Exception:  # noqa: BLE001 - no catalog yet
        return None


def connect(warehouse=None, *, read_only: bool = False):
    """A DuckDB connection to the warehouse's catalog, its views up to date.

    If the catalog file is busy (another process holds its lock, or this process has it
    open with other settings), the views are installed in an in-memory database instead,
    so a query never waits on a lock.
    """
    import duckdb

    path = _existing_warehouse(warehouse)
    catalog = catalog_path(path)
    try:
        con = duckdb.connect(str(catalog))
        if _installed_fingerprint(con) != _fingerprint(path):
            install(path, con)
        if read_only:
            con.close()
            con = duckdb.connect(str(catalog), read_only=True)
        return con
    except duckdb.ConnectionException:
        pass  # open in this process with another configuration (read_only or not)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise WarehouseError(f"cannot open the catalog {catalog}: {_first_line(exc)}") from None
    con = duckdb.connect()
    install(path, con)
    return con


def _existing_warehouse(warehouse) -> Path:
    path = layout.resolve_warehouse(warehouse)
    if not path.is_dir():
        raise WarehouseError(f"no warehouse at {path} (run `lensdb extract` or `lensdb import-legacy`, or pass --warehouse)")
    return path


def query(sql: str, warehouse=None, *, format: str = "arrow"):
    """Run SQL against the views; an Arrow table, or a polars DataFrame with format="polars"."""
    path = _existing_warehouse(warehouse)
    if committed_run_count(path) == 0 and not list(path.glob("lenses/*/lens.parquet")):
        raise WarehouseError(f"warehouse {path} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)")
    con = connect(path, read_only=True)
    try:
        table = run_sql(con, sql, path)
    finally:
        con.close()
    if format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    return table


def run_sql(con, sql: str, warehouse: Path) -> pa.Table:
    import duckdb

    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise _query_error(exc, warehouse) from None


_FILE_IN_MESSAGE = re.compile(r"""['"]([^'"]+\.parquet)['"]""")


def _query_error(exc: Exception, warehouse: Path) -> Exception:
    message = _first_line(exc)
    file_match = _FILE_IN_MESSAGE.search(str(exc))
    if file_match:
        bad = Path(file_match.group(1))
        run = next((part.removeprefix("run=") for part in bad.parts if part.startswith("run=")), None)
        try:
            shown = bad.relative_to(warehouse)
        except ValueError:
            shown = bad
        where = f" (run {run}; queries that filter on other run_ids still work)" if run else ""
        return WarehouseError(f"corrupt or unreadable Parquet file {shown}{where}: {message}")
    if "does not exist" in message and ("Table" in message or "Catalog" in message or "Macro" in message):
        return QueryError(f"{message} (see `lensdb query --list` for the views)")
    return QueryError(message)


def _first_line(exc: Exception) -> str:
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str


def named_queries() -> dict[str, NamedQuery]:
    queries = {}
    for path in sorted(named_queries_dir().glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        queries[path.stem] = NamedQuery(path.stem, _header(text).get("what", ""), text)
    return queries


def named_query(name: str) -> NamedQuery:
    queries = named_queries()
    if name not in queries:
        raise QueryError(f"unknown named query {name!r}; known: {', '.join(queries)}")
    return queries[name]

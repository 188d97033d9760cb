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

from lensdb.errors import MissingDependency, QueryError, WarehouseError
from lensdb.resources import named_queries_dir, sql_dir
from lensdb.warehouse import layout
from lensdb.warehouse.schema import LENSES, TABLES, with_metadata

VIEW_VERSIONS = ("v1",)
META_SCHEMA = "lensdb_meta"
FORMATS = ("arrow", "polars", "pandas")
LATEST_ONLY_VARIABLE = "lensdb_latest_only"  # SET VARIABLE ... = true: every view keeps only v1.latest_runs' runs
_HEADER_FIELD = re.compile(r"^(--\s*(view|version|what|inputs):\s*)(.*)$")
_DEFINED = re.compile(r"CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+([\w.]+)", re.IGNORECASE)
_CREATE = re.compile(r"^CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+([\w.]+)\s*(\([^)]*\))?(.*)$", re.IGNORECASE)
_COLUMNS_START = re.compile(r"^--\s*columns:\s*(\S*)\s*$")
_COLUMN_LINE = re.compile(r"^--(\s+)(\w+)\s{2,}(\S.*)$")


@dataclass(frozen=True)
class Definition:
    """One CREATE statement of a SQL file, with the `-- columns:` block just above it."""

    name: str
    kind: str  # "view", "table macro" or "macro" (a scalar helper)
    parameters: str  # "(threshold := 0.95, ...)" for macros, "" for views
    columns: dict[str, str]  # column -> one-line meaning
    columns_as: str | None  # `-- columns: v1.other`: the same columns as another definition

    @property
    def public(self) -> bool:
        return self.name.startswith("v1.")

    @property
    def signature(self) -> str:
        return self.name + self.parameters


@dataclass(frozen=True)
class SqlFile:
    path: Path
    text: str
    version: str
    what: str
    definitions: tuple[Definition, ...]
    what_lines: tuple[str, ...] = ()  # the header's `what:` as written (line breaks, indentation)

    @property
    def defines(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.definitions)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def sql_files(version: str = "v1") -> list[SqlFile]:
    files = []
    for path in sorted((sql_dir() / version).glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        header = _header_lines(text)
        files.append(
            SqlFile(
                path=path,
                text=text,
                version=" ".join(header.get("version", ["?"])),
                what=" ".join(line.strip() for line in header.get("what", [])),
                definitions=tuple(_definitions(text)),
                what_lines=tuple(header.get("what", [])),
            )
        )
    return files


def _header(text: str) -> dict[str, str]:
    """The `-- key: value` lines at the top of a SQL file (continuation lines appended)."""
    return {key: " ".join(line.strip() for line in lines) for key, lines in _header_lines(text).items()}


def _header_lines(text: str) -> dict[str, list[str]]:
    """The `-- key: value` lines at the top of a SQL file, each value's lines as written
    (continuation lines keep their indentation relative to the value's first line)."""
    fields: dict[str, list[str]] = {}
    last, indent = None, 0
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _HEADER_FIELD.match(line)
        if match:
            last, indent = match.group(2), len(match.group(1))
            fields[last] = [match.group(3).rstrip()]
        elif last:
            lead = line[2:indent]
            fields[last].append(line[indent:].rstrip() if not lead.strip() else line[2:].strip())
    return fields


def _definitions(text: str) -> list[Definition]:
    definitions = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = _CREATE.match(line)
        if not match:
            continue
        kind = "view" if match.group(1).upper() == "VIEW" else ("table macro" if re.search(r"\bAS\s+TABLE\b", match.group(4), re.IGNORECASE) else "macro")
        comment = []
        for above in reversed(lines[:number]):
            if not above.startswith("--"):
                break
            comment.insert(0, above)
        columns, columns_as = _column_docs(comment)
        definitions.append(Definition(match.group(2), kind, match.group(3) or "", columns, columns_as))
    return definitions


def _column_docs(comment: list[str]) -> tuple[dict[str, str], str | None]:
    """`-- columns:` then `--   name   meaning` lines (deeper-indented lines continue a meaning)."""
    start = next((i for i, line in enumerate(comment) if _COLUMNS_START.match(line)), None)
    if start is None:
        return {}, None
    same_as = _COLUMNS_START.match(comment[start]).group(1) or None
    columns: dict[str, str] = {}
    indent, last = None, None
    for line in comment[start + 1 :]:
        match = _COLUMN_LINE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, last = len(match.group(1)), match.group(2)
            columns[last] = match.group(3).strip()
        elif last and line[2:].strip():
            columns[last] += " " + line[2:].strip()
    return columns, same_as


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


def query(sql: str, warehouse=None, *, format: str = "arrow", latest: bool = False):
    """Run SQL against the views: an Arrow table, a polars DataFrame (format="polars") or a
    pandas DataFrame (format="pandas", needs pandas). latest=True: every view shows only the
    latest committed run of each model and prompt set (the runs of v1.latest_runs)."""
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(repr(f) for f in FORMATS)}, got {format!r}")
    if format == "pandas":
        _require("pandas", "format='pandas'")
    path = _existing_warehouse(warehouse)
    if committed_run_count(path) == 0 and not list(path.glob("lenses/*/lens.parquet")):
        raise WarehouseError(f"warehouse {path} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)")
    con = connect(path, read_only=True)
    try:
        if latest:
            latest_only(con)
        table = run_sql(con, sql, path)
    finally:
        con.close()
    if format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if format == "pandas":
        return table.to_pandas()
    return table


def latest_only(con) -> None:
    """From now on, every view of `con` shows only the latest committed run of each model and prompt set."""
    con.execute(f"SET VARIABLE {LATEST_ONLY_VARIABLE} = true")


def _require(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}, which is not installed: pip install {module}") from None


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


# ---------------------------------------------------------------- describing the views


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


def definitions(version: str = "v1") -> dict[str, tuple[Definition, SqlFile]]:
    return {d.name: (d, f) for f in sql_files(version) for d in f.definitions}


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
        con = duckdb.connect()
        try:
            install(Path(empty), con)
            source = f"{full}()" if definition.kind == "table macro" else full
            rows = con.execute(f"DESCRIBE SELECT * FROM {source}").fetchall()
        finally:
            con.close()
    columns = tuple(Column(row[0], row[1], docs.get(row[0], "")) for row in rows)
    return Description(definition, sql_file, columns)

"""lensdb's public query API: `connect`, `query`, and the session behind them."""

from __future__ import annotations

import pyarrow as pa

from lensdb.catalog import views
from lensdb.catalog.cache import attach, new_connection, open_for_writing, rebuild, view_root
from lensdb.catalog.sandbox import check_read_only_sql, confine, is_read_only
from lensdb.catalog.session import Session, query_error, warn_damaged
from lensdb.catalog.views import install, latest_only, set_variables
from lensdb.errors import MissingDependency, WarehouseError
from lensdb.warehouse import layout
from lensdb.warehouse.base import Warehouse
from lensdb.warehouse.layout import open_warehouse

FORMATS = ("arrow", "polars", "pandas")


def connect(warehouse=None, *, read_only: bool = True):
    """A DuckDB connection to the warehouse's views (`lensdb.connect`).

    By default an in-memory database with the catalog attached read-only (`USE lensdb`), so
    it holds no write lock; `read_only=False` opens the catalog file itself for writing
    (your own tables and views). Damaged runs are left out of the views and reported in
    `v1.damaged_runs` and in a DamagedRunsWarning.
    """
    session = open_session(warehouse, read_only=read_only)
    warn_damaged(session.damaged)
    return session.con


def open_session(
    warehouse=None, *, read_only: bool = True, sandbox: bool = False, quiet: bool = False, latest: bool = False
) -> Session:
    import duckdb

    path = existing_warehouse(warehouse)
    surveyed = open_warehouse(path).survey()  # for an object store: one listing and one read per manifest
    damaged = surveyed.damaged
    root = view_root(path)
    fingerprint = views.fingerprint(root, damaged)
    if not layout.glob_safe(str(path)):
        # DuckDB opens no database file under a path holding a backslash (a separator to it).
        con = duckdb.connect()
        install(root, con, damaged)
    elif read_only:
        con = new_connection(path)
        state = attach(con, path, fingerprint)
        if state in ("missing", "stale", "damaged") and rebuild(root, damaged):
            state = attach(con, path, fingerprint)
        if state != "current":
            install(root, con, damaged)
    else:
        con = open_for_writing(root, damaged, fingerprint)
    set_variables(con, damaged)
    if latest:
        latest_only(con)
    if quiet:
        con.execute("SET enable_progress_bar = false")  # stderr keeps to lensdb's own lines
    if sandbox:
        confine(con, root)
    return Session(con=con, warehouse=path, root=root, damaged=list(damaged), run_folders=len(surveyed.folders))


def existing_warehouse(warehouse):
    """The warehouse's location (layout.resolve_warehouse), checked to be there."""
    path = layout.resolve_warehouse(warehouse)
    if isinstance(warehouse, Warehouse):
        return path  # opened, and so checked, by the caller
    if not open_warehouse(path).exists():
        raise WarehouseError(f"no warehouse at {path} (run `lensdb extract` or `lensdb import-legacy`, or pass --warehouse)")
    return path


def committed_run_count(warehouse) -> int:
    """Run folders in runs/ (committed, or damaged: the views report those)."""
    return len(layout.run_folders(warehouse))


def query(sql: str, warehouse=None, *, format: str = "arrow", latest: bool = False, allow_files: bool = False):
    """Run SQL against the views: an Arrow table, a polars DataFrame (format="polars") or a
    pandas DataFrame (format="pandas", needs pandas). latest=True: every view shows only the
    latest committed run of each model and prompt set (the runs of v1.latest_runs).

    By default the SQL may read the warehouse only: statements other than SELECT are
    refused and DuckDB cannot reach other files. `allow_files=True` lifts both.
    """
    if format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(repr(f) for f in FORMATS)}, got {format!r}")
    if format == "pandas":
        _require("pandas", "format='pandas'")
    path = existing_warehouse(warehouse)
    store = open_warehouse(path)
    empty = f"warehouse {path} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)"
    if store.holds_nothing():  # a look before any catalog is built, where one is cheap
        raise WarehouseError(empty)
    if not allow_files:
        check_read_only_sql(sql)
    session = open_session(path, read_only=True, sandbox=not allow_files, quiet=True, latest=latest)
    if session.run_folders == 0 and not store.stored_lens_files():
        session.con.close()
        raise WarehouseError(empty)
    try:
        table = session.run(sql, retry=not allow_files or is_read_only(sql))
    finally:
        session.con.close()
    warn_damaged(session.damaged)
    if format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if format == "pandas":
        return table.to_pandas()
    return table


def _require(module: str, what: str) -> None:
    import importlib

    try:
        importlib.import_module(module)
    except ImportError:
        raise MissingDependency(f"{what} needs {module}, which is not installed: pip install {module}") from None


def run_sql(con, sql: str, warehouse) -> pa.Table:
    """Run SQL on a connection from `connect`; errors as one line."""
    import duckdb

    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise query_error(exc, warehouse, None) from None

"""The read-only sandbox of `lensdb query` (and `lensdb.query`): statements other than
SELECT are refused, and DuckDB's external access is off except for the warehouse folder
(settings locked), unless `--allow-files` / `allow_files=True`."""

from __future__ import annotations

import os
import re
import secrets
import shutil
from pathlib import Path

from lensdb import files
from lensdb.catalog.views import Root
from lensdb.errors import QueryError, WarehouseError, first_line
from lensdb.warehouse import layout
from lensdb.warehouse.layout import open_warehouse

_READ_ONLY_HELP = "SELECT, FROM, WITH, VALUES, DESCRIBE, SHOW, SUMMARIZE or EXPLAIN"
_EXPLAIN = re.compile(r"^\s*EXPLAIN(\s+ANALY[SZ]E)?\s+", re.IGNORECASE)


def check_read_only_sql(sql: str) -> None:
    """Refuse statements that could write files, attach databases or change settings."""
    import duckdb

    try:
        statements = duckdb.extract_statements(sql)
    except duckdb.Error as exc:
        raise QueryError(first_line(exc)) from None
    for statement in statements:
        kind = statement.type
        if kind == duckdb.StatementType.SELECT:
            continue
        if kind == duckdb.StatementType.EXPLAIN:
            check_read_only_sql(_EXPLAIN.sub("", statement.query, count=1))
            continue
        raise QueryError(
            f"lensdb query runs read-only SQL ({_READ_ONLY_HELP}), not {kind.name}: "
            "pass --allow-files (lensdb.query(..., allow_files=True)) to run any DuckDB statement"
        )


def is_read_only(sql: str) -> bool:
    try:
        check_read_only_sql(sql)
    except QueryError:
        return False
    return True


def confine(con, root: Root) -> None:
    """DuckDB may read the warehouse only, write no file, and not change that.

    DuckDB checks a glob as written (so the escaped form of the path is allowed too) and
    each file by its real path (so a linked root's warehouse is allowed too, and so are the
    real places of the warehouse's linked data folders and files). It cannot
    allow a real path holding a backslash: then the nearest folder above without one is
    allowed (the statement check still keeps the SQL from writing anything).
    """
    folders = {str(root.path), str(root.warehouse)}
    if layout.glob_safe(str(root.path)):
        folders.add(layout.glob_literal(str(root.path)))
    if not layout.glob_safe(str(root.warehouse)):
        folders.discard(str(root.warehouse))
        folders.add(str(next(p for p in root.warehouse.parents if layout.glob_safe(str(p)))))
    linked_files = []
    # Data linked from elsewhere (runs/ on another disk, say): DuckDB checks the real path.
    for link in open_warehouse(root.warehouse).linked_data_paths():
        real = os.path.realpath(link)
        if layout.glob_safe(real) and os.path.isdir(real):
            folders.add(real)
        elif layout.glob_safe(real) and os.path.isfile(real):
            linked_files.append(real)
    allowed = sorted(folder.rstrip("/") + "/" for folder in folders)
    if linked_files:
        attached = con.execute("SELECT current_setting('allowed_paths')").fetchone()[0] or []
        con.execute("SET allowed_paths = ?", [sorted({*attached, *linked_files})])
    # DuckDB allows its temp_directory too, by default `.tmp` of the working directory (and
    # resolves it, links included): a fresh folder of this process's own instead.
    con.execute("SET temp_directory = ?", [_spill_directory()])
    con.execute("SET allowed_directories = ?", [allowed])
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")


def _spill_directory() -> str:
    """Where a confined connection spills to disk: a folder that does not exist yet under
    <temp>/lensdb-<uid>/spill/ (DuckDB creates it when a query needs it and removes it when the
    connection closes); "" (no spilling) where no such folder can be made."""
    base = files.private_base()
    spill = base / "spill"
    try:
        files.make_private(base, spill)
        _remove_dead_spill_folders(spill)
    except (OSError, WarehouseError):
        return ""
    folder = spill / f"{files.owner_tag()}.{secrets.token_hex(4)}"
    return str(folder) if layout.glob_safe(str(folder)) else ""


def _remove_dead_spill_folders(spill: Path) -> None:
    """Spill folders that processes of this host killed outright left behind."""
    with os.scandir(spill) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        pid, _, rest = name.partition("@")
        if files.owner_dead_here(pid, rest.rsplit(".", 1)[0]):
            shutil.rmtree(spill / name, ignore_errors=True)

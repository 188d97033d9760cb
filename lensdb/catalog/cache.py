"""The catalog file: `<warehouse>/lensdb.duckdb` (for an object store, a file in this user's
cache), a cache of the installed views. lensdb ATTACHes it READ_ONLY (no write lock); a
missing, damaged or out-of-date one is rebuilt in a private folder, copied beside the old
one and renamed over it in one step (several processes may do so at once); where it cannot
be (a read-only warehouse, a file an outside client holds open for writing), the views are
installed in the in-memory database instead. The root the views' globs start with is the
warehouse itself, or a linked folder of this user's (`view_root`)."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import tempfile
import time
from pathlib import Path

from lensdb import files
from lensdb.catalog.views import META_SCHEMA, Root, install
from lensdb.errors import WarehouseError
from lensdb.warehouse import anchors, layout
from lensdb.warehouse.layout import open_warehouse

CATALOG_ALIAS = "lensdb"
STALE_TEMPORARY_SECONDS = 3600


def catalog_path(warehouse) -> Path:
    """<warehouse>/lensdb.duckdb; for an object store a local cache file of this user's
    (DuckDB databases cannot live on object storage)."""
    return open_warehouse(warehouse).catalog_path()


def new_connection(warehouse, database: str = ":memory:"):
    """A DuckDB connection that can read the warehouse (an object store's filesystem registered)."""
    import duckdb

    con = duckdb.connect(database)
    open_warehouse(warehouse).register(con)
    return con


def view_root(warehouse) -> Root:
    """The warehouse itself when its path can be a glob and its schema files are current
    (or can be made so); else a linked folder of this user's."""
    store = open_warehouse(warehouse)
    if layout.glob_safe(str(warehouse)):
        try:
            store.ensure_schema_files(writer=False)
            return Root(warehouse, warehouse)
        except OSError:
            pass
    return Root(warehouse, _linked_root(warehouse))


def _linked_root(warehouse: Path) -> Path:
    """<temp>/lensdb-<uid>/roots/<hash>/: runs -> <warehouse>/runs, lenses -> <warehouse>/lenses,
    and _schema/ of its own."""
    base = files.private_base()
    folder = base / "roots" / hashlib.sha256(str(warehouse).encode("utf-8")).hexdigest()[:16]
    if not layout.glob_safe(str(folder)):
        raise WarehouseError(f"cannot read the warehouse {warehouse}: DuckDB reads no path holding a backslash (nor {folder})")
    try:
        files.make_private(base, folder)
        for name in (layout.RUNS_DIR, layout.LENSES_DIR):
            link = folder / name
            target = warehouse / name
            if not (link.is_symlink() and os.readlink(link) == str(target)):
                temporary = files.temporary_beside(link)
                os.symlink(target, temporary)
                os.replace(temporary, link)
        anchors.write_schema_anchors(folder)
    except OSError as exc:
        raise WarehouseError(f"cannot read the warehouse {warehouse}: its schema files cannot be written there nor in {folder} ({exc.strerror or exc})") from None
    return folder


def attach(con, warehouse, fingerprint: dict[str, str]) -> str:
    """ATTACH the catalog read-only: 'current', or why not ('missing', 'stale', 'damaged', 'busy')."""
    import duckdb

    catalog = catalog_path(warehouse)
    if not catalog.is_file():
        return "missing"
    try:
        con.execute(f"ATTACH {layout.sql_string(str(catalog))} AS {CATALOG_ALIAS} (READ_ONLY)")
    except duckdb.Error as exc:
        text = str(exc).lower()
        if "lock" in text or "in use" in text or "conflict" in text or isinstance(exc, duckdb.ConnectionException):
            return "busy"  # a writer holds it, or this process has it open for writing
        return "damaged"
    try:
        installed = dict(con.execute(f"SELECT key, value FROM {CATALOG_ALIAS}.{META_SCHEMA}.fingerprint").fetchall())
    except duckdb.Error:
        installed = None
    if installed != fingerprint:
        con.execute(f"DETACH {CATALOG_ALIAS}")
        return "stale"
    con.execute(f"USE {CATALOG_ALIAS}")
    return "current"


def rebuild(root: Root, damaged) -> bool:
    """Build the catalog in a private folder, copy it beside the old one and rename it into
    place. (DuckDB cannot write a database under a path holding '?': it puts the log at
    the path cut there.)"""
    import duckdb

    catalog = catalog_path(root.warehouse)
    temporary = catalog.with_name(f"{catalog.name}.{files.owner_tag()}.{secrets.token_hex(4)}.tmp")
    try:
        catalog.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_temporaries(catalog.parent)
        with tempfile.TemporaryDirectory(prefix="lensdb-catalog-") as scratch:
            built = Path(scratch) / layout.CATALOG_FILE
            con = new_connection(root.warehouse, str(built))
            try:
                install(root, con, damaged)
                con.execute("CHECKPOINT")
            finally:
                con.close()
            shutil.copyfile(built, temporary)
        files.fsync_dir(temporary)
        Path(f"{catalog}.wal").unlink(missing_ok=True)  # a dead writer's log of the old file
        os.replace(temporary, catalog)
        files.fsync_dir(catalog.parent)
        return True
    except (OSError, duckdb.Error):
        return False
    finally:
        try:
            temporary.unlink(missing_ok=True)
        except OSError:
            pass


def _remove_stale_temporaries(folder: Path) -> None:
    """Temporary catalogs of dead processes on this host, or older than an hour."""
    prefix = f"{layout.CATALOG_FILE}."
    with os.scandir(folder) as entries:
        names = [entry.name for entry in entries if entry.name.startswith(prefix) and ".tmp" in entry.name]
    for name in names:
        path = folder / name
        owner = name[len(prefix) :].rsplit(".", 2)[0]  # <pid>@<host>.<hex>.tmp
        pid, _, owner_host = owner.partition("@")
        try:
            dead = files.owner_dead_here(pid, owner_host)
            if dead or time.time() - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink()
        except OSError:
            pass


def open_for_writing(root: Root, damaged, fingerprint: dict[str, str]):
    """The catalog file itself, read-write (rebuilt first if needed); in memory if it is busy."""
    import duckdb

    catalog = catalog_path(root.warehouse)
    probe = new_connection(root.warehouse)
    state = attach(probe, root.warehouse, fingerprint)
    probe.close()
    if state != "busy":
        if state != "current":
            rebuild(root, damaged)
        try:
            con = new_connection(root.warehouse, str(catalog))
            if _installed_fingerprint(con) == fingerprint:
                return con
            con.close()
        except duckdb.Error:
            pass
    con = new_connection(root.warehouse)
    install(root, con, damaged)
    return con


def _installed_fingerprint(con) -> dict[str, str] | None:
    try:
        return dict(con.execute(f"SELECT key, value FROM {META_SCHEMA}.fingerprint").fetchall())
    except Exception:  # noqa: BLE001 - no catalog yet
        return None

"""The DuckDB catalog: the versioned SQL views over a warehouse's Parquet files.

`<warehouse>/lensdb.duckdb` holds schemas `v1_base` (internal) and `v1` (the public
views), installed from `sql/v1/*.sql`. It is a cache of those files: the catalog records
each file's version and SQL hash in `lensdb_meta.views` and a fingerprint (SQL hashes,
the warehouse's location, the damaged runs it leaves out) in `lensdb_meta.fingerprint`.
Views read the Parquet files at query time, so new runs appear without reinstalling
anything; `extract` never opens the catalog.

How lensdb opens it, so that readers never wait and never need write access:
- lensdb's own connections are in-memory DuckDB databases that ATTACH the catalog
  READ_ONLY (no write lock: outside clients can open it read-only at the same time);
- a missing, damaged or out-of-date catalog is rebuilt in a private folder, copied beside
  the old one and renamed over it in one step (several processes may do so at once);
- when it cannot be (a read-only warehouse, a catalog that an outside client holds open
  for writing), the views are installed in the in-memory database instead.
`lensdb query` (and `lensdb.query`) also confine DuckDB to the warehouse: statements other
than SELECT are refused, and DuckDB's external access is off except for the warehouse
folder (settings locked), unless `--allow-files` / `allow_files=True`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import secrets
import shutil
import socket
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pyarrow as pa

from lensdb.errors import DamagedRunsWarning, MissingDependency, QueryError, WarehouseError, first_line
from lensdb.resources import named_queries_dir, sql_dir
from lensdb.warehouse import anchors, health, layout, remote
from lensdb.warehouse.health import DamagedRun
from lensdb.warehouse.writer import fsync_dir, pid_alive

VIEW_VERSIONS = ("v1",)
META_SCHEMA = "lensdb_meta"
CATALOG_ALIAS = "lensdb"
SKIP_VARIABLE = "lensdb_skip_runs"
DAMAGED_VARIABLE = "lensdb_damaged_runs"
DAMAGED_TYPE = "STRUCT(model VARCHAR, run_id VARCHAR, folder VARCHAR, reason VARCHAR)[]"
# Part of the fingerprint: bump when the way the views are rendered changes.
LAYOUT_VERSION = "2"
STALE_TEMPORARY_SECONDS = 3600
FORMATS = ("arrow", "polars", "pandas")
LATEST_ONLY_VARIABLE = "lensdb_latest_only"  # SET VARIABLE ... = true: every view keeps only v1.latest_runs' runs
_HEADER_FIELD = re.compile(r"^(--\s*(view|version|what|inputs):\s*)(.*)$")
_DEFINED = re.compile(r"CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+([\w.]+)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\{(ROOT|SKIP_RUNS|DAMAGED_RUNS)\}\}")
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



# ------------------------------------------------------------------ rendering the SQL


@dataclass(frozen=True)
class Root:
    """What the views' globs start with: the warehouse itself, or a folder of this user's
    that links to its runs (when the warehouse's path cannot be a DuckDB glob, or its schema
    files cannot be written)."""

    warehouse: Path
    path: Path

    @property
    def linked(self) -> bool:
        return self.path != self.warehouse


def render(text: str, root: Root | Path, damaged: list[DamagedRun] | tuple = ()) -> str:
    """The SQL of a file with its placeholders filled in as data: the root as an escaped
    glob inside a string literal, the damaged runs as list literals. Comment lines keep
    their placeholders' names, so that no value (a path with a newline, say) leaves a comment."""
    if isinstance(root, Path):
        root = Root(root, root)
    values = {
        "ROOT": layout.glob_literal(str(root.path)).replace("'", "''"),
        "SKIP_RUNS": _skip_literal(damaged),
        "DAMAGED_RUNS": _damaged_literal(damaged),
    }
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            lines.append(_PLACEHOLDER.sub(lambda m: f"<{m.group(1).lower()}>", line))
        else:
            lines.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], line))
    return "".join(lines)


def _skip_literal(damaged) -> str:
    return "[" + ", ".join(layout.sql_string(run.folder_key) for run in damaged) + "]::VARCHAR[]"


def _damaged_literal(damaged) -> str:
    rows = [
        "{" + ", ".join(f"'{key}': {layout.sql_string(value)}" for key, value in _damaged_row(run).items()) + "}"
        for run in damaged
    ]
    return "[" + ", ".join(rows) + f"]::{DAMAGED_TYPE}"


def _damaged_row(run: DamagedRun) -> dict[str, str]:
    return {"model": run.model, "run_id": run.run_id, "folder": f"{layout.RUNS_DIR}/{run.folder_key}", "reason": run.reason}


def catalog_path(warehouse) -> Path:
    """<warehouse>/lensdb.duckdb; for a remote warehouse a local cache file of this user's
    (DuckDB databases cannot live on object storage)."""
    if layout.is_remote(warehouse):
        return remote.catalog_cache(warehouse)
    return warehouse / layout.CATALOG_FILE


def new_connection(warehouse, database: str = ":memory:"):
    """A DuckDB connection that can read the warehouse (a remote one's filesystem registered)."""
    import duckdb

    con = duckdb.connect(database)
    if layout.is_remote(warehouse):
        remote.register(con, warehouse)
    return con


def committed_run_count(warehouse: Path) -> int:
    """Run folders in runs/ (committed, or damaged: the views report those)."""
    return len(layout.run_folders(warehouse))


def _fingerprint(root: Root, damaged) -> dict[str, str]:
    return {str(f.path.relative_to(sql_dir())): f.sha256 for v in VIEW_VERSIONS for f in sql_files(v)} | {
        "warehouse": str(root.warehouse),
        "root": str(root.path),
        "layout": LAYOUT_VERSION,
        "damaged": "\n".join(run.folder_key for run in damaged),
    }


def install(root: Root | Path, con, damaged=()) -> None:
    """(Re)create every view in `con` and record versions, hashes and the fingerprint."""
    if isinstance(root, Path):
        root = Root(root, root)
    if not layout.is_remote(root.path):
        anchors.write_schema_anchors(root.path)
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
                con.execute(render(sql_file.text, root, damaged))
                for name in sql_file.defines:
                    con.execute(
                        f"INSERT INTO {META_SCHEMA}.views (name, view_version, file, version, sql_sha256) VALUES (?, ?, ?, ?, ?)",
                        [name, view_version, sql_file.path.name, sql_file.version, sql_file.sha256],
                    )
        con.executemany(f"INSERT INTO {META_SCHEMA}.fingerprint VALUES (?, ?)", list(_fingerprint(root, damaged).items()))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


# ------------------------------------------------------------------ opening


@dataclass
class Session:
    """A connection with the views, and what lensdb knows about the warehouse's runs."""

    con: object
    warehouse: Path
    root: Root
    damaged: list[DamagedRun] = field(default_factory=list)
    run_folders: int | None = None  # run folders seen when opening (counted for remote warehouses)

    def leave_out(self, run: DamagedRun) -> None:
        self.damaged.append(run)
        _set_variables(self.con, self.damaged)

    def run(self, sql: str, *, retry: bool = True) -> pa.Table:
        """Run SQL; a run whose files fail to read is left out and the SQL run again.

        The run is the one the error names, or else (DuckDB does not always name the file)
        the one found by running the SQL on halves of the runs and confirmed by reading
        its files to the end; an error that is the query's own is raised as it is.
        """
        import duckdb

        while True:
            try:
                return self._execute(sql)
            except duckdb.Error as exc:
                run = None
                if retry and _may_be_file_damage(exc):
                    run = _damaged_run_in(exc, self.warehouse, self.root) or self._search_damaged_run(sql)
                if run is None or run.folder_key in {known.folder_key for known in self.damaged}:
                    raise _query_error(exc, self.warehouse, self.root) from None
                # Recorded, so that v1.damaged_runs (and the next check) lists it from now on.
                recorded = health.record_data_damage(self.warehouse, run)
                self.leave_out(dataclasses.replace(run, recorded=recorded))

    def _execute(self, sql: str) -> pa.Table:
        relation = self.con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})

    def _search_damaged_run(self, sql: str) -> DamagedRun | None:
        import duckdb

        known = [run.folder_key for run in self.damaged]
        candidates = [folder for folder in layout.run_folders(self.warehouse) if folder.key not in known]

        def fails_with_only(kept: list[layout.RunFolder]) -> bool:
            keep = {folder.key for folder in kept}
            self.con.execute(f"SET VARIABLE {SKIP_VARIABLE} = ?::VARCHAR[]", [known + [f.key for f in candidates if f.key not in keep]])
            try:
                self._execute(sql)
                return False
            except duckdb.Error:
                return True

        try:
            if not candidates or fails_with_only([]):
                return None  # it fails without any run: the query's own error
            group = candidates
            while len(group) > 1:
                half = group[: len(group) // 2]
                group = half if fails_with_only(half) else group[len(group) // 2 :]
        finally:
            _set_variables(self.con, self.damaged)
        if layout.is_remote(self.warehouse):
            reason = remote.run_data_damage(self.warehouse, group[0].path)
        else:
            reason = health.run_data_damage(group[0].path)
        if reason is None:
            return None
        return DamagedRun(model=group[0].model, run_id=group[0].run_id, path=group[0].path, reason=reason)


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
    run_folders = None
    if layout.is_remote(path):
        surveyed = remote.survey(path)  # one listing and one read per manifest, for all below
        damaged, run_folders = surveyed.damaged, len(surveyed.folders)
    else:
        damaged = health.damaged_runs(path)
    root = _root(path)
    fingerprint = _fingerprint(root, damaged)
    if not layout.glob_safe(str(path)):
        # DuckDB opens no database file under a path holding a backslash (a separator to it).
        con = duckdb.connect()
        install(root, con, damaged)
    elif read_only:
        con = new_connection(path)
        state = _attach(con, path, fingerprint)
        if state in ("missing", "stale", "damaged") and _rebuild(root, damaged):
            state = _attach(con, path, fingerprint)
        if state != "current":
            install(root, con, damaged)
    else:
        con = _open_for_writing(root, damaged, fingerprint)
    _set_variables(con, damaged)
    if latest:
        latest_only(con)
    if quiet:
        con.execute("SET enable_progress_bar = false")  # stderr keeps to lensdb's own lines
    if sandbox:
        _confine(con, root)
    return Session(con=con, warehouse=path, root=root, damaged=list(damaged), run_folders=run_folders)


def existing_warehouse(warehouse) -> Path:
    if isinstance(warehouse, remote.RemoteWarehouse):
        return warehouse  # resolved, and so checked, by the caller
    path = layout.resolve_warehouse(warehouse)
    if layout.is_remote(path):
        with remote.errors(path, "read"):
            if not path.fs.exists(path.root):
                raise WarehouseError(f"no warehouse at {path} (run `lensdb extract` or `lensdb import-legacy`, or pass --warehouse)")
        return path
    if not path.is_dir():
        raise WarehouseError(f"no warehouse at {path} (run `lensdb extract` or `lensdb import-legacy`, or pass --warehouse)")
    return path


def _root(warehouse: Path) -> Root:
    """The warehouse itself when its path can be a glob and its schema files are current
    (or can be made so); else a linked folder of this user's. A remote warehouse is its own root."""
    if layout.is_remote(warehouse):
        remote.ensure_schema_anchors(warehouse, writer=False)
        return Root(warehouse, warehouse)
    if layout.glob_safe(str(warehouse)):
        if anchors.anchors_current(warehouse):
            return Root(warehouse, warehouse)
        try:
            anchors.write_schema_anchors(warehouse)
            return Root(warehouse, warehouse)
        except OSError:
            pass
    return Root(warehouse, _linked_root(warehouse))


def _private_base() -> Path:
    """<temp>/lensdb-<uid>/, created if needed: a folder of this user's alone."""
    return Path(tempfile.gettempdir()) / f"lensdb-{_uid()}"


def _make_private(base: Path, folder: Path) -> None:
    """mkdir `folder` (under `base`, the private base); `base` must be this user's, and only theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    if base.stat().st_uid != _uid():
        raise WarehouseError(f"{base} belongs to another user; set TMPDIR to a folder of yours")
    base.chmod(0o700)


def _linked_root(warehouse: Path) -> Path:
    """<temp>/lensdb-<uid>/roots/<hash>/: runs -> <warehouse>/runs, lenses -> <warehouse>/lenses,
    and _schema/ of its own."""
    base = _private_base()
    folder = base / "roots" / hashlib.sha256(str(warehouse).encode("utf-8")).hexdigest()[:16]
    if not layout.glob_safe(str(folder)):
        raise WarehouseError(f"cannot read the warehouse {warehouse}: DuckDB reads no path holding a backslash (nor {folder})")
    try:
        _make_private(base, folder)
        for name in (layout.RUNS_DIR, layout.LENSES_DIR):
            link = folder / name
            target = warehouse / name
            if not (link.is_symlink() and os.readlink(link) == str(target)):
                temporary = folder / f".{name}.{os.getpid()}-{secrets.token_hex(4)}"
                os.symlink(target, temporary)
                os.replace(temporary, link)
        anchors.write_schema_anchors(folder)
    except OSError as exc:
        raise WarehouseError(f"cannot read the warehouse {warehouse}: its schema files cannot be written there nor in {folder} ({exc.strerror or exc})") from None
    return folder


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0


def _attach(con, warehouse: Path, fingerprint: dict[str, str]) -> str:
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


def _rebuild(root: Root, damaged) -> bool:
    """Build the catalog in a private folder, copy it beside the old one and rename it into
    place. (DuckDB cannot write a database under a path holding '?': it puts the log at
    the path cut there.)"""
    import duckdb

    catalog = catalog_path(root.warehouse)
    temporary = catalog.with_name(f"{catalog.name}.{os.getpid()}@{socket.gethostname()}.{secrets.token_hex(4)}.tmp")
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
        fsync_dir(temporary)
        Path(f"{catalog}.wal").unlink(missing_ok=True)  # a dead writer's log of the old file
        os.replace(temporary, catalog)
        fsync_dir(catalog.parent)
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
    host = socket.gethostname()
    prefix = f"{layout.CATALOG_FILE}."
    with os.scandir(folder) as entries:
        names = [entry.name for entry in entries if entry.name.startswith(prefix) and ".tmp" in entry.name]
    for name in names:
        path = folder / name
        owner = name[len(prefix) :].rsplit(".", 2)[0]  # <pid>@<host>.<hex>.tmp
        pid, _, owner_host = owner.partition("@")
        try:
            dead = owner_host == host and pid.isdigit() and not pid_alive(int(pid))
            if dead or time.time() - path.stat().st_mtime > STALE_TEMPORARY_SECONDS:
                path.unlink()
        except OSError:
            pass


def _open_for_writing(root: Root, damaged, fingerprint: dict[str, str]):
    """The catalog file itself, read-write (rebuilt first if needed); in memory if it is busy."""
    import duckdb

    catalog = catalog_path(root.warehouse)
    probe = new_connection(root.warehouse)
    state = _attach(probe, root.warehouse, fingerprint)
    probe.close()
    if state != "busy":
        if state != "current":
            _rebuild(root, damaged)
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


def _set_variables(con, damaged) -> None:
    con.execute(f"SET VARIABLE {SKIP_VARIABLE} = ?::VARCHAR[]", [[run.folder_key for run in damaged]])
    con.execute(f"SET VARIABLE {DAMAGED_VARIABLE} = ?::{DAMAGED_TYPE}", [[_damaged_row(run) for run in damaged]])


def _confine(con, root: Root) -> None:
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
    files = []
    if not layout.is_remote(root.warehouse):
        # Data linked from elsewhere (runs/ on another disk, say): DuckDB checks the real path.
        for link in layout.linked_data_paths(root.warehouse):
            real = os.path.realpath(link)
            if layout.glob_safe(real) and os.path.isdir(real):
                folders.add(real)
            elif layout.glob_safe(real) and os.path.isfile(real):
                files.append(real)
    allowed = sorted(folder.rstrip("/") + "/" for folder in folders)
    if files:
        attached = con.execute("SELECT current_setting('allowed_paths')").fetchone()[0] or []
        con.execute("SET allowed_paths = ?", [sorted({*attached, *files})])
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
    base = _private_base()
    spill = base / "spill"
    try:
        _make_private(base, spill)
        _remove_dead_spill_folders(spill)
    except (OSError, WarehouseError):
        return ""
    folder = spill / f"{os.getpid()}@{socket.gethostname()}.{secrets.token_hex(4)}"
    return str(folder) if layout.glob_safe(str(folder)) else ""


def _remove_dead_spill_folders(spill: Path) -> None:
    """Spill folders that processes of this host killed outright left behind."""
    host = socket.gethostname()
    with os.scandir(spill) as entries:
        names = [entry.name for entry in entries]
    for name in names:
        pid, _, rest = name.partition("@")
        if pid.isdigit() and rest.rsplit(".", 1)[0] == host and not pid_alive(int(pid)):
            shutil.rmtree(spill / name, ignore_errors=True)


def warn_damaged(damaged: list[DamagedRun]) -> None:
    if damaged:
        warnings.warn(DamagedRunsWarning(damaged_message(damaged)), stacklevel=4)


def damaged_message(damaged: list[DamagedRun]) -> str:
    runs = "; ".join(f"run {run.run_id} ({run.model}): {run.reason}" for run in damaged)
    noun = "run is" if len(damaged) == 1 else "runs are"
    unrecorded = [run.run_id for run in damaged if not run.recorded]
    hint = "SELECT * FROM v1.damaged_runs"
    if unrecorded:
        hint += (f"; this query found the damage of run {', '.join(unrecorded)} inside its files and could not record it"
                 " (no writable run folder or cache): only queries that read those files leave it out")
    return f"{len(damaged)} damaged {noun} left out of every view: {runs} ({hint})"


# ------------------------------------------------------------------ queries

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
    empty = f"warehouse {path} has no committed runs yet (run `lensdb extract` or `lensdb import-legacy`)"
    if not layout.is_remote(path) and committed_run_count(path) == 0 and not list(path.glob("lenses/*/lens.parquet")):
        raise WarehouseError(empty)
    if not allow_files:
        check_read_only_sql(sql)
    session = open_session(path, read_only=True, sandbox=not allow_files, quiet=True, latest=latest)
    if session.run_folders == 0:
        session.con.close()
        raise WarehouseError(empty)
    try:
        table = session.run(sql, retry=not allow_files or _is_read_only(sql))
    finally:
        session.con.close()
    warn_damaged(session.damaged)
    if format == "polars":
        import polars as pl

        return pl.from_arrow(table)
    if format == "pandas":
        return table.to_pandas()
    return table


def _is_read_only(sql: str) -> bool:
    try:
        check_read_only_sql(sql)
    except QueryError:
        return False
    return True


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
    """Run SQL on a connection from `connect`; errors as one line."""
    import duckdb

    try:
        relation = con.sql(sql)
        return relation.to_arrow_table() if relation is not None else pa.table({})
    except duckdb.Error as exc:
        raise _query_error(exc, warehouse, None) from None


_FILE_IN_MESSAGE = re.compile(r"""['"]([^'"]+\.parquet)['"]""")
_RUN_FILE = re.compile(r"[/\\]runs[/\\](model=[^/\\'\"]*)[/\\]run=([^/\\'\"]*)[/\\]([^/\\'\"]+)[/\\]([^/\\'\"]+\.parquet)")


def _may_be_file_damage(exc: Exception) -> bool:
    """DuckDB errors a damaged file can cause (a query's own mistakes have other kinds,
    except a file whose column cannot be cast: DuckDB names the file it was reading)."""
    import duckdb

    file_kinds = (duckdb.IOException, duckdb.InvalidInputException, duckdb.InternalException, duckdb.SerializationException)
    reading = isinstance(exc, duckdb.ConversionException) and "while reading file" in str(exc)
    return type(exc) is duckdb.Error or isinstance(exc, file_kinds) or reading


def _damaged_run_in(exc: Exception, warehouse: Path, root: Root) -> DamagedRun | None:
    """The run whose Parquet file a DuckDB error names, if that run's files are damaged."""
    matches = list(_RUN_FILE.finditer(str(exc)))
    if not matches:
        return None
    model_folder, run_id, _table, _name = matches[-1].groups()
    if layout.is_remote(warehouse):
        path = PurePosixPath(warehouse.path(layout.RUNS_DIR, model_folder, f"{layout.RUN_PREFIX}{run_id}"))
        known = {(d.path, d.reason) for d in remote.survey(warehouse).damaged}
        reason = next((why for where, why in known if where == path), None) or remote.run_data_damage(warehouse, path)
        if reason is None:
            return None
        return DamagedRun(model=layout.model_from_key(model_folder[len(layout.MODEL_PREFIX) :]), run_id=run_id, path=path, reason=reason)
    folder = layout.RunFolder(
        path=warehouse / layout.RUNS_DIR / model_folder / f"{layout.RUN_PREFIX}{run_id}",
        model_key=model_folder[len(layout.MODEL_PREFIX) :],
        run_id=run_id,
    )
    # A query may name a run's file itself (a missing one, say): only real damage counts.
    reason = health.run_damage(folder) or health.run_data_damage(folder.path)
    if reason is None:
        return None
    return DamagedRun(model=folder.model, run_id=run_id, path=folder.path, reason=reason)


def _query_error(exc: Exception, warehouse: Path, root: Root | None) -> Exception:
    message = first_line(exc)
    if "Permission Error" in message and "disabled by configuration" in message:
        return QueryError(f"{message} (lensdb query reads the warehouse only; --allow-files lifts this)")
    file_match = _FILE_IN_MESSAGE.search(str(exc))
    if file_match:
        bad = Path(file_match.group(1))
        run = next((part.removeprefix("run=") for part in bad.parts if part.startswith("run=")), None)
        shown = bad
        for base in (warehouse, root.path if root else None):
            if isinstance(base, Path) and bad.is_relative_to(base):
                shown = bad.relative_to(base)
        where = f" (run {run})" if run else ""
        return WarehouseError(f"corrupt or unreadable Parquet file {shown}{where}: {message}")
    if "does not exist" in message and ("Table" in message or "Catalog" in message or "Macro" in message):
        return QueryError(f"{message} (see `lensdb query --list` for the views)")
    return QueryError(message)


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

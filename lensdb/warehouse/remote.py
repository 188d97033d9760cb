"""Warehouses on object storage: `s3://bucket/prefix`, `gs://...`, any fsspec filesystem.

A remote warehouse has the layout of a local one under its URL (runs/model=<key>/run=<id>/
<table>/*.parquet, _schema/), but no _staging/, _trash/ or lock file: object stores have no
atomic rename. A run is committed by a marker instead:

    1. a writer draws a random token and writes its files straight under the run's final
       prefix as <table>/<part>-<token>[-rankN]-00000.parquet;
    2. it writes the manifest (manifest/part-00000.parquet) last, with a conditional put
       (If-None-Match: of several writers of one model and run id exactly one commits) where
       the store has one; its Parquet key-value metadata `lensdb.files` lists every data
       file of the run and its size;
    3. readers take a run only when its manifest exists and the files it lists are there with
       those sizes and no others. A prefix without a manifest is uncommitted: no view reads
       it (the views join every table to the manifests); `lensdb runs --uncommitted` lists
       what crashed writers left and `lensdb cleanup` removes it.

Run ids drawn by lensdb (time + 48 random bits) do not collide across machines; an explicit
--run-id is checked against every model before the commit (a check, not a lock).

Credentials come from the filesystem's own configuration (for S3: AWS_* variables, profiles,
AWS_ENDPOINT_URL for S3-compatible stores); lensdb never takes them in a URL, and never
writes or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import json
import os
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import MissingDependency, WarehouseError
from lensdb.warehouse import layout

FILES_KEY = b"lensdb.files"  # manifest metadata: {"<table>/<file>": size, ...}
MANIFEST_FILE = "manifest/part-00000.parquet"
CACHE_ENV = "LENSDB_CACHE_DIR"
# DuckDB globs once per table scan; the scans of one statement (within this many seconds)
# share one listing, so a query sees one snapshot of the warehouse and lists it once.
LISTING_SECONDS = 1.0
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Packages that give fsspec its object stores, for the one-line hint when one is missing.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


@dataclass(frozen=True, eq=False)
class RemoteWarehouse:
    """A warehouse under a URL: `fs` (an fsspec filesystem) and `root`, its path inside it."""

    url: str  # scheme://bucket/prefix, as shown to people (no credentials: they are refused)
    protocol: str
    root: str  # bucket/prefix
    fs: object

    def __str__(self) -> str:
        return self.url

    def __eq__(self, other) -> bool:
        return isinstance(other, RemoteWarehouse) and other.url == self.url

    def __hash__(self) -> int:
        return hash(self.url)

    def path(self, *parts: str) -> str:
        """The filesystem path of `parts` under the warehouse."""
        return "/".join([self.root, *[str(part).strip("/") for part in parts if str(part)]])

    def url_of(self, path: str) -> str:
        return f"{self.protocol}://{path}"

    def relative(self, path: str) -> str:
        path = self.fs._strip_protocol(path)
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else path

    @property
    def arrow_fs(self):
        import pyarrow.fs

        return pyarrow.fs.PyFileSystem(pyarrow.fs.FSSpecHandler(self.fs))

    def listing(self, under: str = "") -> dict[str, "Entry"]:
        """Every file below `under` (relative to the warehouse): relative path -> size, time. One listing."""
        base = self.path(under) if under else self.root
        with errors(self, "list"):
            try:
                found = self.fs.find(base, detail=True)
            except FileNotFoundError:
                return {}
        entries = {}
        for path, info in found.items():
            if info.get("type", "file") != "file":
                continue
            entries[self.relative(path)] = Entry(int(info.get("size") or 0), _modified(info))
        return entries

    def read_bytes(self, relative: str) -> bytes:
        with errors(self, "read"):
            return self.fs.cat_file(self.path(relative))

    def read_many(self, relatives: list[str]) -> dict[str, bytes | Exception]:
        """Several small files at once (the store's concurrency: one round trip's time)."""
        if not relatives:
            return {}
        paths = [self.path(r) for r in relatives]
        with errors(self, "read"):
            if "max_concurrency" in inspect.signature(getattr(self.fs, "_cat_file", self.fs.cat_file)).parameters:
                # s3fs: one GET each, all at once (by default it asks each object's size first)
                import asyncio

                from fsspec.asyn import sync

                async def gather():
                    return await asyncio.gather(*(self.fs._cat_file(p, max_concurrency=1) for p in paths), return_exceptions=True)

                got = sync(self.fs.loop, gather)
            else:
                got = self.fs.cat_ranges(paths, None, None, on_error="return")
        return dict(zip(relatives, got))

    def write_bytes(self, relative: str, data: bytes, *, exclusive: bool = False) -> None:
        """Write one object; `exclusive`: fail with FileExistsError if it exists (a conditional
        put where the filesystem has one, else a check just before: not atomic)."""
        path = self.path(relative)
        with errors(self, "write"):
            if exclusive:
                try:
                    self.fs.pipe_file(path, data, mode="create")
                    return
                except (TypeError, NotImplementedError):
                    if self.fs.exists(path):
                        raise FileExistsError(path) from None
            self.fs.pipe_file(path, data)

    def remove(self, relatives: list[str]) -> None:
        if relatives:
            with errors(self, "delete"):
                self.fs.rm([self.path(r) for r in relatives])


@dataclass(frozen=True)
class Entry:
    size: int
    modified: float | None  # seconds since the epoch


def _modified(info: dict) -> float | None:
    for key in ("LastModified", "mtime", "updated", "last_modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return None


def redact_url(text: str) -> str:
    """A URL as it may be printed: without what can hold a secret (the user info
    `key:secret@`, the query, the fragment). Text that is not a URL is returned as it is.

    A secret may hold '/', '?', '#', ':' or '@' unescaped, so the parts are found from the
    outside: everything up to the last '@' is user info, everything from the first '?' or '#'
    query; where those overlap, or the host part holds a ':' that starts no port, only the
    scheme is kept."""
    match = _URL.match(text)
    if not match:
        return text
    scheme, rest = text[: match.end()], text[match.end() :]
    ends = [rest.find(char) for char in "?#" if char in rest]
    query_at = min(ends) if ends else None
    if "@" in rest:
        at = rest.rfind("@")
        if query_at is not None and at > query_at:
            return f"{scheme}…"
        rest = rest[at + 1 :]
        query_at = None if query_at is None else query_at - at - 1
    shown = rest if query_at is None else rest[:query_at]
    host, slash, path = shown.partition("/")
    if ":" in host and not host.rsplit(":", 1)[1].isdigit():
        host = "…"  # `key:secret` without an '@'
    return f"{scheme}{host}{slash}{path}" + ("" if query_at is None else "?…")


def _holds_credentials(parts) -> bool:
    """User info in the URL: `user@`, `user:password@`, or a `key:secret` host part (no port)."""
    if "@" in parts.netloc or parts.password is not None:
        return True
    return ":" in parts.netloc and not parts.netloc.rsplit(":", 1)[1].isdigit()


def open_url(text: str) -> Path | RemoteWarehouse:
    """The warehouse a URL names: a local folder for file://, else a RemoteWarehouse.
    Messages show the URL through redact_url only: a refused URL may hold a secret."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    shown = redact_url(text)
    if _holds_credentials(parts):
        raise WarehouseError(
            f"the warehouse URL {shown} holds credentials: lensdb takes them only from the "
            "environment (AWS_* variables, profiles), so that they are never written or printed"
        )
    if parts.query or parts.fragment:
        raise WarehouseError(f"the warehouse URL {shown} has a query or fragment; configure the store through its environment variables")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise WarehouseError(f"the warehouse URL {shown} names another host: file:// URLs name local folders (file:///path)")
        return Path(unquote(parts.path))
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    if not parts.netloc:
        raise WarehouseError(f"the warehouse URL {shown} names no bucket ({scheme}://BUCKET/PREFIX)")
    if "\\" in root or not layout.is_utf8(root):
        raise WarehouseError(f"the warehouse URL {shown} holds a backslash or bytes that are not UTF-8")
    fs = _filesystem(scheme)
    return RemoteWarehouse(url=f"{scheme}://{root}", protocol=scheme, root=root, fs=fs)


def _filesystem(scheme: str):
    try:
        import fsspec
    except ImportError:
        raise MissingDependency("object-store warehouses need fsspec: pip install 'lensdb[s3]'") from None
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = _PACKAGES.get(scheme, "the fsspec package for it")
        raise MissingDependency(f"{scheme}:// warehouses need {package}: pip install {package}") from None
    except ValueError:
        raise WarehouseError(f"unknown warehouse URL scheme {scheme}:// (fsspec knows no such filesystem)") from None
    options = {"skip_instance_cache": True}
    if scheme in ("s3", "s3a", "gs", "gcs"):
        options["use_listings_cache"] = False  # other processes commit runs: always list afresh
    try:
        return cls(**options)
    except Exception as exc:  # noqa: BLE001 - a misconfigured store: one line
        raise WarehouseError(f"cannot open the {scheme}:// filesystem: {_reason(exc)}") from None


@contextlib.contextmanager
def errors(warehouse: RemoteWarehouse, doing: str):
    """Failures of the store (no credentials, access denied, no endpoint) as one line naming the URL."""
    try:
        yield
    except (FileNotFoundError, FileExistsError):
        raise
    except WarehouseError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore, aiohttp, ... each have their own
        raise WarehouseError(f"cannot {doing} the warehouse {warehouse.url}: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


def catalog_cache(warehouse: RemoteWarehouse) -> Path:
    """The local DuckDB catalog of a remote warehouse: $LENSDB_CACHE_DIR, else
    $XDG_CACHE_HOME/lensdb, else ~/.cache/lensdb; one folder per URL."""
    digest = hashlib.sha256(warehouse.url.encode("utf-8")).hexdigest()[:16]
    return cache_dir() / "catalogs" / digest / layout.CATALOG_FILE


def cache_dir() -> Path:
    """lensdb's local cache of this user's: $LENSDB_CACHE_DIR, else $XDG_CACHE_HOME/lensdb, else ~/.cache/lensdb."""
    return Path(os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lensdb"))


# ---------------------------------------------------------------- DuckDB


def register(con, warehouse: RemoteWarehouse) -> None:
    """Let DuckDB read the warehouse's URLs through its fsspec filesystem (and never through an
    extension it would load by itself for s3:// paths, which reads credentials its own way)."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.register_filesystem(_globbing_filesystem(warehouse.fs))


def _globbing_filesystem(fs):
    """`fs` with a glob that lists the fixed prefix once (one paginated request) and matches
    the pattern locally: fsspec's own glob walks the tree one folder level at a time. The
    listing's size and time of each file it returned answer `info` (and so `open`, `size` and
    `modified`, which DuckDB calls for every file it reads): without them each file costs
    three HEAD requests more per query."""
    cls = type(fs)
    if getattr(cls, "_lensdb_glob", False):
        return fs

    def glob(self, path, maxdepth=None, **kwargs):
        from fsspec.utils import glob_translate

        pattern = self._strip_protocol(path)
        if not any(char in pattern for char in "*?["):
            return [pattern] if self.exists(pattern) else []
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0].rsplit("/", 1)[0]
        matcher = re.compile(glob_translate(pattern))
        listed_at, found = self._lensdb_lists.get(fixed, (0.0, None))
        if found is None or time.monotonic() - listed_at > LISTING_SECONDS:
            try:
                found = self.find(fixed, detail=True)
            except FileNotFoundError:
                found = {}
            self._lensdb_lists[fixed] = (time.monotonic(), found)
        matched = {name: info for name, info in found.items() if matcher.match(name)}
        self._lensdb_listed.update(matched)  # as fresh as the glob of the query that reads them
        return sorted(matched)

    def listed(self, path, options) -> dict | None:
        found = None if options.get("version_id") or options.get("refresh") else self._lensdb_listed.get(self._strip_protocol(path))
        return dict(found) if found is not None else None

    async def _info(self, path, **options):
        return listed(self, path, options) or await cls._info(self, path, **options)

    def info(self, path, **options):
        return listed(self, path, options) or cls.info(self, path, **options)

    members = {"glob": glob, "_lensdb_glob": True}
    # Async filesystems (s3fs, gcsfs) derive their `info` from `_info`.
    members.update({"_info": _info} if inspect.iscoroutinefunction(getattr(cls, "_info", None)) else {"info": info})
    wrapped = type(f"Lensdb{cls.__name__}", (cls,), members)
    instance = wrapped(**fs.storage_options, skip_instance_cache=True)
    instance._lensdb_listed = {}
    instance._lensdb_lists = {}  # prefix -> (when, listing): the scans of one statement share one listing
    return instance


# ---------------------------------------------------------------- runs: committed, damaged, uncommitted


@dataclass
class Leftover:
    """What a crashed or losing writer left: a run prefix without a manifest, or files in a
    committed run's prefix that its manifest does not list."""

    kind: str  # "uncommitted" or "stray"
    model: str
    run_id: str
    folder_key: str
    files: list[str]  # relative to the warehouse
    bytes: int
    newest: float | None  # the newest file's time, seconds since the epoch

    @property
    def age_seconds(self) -> float | None:
        return None if self.newest is None else max(0.0, time.time() - self.newest)


@dataclass
class Survey:
    folders: list[layout.RunFolder] = field(default_factory=list)  # runs with a manifest (committed or damaged)
    damaged: list = field(default_factory=list)  # health.DamagedRun
    leftovers: list[Leftover] = field(default_factory=list)
    listing: dict[str, Entry] = field(default_factory=dict)  # runs/... -> entry


def survey(warehouse: RemoteWarehouse) -> Survey:
    """Every run prefix of the warehouse, classified, from one listing and one read per manifest
    (and the damage queries found inside files, recorded in this user's cache)."""
    from lensdb.warehouse import health
    from lensdb.warehouse.health import DamagedRun

    listing = warehouse.listing(layout.RUNS_DIR)
    groups: dict[str, dict[str, Entry]] = {}
    for rel, entry in listing.items():
        parts = rel.split("/")
        if len(parts) < 5 or not parts[1].startswith(layout.MODEL_PREFIX) or not parts[2].startswith(layout.RUN_PREFIX):
            continue
        groups.setdefault(f"{parts[1]}/{parts[2]}", {})["/".join(parts[3:])] = entry
    manifests = {key: f"{layout.RUNS_DIR}/{key}/{MANIFEST_FILE}" for key, files in groups.items() if MANIFEST_FILE in files}
    contents = warehouse.read_many(list(manifests.values()))
    recorded = health.user_damage_records(warehouse)
    result = Survey(listing=listing)
    for key in sorted(groups):
        files = groups[key]
        model_part, run_part = key.split("/")
        folder = layout.RunFolder(
            path=PurePosixPath(warehouse.path(layout.RUNS_DIR, key)),
            model_key=model_part[len(layout.MODEL_PREFIX) :],
            run_id=run_part[len(layout.RUN_PREFIX) :],
        )
        relative = {f"{layout.RUNS_DIR}/{key}/{name}": entry for name, entry in files.items()}
        if key not in manifests:
            result.leftovers.append(_leftover("uncommitted", folder, relative))
            continue
        result.folders.append(folder)
        reason, listed = _manifest_check(contents.get(manifests[key]), folder)
        if reason is None and listed is not None:
            stray = {rel: entry for rel, entry in relative.items() if rel.split(f"{key}/", 1)[1] not in listed and not rel.endswith(MANIFEST_FILE)}
            if stray:
                result.leftovers.append(_leftover("stray", folder, stray))
                reason = f"holds {len(stray)} file(s) its manifest does not list (a writer that lost the commit or crashed; `lensdb cleanup` removes them)"
            else:
                reason = _listed_damage(files, listed)
        elif reason is None:
            reason = _unlisted_damage(files)
        if reason is None:
            reason = recorded.get(folder.key, {}).get("reason") if _record_holds(recorded.get(folder.key), relative) else None
        if reason is not None:
            result.damaged.append(DamagedRun(model=folder.model, run_id=folder.run_id, path=folder.path, reason=reason))
    return result


def _leftover(kind: str, folder: layout.RunFolder, files: dict[str, Entry]) -> Leftover:
    times = [entry.modified for entry in files.values() if entry.modified is not None]
    return Leftover(
        kind=kind,
        model=folder.model,
        run_id=folder.run_id,
        folder_key=folder.key,
        files=sorted(files),
        bytes=sum(entry.size for entry in files.values()),
        newest=max(times) if times else None,
    )


def _manifest_check(data, folder: layout.RunFolder) -> tuple[str | None, dict[str, int] | None]:
    """(why the manifest is not a commit marker of this run, or None; the files it lists)."""
    from lensdb.warehouse.health import COMMITTED, one_line, schema_damage

    if data is None or isinstance(data, Exception):
        return f"manifest unreadable: {one_line(data) if data is not None else 'missing'}", None
    try:
        parquet = pq.ParquetFile(pa.BufferReader(data))
        reason = schema_damage("manifest", parquet.schema_arrow)
        if reason is not None:
            return f"manifest {reason}", None
        rows = parquet.read(columns=["run_id", "status", "model"]).to_pylist()
        metadata = parquet.schema_arrow.metadata or {}
        listed = json.loads(metadata[FILES_KEY]) if FILES_KEY in metadata else None
    except Exception as exc:  # noqa: BLE001 - any failure to decode is damage
        return f"manifest unreadable: {one_line(exc)}", None
    if len(rows) != 1:
        return f"manifest has {len(rows)} rows, expected 1", None
    if rows[0]["run_id"] != folder.run_id:
        return f"manifest names run {rows[0]['run_id']!r}, the folder run {folder.run_id!r}", None
    model = rows[0]["model"]  # the views read the model from the folder name (health._manifest_damage)
    if not isinstance(model, str):
        return f"manifest names no model ({model!r})", None
    if layout.model_key(model) != folder.model_key:
        return f"manifest names model {model!r}, whose folder is {layout.MODEL_PREFIX}{layout.model_key(model)}", None
    if rows[0]["status"] != COMMITTED:
        return f"manifest status is {rows[0]['status']!r}, not {COMMITTED!r}", None
    return None, listed


def _listed_damage(files: dict[str, Entry], listed: dict[str, int]) -> str | None:
    for name, size in sorted(listed.items()):
        entry = files.get(name)
        if entry is None:
            return f"{name} missing"
        if entry.size != size:
            return f"{name} has {entry.size} bytes, its manifest says {size} (overwritten or truncated)"
    return _required_tables(files)


def _unlisted_damage(files: dict[str, Entry]) -> str | None:
    """A run copied in from a local warehouse (its manifest lists no files): sizes only."""
    for name, entry in sorted(files.items()):
        if name.endswith(".parquet") and entry.size < 12:
            return f"{name} unreadable: {entry.size} bytes, too small for a Parquet file"
    return _required_tables(files)


def _required_tables(files: dict[str, Entry]) -> str | None:
    from lensdb.warehouse.health import REQUIRED_TABLES

    tables = {name.split("/", 1)[0] for name in files if name.endswith(".parquet")}
    missing = [table for table in REQUIRED_TABLES if table not in tables]
    return f"{missing[0]}/ missing" if missing else None


def file_signature(warehouse: RemoteWarehouse, folder: PurePosixPath) -> dict[str, list]:
    """The run's files as one listing shows them: path relative to the warehouse -> [size, time]."""
    prefix = warehouse.relative(str(folder))
    return {rel: [entry.size, entry.modified] for rel, entry in sorted(warehouse.listing(prefix).items())}


def _record_holds(record: dict | None, files: dict[str, Entry]) -> bool:
    """A recorded finding still stands: every file it saw is there with the same size and time."""
    if not record or not record.get("files"):
        return False
    return all(rel in files and [files[rel].size, files[rel].modified] == seen for rel, seen in record["files"].items())


def run_data_damage(warehouse: RemoteWarehouse, folder: PurePosixPath) -> str | None:
    """Why a run's Parquet files cannot be read to the end, or None (health.run_data_damage, remotely)."""
    from lensdb.warehouse.health import one_line, parquet_damage
    from lensdb.warehouse.schema import TABLES

    prefix = warehouse.relative(str(folder))
    for rel in sorted(name[len(prefix) + 1 :] for name in warehouse.listing(prefix)):
        table = rel.split("/", 1)[0]
        if table not in TABLES or not rel.endswith(".parquet"):
            continue
        try:
            with warehouse.fs.open(warehouse.path(prefix, rel), "rb") as handle:
                reason = parquet_damage(table, handle)
        except Exception as exc:  # noqa: BLE001 - a file that cannot be opened is damage too
            reason = f"unreadable: {one_line(exc)}"
        if reason is not None:
            return f"{rel} {reason}"
    return None


# ---------------------------------------------------------------- schema files


def ensure_schema_anchors(warehouse: RemoteWarehouse, *, writer: bool) -> None:
    """Write the schema files (lensdb/warehouse/anchors.py) the warehouse lacks; a `writer` also
    rewrites those that differ from this lensdb's (a new schema version). A reader that cannot
    write a missing one gets one line."""
    from lensdb.warehouse import anchors

    present = warehouse.listing(layout.SCHEMA_DIR)
    for table in anchors.SCHEMAS:
        relative = str(anchors.anchor_path(PurePosixPath(""), table))
        entry = present.get(relative)
        if entry is not None and not writer:
            continue
        data = _anchor_bytes(table)
        if entry is not None and entry.size == len(data):
            continue
        try:
            warehouse.write_bytes(relative, data)
        except WarehouseError as exc:
            if writer or entry is None:
                raise WarehouseError(f"the warehouse {warehouse.url} lacks its schema files and they cannot be written: {exc}") from None


def _anchor_bytes(table: str) -> bytes:
    from lensdb.warehouse import anchors

    return parquet_bytes(anchors.anchor_table(table), compression="zstd")


def parquet_bytes(table: pa.Table, **options) -> bytes:
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, **options)
    return sink.getvalue().to_pybytes()

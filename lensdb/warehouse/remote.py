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

The modules: this one (the store and the Warehouse interface), remote_survey.py (the
commit markers read: committed, damaged, leftovers), remote_writer.py (the writer),
duckdb_fs.py (DuckDB reading through fsspec), urls.py (URLs: parsing, redaction, the
filesystem of a scheme).

Credentials come from the filesystem's own configuration (for S3: AWS_* variables, profiles,
AWS_ENDPOINT_URL for S3-compatible stores); lensdb never takes them in a URL, and never
writes or prints them.
"""

from __future__ import annotations

import contextlib
import hashlib
import inspect
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lensdb.errors import WarehouseError
from lensdb.files import cache_dir
from lensdb.warehouse import anchors, duckdb_fs, paths, remote_survey, urls
from lensdb.warehouse.base import LeftoverInfo, Warehouse
from lensdb.warehouse.health import DamagedRun
from lensdb.warehouse.remote_survey import FILES_KEY, MANIFEST_FILE, Entry, modified_time, survey
from lensdb.warehouse.remote_writer import RemoteRunWriter

# The protocol's names (remote_survey.py) are read from here too.
__all__ = ["FILES_KEY", "MANIFEST_FILE", "Entry", "RemoteRunWriter", "RemoteWarehouse", "errors", "open_url", "survey"]


@dataclass(frozen=True, eq=False)
class RemoteWarehouse(Warehouse):
    """A warehouse under a URL: `fs` (an fsspec filesystem) and `root`, its path inside it. It is
    its own location: what resolve_warehouse returns for a URL."""

    url: str  # scheme://bucket/prefix, as shown to people (no credentials: they are refused)
    protocol: str
    root: str  # bucket/prefix
    fs: object

    keeps_records_in_runs = False  # damage records go to this user's cache

    def __str__(self) -> str:
        return self.url

    @property
    def location(self) -> "RemoteWarehouse":
        return self

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

    def listing(self, under: str = "") -> dict[str, Entry]:
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
            entries[self.relative(path)] = Entry(int(info.get("size") or 0), modified_time(info))
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

    # ------------------------------------------------------------ the Warehouse interface

    def exists(self) -> bool:
        with errors(self, "read"):
            return self.fs.exists(self.root)

    def run_folders(self) -> list[paths.RunFolder]:
        return remote_survey.survey(self).folders

    def survey(self) -> remote_survey.RemoteSurvey:
        return remote_survey.survey(self)

    def damage_of(self, model_folder: str, run_id: str) -> DamagedRun | None:
        path = PurePosixPath(self.path(paths.RUNS_DIR, model_folder, f"{paths.RUN_PREFIX}{run_id}"))
        known = {(d.path, d.reason) for d in remote_survey.survey(self).damaged}
        reason = next((why for where, why in known if where == path), None) or remote_survey.run_data_damage(self, path)
        if reason is None:
            return None
        return DamagedRun(model=paths.model_from_key(model_folder[len(paths.MODEL_PREFIX) :]), run_id=run_id, path=path, reason=reason)

    def run_data_damage(self, folder) -> str | None:
        return remote_survey.run_data_damage(self, folder)

    def file_signature(self, folder) -> dict[str, list]:
        return remote_survey.file_signature(self, folder)

    def folder_files(self, folder) -> dict[str, int]:
        prefix = self.relative(str(folder))
        return {rel[len(prefix) + 1 :]: entry.size for rel, entry in self.listing(prefix).items()}

    def open_file(self, folder, name: str):
        return self.fs.open(f"{folder}/{name}", "rb")

    def shown_folder(self, folder) -> str:
        return self.url_of(str(folder))

    def folder_of_shown(self, shown) -> PurePosixPath:
        return PurePosixPath(self.fs._strip_protocol(str(shown)))

    def writer(self, model: str, run_id: str, *, file_tag: str = ""):
        return RemoteRunWriter(self, model, run_id, file_tag=file_tag)

    def joined_writer(self, model: str, run_id: str, share_name: str, *, file_tag: str):
        return RemoteRunWriter.join(self, model, run_id, share_name, file_tag=file_tag)

    # Object stores have no lock: commit_lock is the base's no-op, and checks narrow the window.

    def remove_runs(self, runs) -> None:
        for _run_id, folder in runs:
            prefix, files = self.relative(str(folder)), self.folder_files(folder)
            manifest = paths.table_files(files, "manifest")
            # The manifest first: the run leaves every view here (readers require it).
            self.remove([f"{prefix}/{name}" for name in manifest])
            self.remove([f"{prefix}/{name}" for name in files if name not in manifest])

    def leftovers(self, older_than_seconds: float) -> list[LeftoverInfo]:
        """Run prefixes without a manifest, and files no manifest lists."""
        return [
            LeftoverInfo(
                kind=left.kind,
                run_id=left.run_id,
                model=left.model,
                files=len(left.files),
                bytes_on_disk=left.bytes,
                age_seconds=left.age_seconds,
                removable=left.age_seconds is None or left.age_seconds >= older_than_seconds,
                location=self.url_of(self.path(f"{paths.RUNS_DIR}/{left.folder_key}")),
                _paths=tuple(left.files),
            )
            for left in remote_survey.survey(self).leftovers
        ]

    def remove_leftover(self, left: LeftoverInfo) -> None:
        self.remove(list(left._paths))

    def catalog_path(self) -> Path:
        """A local cache file of this user's, one folder per URL: $LENSDB_CACHE_DIR, else
        $XDG_CACHE_HOME/lensdb, else ~/.cache/lensdb."""
        digest = hashlib.sha256(self.url.encode("utf-8")).hexdigest()[:16]
        return cache_dir() / "catalogs" / digest / paths.CATALOG_FILE

    def register(self, con) -> None:
        duckdb_fs.register(con, self.fs)

    def ensure_schema_files(self, *, writer: bool) -> None:
        anchors.ensure_store_anchors(self, writer=writer)


def open_url(text: str) -> Path | RemoteWarehouse:
    """The warehouse a URL names: a local folder for file://, else a RemoteWarehouse."""
    named = urls.parse_url(text)
    if isinstance(named, Path):
        return named
    scheme, root = named
    return RemoteWarehouse(url=f"{scheme}://{root}", protocol=scheme, root=root, fs=urls.filesystem(scheme))


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
        raise WarehouseError(f"cannot {doing} the warehouse {warehouse.url}: {urls.store_reason(exc)}") from None


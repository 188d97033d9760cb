"""Write one run: stream tables into a staging folder, then commit it atomically.

Commits of one warehouse are serialised by a lock file (`<warehouse>/.commit.lock`, an flock
the system releases when its process dies), under which the run id is checked to be new
in every model folder and the staging folder is renamed into `runs/`: of several writers
with the same run id, exactly one commits. Any failure to write (a full disk, a lost
mount) is one line naming the warehouse, and the staging folder is removed.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import socket
import threading
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import WarehouseError
from lensdb.warehouse import anchors, layout
from lensdb.warehouse.schema import with_metadata

COMMIT_LOCK = ".commit.lock"

ROW_GROUP_ROWS = 65_536
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


class RunWriter:
    """Stages a run's tables; `commit()` makes the run visible, anything else removes it.

    Use as a context manager: leaving the block without `commit()` (an error, Ctrl-C)
    deletes the staging folder. A process killed outright leaves its staging folder
    behind, which readers never see and the next writer on this host removes.

    Several processes can write one run (torchrun ranks, lensdb/extract/distributed.py):
    each names its files with its own `file_tag` (`part-rank1-00000.parquet`); one
    writer owns the staging folder and commits, the others `join()` it and `finish()`.
    """

    def __init__(self, warehouse: Path, model: str, run_id: str, *, file_tag: str = ""):
        self.warehouse = warehouse
        self.model = layout.check_model_name(model)
        self.run_id = layout.check_run_id(run_id)
        self._place()
        self.file_tag = file_tag  # inserted in file names, so that several writers can share a folder
        self.owns_staging = True  # False for a writer that joined another's staging folder
        # Keyed by (table, part): a table may be written as several files ("part" names them).
        self._writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self._pending: dict[tuple[str, str], list[pa.RecordBatch]] = {}
        self._pending_rows: dict[tuple[str, str], int] = {}
        self.rows_written: dict[str, int] = {}
        self.committed = False
        self.bytes_committed = 0

    def _place(self) -> None:
        self.target = layout.run_dir(self.warehouse, self.model, self.run_id)
        self.staging = self.warehouse / layout.STAGING_DIR / f"{self.run_id}@{os.getpid()}@{socket.gethostname()}"

    @classmethod
    def join(cls, warehouse: Path, model: str, run_id: str, staging_name: str, *, file_tag: str) -> "RunWriter":
        """A writer adding its own files to the staging folder `staging_name` that another
        writer opened (and will commit or remove); it never commits, and on errors removes
        only its own files."""
        writer = cls(warehouse, model, run_id, file_tag=file_tag)
        writer.staging = warehouse / layout.STAGING_DIR / staging_name
        writer.owns_staging = False
        return writer

    def __enter__(self) -> "RunWriter":
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()

    def open(self) -> None:
        if not self.owns_staging:
            if not self.staging.is_dir():
                raise WarehouseError(f"the staging folder {self.staging} of run {self.run_id} is missing")
            return
        try:
            (self.warehouse / layout.STAGING_DIR).mkdir(parents=True, exist_ok=True)
            remove_stale_folders(self.warehouse / layout.STAGING_DIR)
            self.staging.mkdir()
            probe = self.staging / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            # The views' schema files, so that readers without write access find them.
            anchors.write_schema_anchors(self.warehouse)
        except OSError as exc:
            self.abort()
            raise WarehouseError(f"warehouse is not writable: {self.warehouse} ({_why(exc)})") from None
        if layout.find_run_dirs(self.warehouse, self.run_id):
            self.abort()
            raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")

    def append(self, table: str, data: pa.RecordBatch | pa.Table, schema: pa.Schema, part: str = "part") -> None:
        """Queue rows for `table` (file `<part>-00000.parquet`); written in row groups of about ROW_GROUP_ROWS rows."""
        key = (table, part)
        batches = data.to_batches() if isinstance(data, pa.Table) else [data]
        pending = self._pending.setdefault(key, [])
        for batch in batches:
            if batch.num_rows:
                pending.append(batch)
                self._pending_rows[key] = self._pending_rows.get(key, 0) + batch.num_rows
        with self._writing():
            if key not in self._writers:
                self._open_writer(key, schema)
            if self._pending_rows.get(key, 0) >= ROW_GROUP_ROWS:
                self._flush(key)

    @contextlib.contextmanager
    def _writing(self):
        """Failures to write (a full disk, say) as one line naming the warehouse."""
        try:
            yield
        except OSError as exc:  # pyarrow's I/O errors are OSErrors too
            raise WarehouseError(
                f"cannot write run {self.run_id} to the warehouse {self.warehouse}: {_why(exc)}; nothing was committed"
            ) from None

    def write(self, table: str, data: pa.Table, schema: pa.Schema) -> None:
        self.append(table, data, schema)

    def _open_writer(self, key: tuple[str, str], schema: pa.Schema) -> None:
        table, part = key
        folder = self.staging / table
        folder.mkdir(exist_ok=True)
        self._writers[key] = pq.ParquetWriter(self._file(table, part), with_metadata(schema, table), **PARQUET_OPTIONS)
        self.rows_written.setdefault(table, 0)

    def _flush(self, key: tuple[str, str]) -> None:
        batches = self._pending.pop(key, [])
        self._pending_rows[key] = 0
        if not batches:
            return
        writer = self._writers[key]
        writer.write_table(pa.Table.from_batches(batches).cast(writer.schema))
        self.rows_written[key[0]] += sum(b.num_rows for b in batches)

    def _file(self, table: str, part: str) -> Path:
        return self.staging / table / f"{part}{self.file_tag}-00000.parquet"

    def finish(self) -> None:
        """Write out and close every file of this writer (for a writer that does not commit)."""
        with self._writing():
            for key in list(self._writers):
                self._flush(key)
                self._writers.pop(key).close()
                _fsync_file(self._file(*key))

    @property
    def share_name(self) -> str:
        """What another process needs to `join` this writer (torchrun ranks)."""
        return self.staging.name

    def commit(self, manifest: pa.Table, manifest_schema: pa.Schema) -> Path:
        """Close every table, write the manifest last, and move the run into place."""
        if not self.owns_staging:
            raise WarehouseError("only the writer that opened the staging folder commits the run")
        with self._writing():
            for key in list(self._writers):
                self._flush(key)
                self._writers.pop(key).close()
            self.append("manifest", manifest, manifest_schema)
            self._flush(("manifest", "part"))
            self._writers.pop(("manifest", "part")).close()
            _fsync_tree(self.staging)
            self.target.parent.mkdir(parents=True, exist_ok=True)
        with commit_lock(self.warehouse):
            if layout.find_run_dirs(self.warehouse, self.run_id):
                raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")
            try:
                os.rename(self.staging, self.target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}") from None
                raise WarehouseError(f"could not commit run {self.run_id} to {self.warehouse}: {_why(exc)}") from None
            self.committed = True
        fsync_dir(self.target.parent)
        self.bytes_committed = sum(p.stat().st_size for p in self.target.rglob("*.parquet"))
        return self.target

    def retract(self) -> None:
        """Undo this writer's commit (an import of several runs failed after committing it)."""
        if not self.committed:
            return
        with commit_lock(self.warehouse):
            try:
                os.rename(self.target, self.staging)
            except OSError as exc:
                raise WarehouseError(f"could not take back run {self.run_id} from {self.warehouse}: {_why(exc)}") from None
            self.committed = False
        self.abort()

    def _drop_writers(self) -> list[tuple[str, str]]:
        """Close every open file without flushing what is pending (its files are deleted next)."""
        for writer in self._writers.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - the file is deleted anyway
                pass
        keys = list(self._writers) + list(self._pending)
        self._writers.clear()
        self._pending.clear()
        return keys

    def abort(self) -> None:
        keys = self._drop_writers()
        if self.owns_staging:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        for key in keys:
            self._file(*key).unlink(missing_ok=True)


def run_writer(warehouse, model: str, run_id: str, *, file_tag: str = "") -> RunWriter:
    """The writer for a warehouse: a folder (stage, then rename) or a URL (files in place, then the manifest)."""
    if layout.is_remote(warehouse):
        return RemoteRunWriter(warehouse, model, run_id, file_tag=file_tag)
    return RunWriter(warehouse, model, run_id, file_tag=file_tag)


def joined_writer(warehouse, model: str, run_id: str, share_name: str, *, file_tag: str) -> RunWriter:
    cls = RemoteRunWriter if layout.is_remote(warehouse) else RunWriter
    return cls.join(warehouse, model, run_id, share_name, file_tag=file_tag)


class RemoteRunWriter(RunWriter):
    """Writes a run into an object-store warehouse (lensdb/warehouse/remote.py has the protocol):
    files under the run's final prefix named with this writer's token, the manifest last as
    the commit marker (a conditional put), listing every file and its size. Leaving the block
    without a commit deletes this writer's files; a process killed outright leaves them for
    `lensdb cleanup`."""

    def _place(self) -> None:
        self.prefix = f"{layout.RUNS_DIR}/{layout.MODEL_PREFIX}{layout.model_key(self.model)}/{layout.RUN_PREFIX}{self.run_id}"
        self.target = self.warehouse.url_of(self.warehouse.path(self.prefix))
        self.staging = None
        self.token = secrets.token_hex(6)

    @classmethod
    def join(cls, warehouse, model: str, run_id: str, staging_name: str, *, file_tag: str) -> "RemoteRunWriter":
        writer = cls(warehouse, model, run_id, file_tag=file_tag)
        writer.token = staging_name
        writer.owns_staging = False
        return writer

    @property
    def share_name(self) -> str:
        return self.token

    def open(self) -> None:
        if not self.owns_staging:
            return
        from lensdb.warehouse import remote

        remote.ensure_schema_anchors(self.warehouse, writer=True)  # also shows that the store takes writes
        self._check_run_id_is_new()

    def _check_run_id_is_new(self) -> None:
        for folder in layout.run_folders(self.warehouse):
            if folder.run_id == self.run_id:
                raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")

    @contextlib.contextmanager
    def _writing(self):
        try:
            yield
        except WarehouseError:
            raise
        except OSError as exc:
            raise WarehouseError(
                f"cannot write run {self.run_id} to the warehouse {self.warehouse}: {_why(exc)}; nothing was committed"
            ) from None

    def _open_writer(self, key: tuple[str, str], schema: pa.Schema) -> None:
        table, part = key
        self._writers[key] = pq.ParquetWriter(
            self._file(table, part), with_metadata(schema, table), filesystem=self.warehouse.arrow_fs, **PARQUET_OPTIONS
        )
        self.rows_written.setdefault(table, 0)

    def _file(self, table: str, part: str) -> str:
        return self.warehouse.path(self.prefix, table, f"{part}-{self.token}{self.file_tag}-00000.parquet")

    def finish(self) -> None:
        with self._writing():
            for key in list(self._writers):
                self._flush(key)
                self._writers.pop(key).close()

    def _own_files(self, *, all_ranks: bool) -> dict[str, int]:
        """This writer's files (every rank's with `all_ranks`), relative to the run: name -> size."""
        mark = f"-{self.token}" if all_ranks else f"-{self.token}{self.file_tag}-"
        return {
            rel[len(self.prefix) + 1 :]: entry.size
            for rel, entry in self.warehouse.listing(self.prefix).items()
            if mark in rel.rsplit("/", 1)[-1]
        }

    def commit(self, manifest: pa.Table, manifest_schema: pa.Schema) -> str:
        """Close every file, then put the manifest (listing them) if no manifest is there yet."""
        from lensdb.warehouse import remote

        if not self.owns_staging:
            raise WarehouseError("only the writer that opened the run commits it")
        self.finish()
        files = self._own_files(all_ranks=True)
        schema = with_metadata(manifest_schema, "manifest")
        schema = schema.with_metadata({**schema.metadata, remote.FILES_KEY: json.dumps(files, sort_keys=True).encode()})
        data = remote.parquet_bytes(manifest.cast(schema), **PARQUET_OPTIONS)
        self._check_run_id_is_new()
        try:
            self.warehouse.write_bytes(f"{self.prefix}/{remote.MANIFEST_FILE}", data, exclusive=True)
        except FileExistsError:
            raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}") from None
        self.committed = True
        self.rows_written["manifest"] = manifest.num_rows
        self.bytes_committed = sum(files.values()) + len(data)
        return self.target

    def retract(self) -> None:
        from lensdb.warehouse import remote

        if not self.committed:
            return
        self.warehouse.remove([f"{self.prefix}/{remote.MANIFEST_FILE}"])  # the run leaves every view here
        self.committed = False
        self.abort()

    def abort(self) -> None:
        self._drop_writers()
        try:
            own = self._own_files(all_ranks=self.owns_staging)
            self.warehouse.remove([f"{self.prefix}/{name}" for name in own])
        except WarehouseError:
            pass  # unreachable store: `lensdb cleanup` removes the files later


_held_locks = threading.local()  # the commit locks this thread holds: path -> depth


@contextlib.contextmanager
def commit_lock(warehouse: Path):
    """Hold the warehouse's commit lock (blocking; released when the process dies).
    Re-entrant within a thread: a caller holding it may commit runs (which take it too)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock, the check under it still runs
        yield
        return
    path = warehouse / COMMIT_LOCK
    held = _held_locks.__dict__.setdefault("depth", {})
    key = str(path)
    if held.get(key):
        held[key] += 1
        try:
            yield
        finally:
            held[key] -= 1
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+b")
    except OSError as exc:
        raise WarehouseError(f"cannot lock the warehouse {warehouse} for a commit: {_why(exc)}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        held[key] = 1
        yield
    finally:
        held.pop(key, None)
        handle.close()  # closing releases the lock


def _why(exc: BaseException) -> str:
    """An OS or Arrow I/O error's reason, in one line (Arrow's keep the errno in the text)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    text = " ".join(str(exc).split())
    detail = text.rsplit("Detail: ", 1)[-1]
    return detail or type(exc).__name__


def remove_stale_folders(staging_root: Path) -> None:
    """Delete `<name>@<pid>@<host>` folders (staging, trash) of processes on this host that no longer exist."""
    host = socket.gethostname()
    for folder in staging_root.iterdir():
        if not folder.is_dir():
            continue
        parts = folder.name.split("@")
        if len(parts) != 3 or parts[2] != host or not parts[1].isdigit():
            continue
        if not pid_alive(int(parts[1])):
            shutil.rmtree(folder, ignore_errors=True)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())
        fsync_dir(path if path.is_dir() else path.parent)
    fsync_dir(root)


def fsync_dir(path: Path) -> None:
    """fsync a folder (a rename inside it) or a file; best effort: not every filesystem can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)

"""Write one run into a local warehouse: stream tables into a staging folder, then commit it atomically.

Commits of one warehouse are serialised by a lock file (`<warehouse>/.commit.lock`, an flock
the system releases when its process dies), under which the run id is checked to be new
in every model folder and the staging folder is renamed into `runs/`: of several writers
with the same run id, exactly one commits. Any failure to write (a full disk, a lost
mount) is one line naming the warehouse, and the staging folder is removed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import threading
from pathlib import Path

import pyarrow as pa

from lensdb import files
from lensdb.errors import WarehouseError
from lensdb.warehouse import anchors, paths
from lensdb.warehouse.writer_base import TableWriter, why

COMMIT_LOCK = ".commit.lock"


class RunWriter(TableWriter):
    """Stages a run's tables in `_staging/<run id>@<pid>@<host>/`; `commit()` renames it into runs/.

    Use as a context manager: leaving the block without `commit()` (an error, Ctrl-C)
    deletes the staging folder. A process killed outright leaves its staging folder
    behind, which readers never see and the next writer on this host removes. A writer
    that joined another's staging folder removes only its own files.
    """

    def _place(self) -> None:
        self.target = paths.run_dir(self.warehouse, self.model, self.run_id)
        self.staging = self.warehouse / paths.STAGING_DIR / f"{self.run_id}@{files.owner_tag()}"

    @classmethod
    def join(cls, warehouse: Path, model: str, run_id: str, staging_name: str, *, file_tag: str) -> "RunWriter":
        """A writer adding its own files to the staging folder `staging_name` that another
        writer opened (and will commit or remove); it never commits, and on errors removes
        only its own files."""
        writer = cls(warehouse, model, run_id, file_tag=file_tag)
        writer.staging = warehouse / paths.STAGING_DIR / staging_name
        writer.owns_staging = False
        return writer

    def open(self) -> None:
        if not self.owns_staging:
            if not self.staging.is_dir():
                raise WarehouseError(f"the staging folder {self.staging} of run {self.run_id} is missing")
            return
        try:
            (self.warehouse / paths.STAGING_DIR).mkdir(parents=True, exist_ok=True)
            files.remove_stale_folders(self.warehouse / paths.STAGING_DIR)
            self.staging.mkdir()
            probe = self.staging / ".write-test"
            probe.write_bytes(b"")
            probe.unlink()
            # The views' schema files, so that readers without write access find them.
            anchors.write_schema_anchors(self.warehouse)
        except OSError as exc:
            self.abort()
            raise WarehouseError(f"warehouse is not writable: {self.warehouse} ({why(exc)})") from None
        if self._run_id_taken():
            self.abort()
            raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")

    def _run_id_taken(self) -> bool:
        return any(folder.run_id == self.run_id for folder in paths.list_run_folders(self.warehouse))

    def _table_folder(self, table: str) -> None:
        (self.staging / table).mkdir(exist_ok=True)

    def _file(self, table: str, part: str) -> Path:
        return self.staging / table / f"{part}{self.file_tag}-00000.parquet"

    def _closed(self, path: Path) -> None:
        files.fsync_file(path)

    @property
    def share_name(self) -> str:
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
            files.fsync_tree(self.staging)
            self.target.parent.mkdir(parents=True, exist_ok=True)
        with commit_lock(self.warehouse):
            if self._run_id_taken():
                raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")
            try:
                os.rename(self.staging, self.target)
            except OSError as exc:
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}") from None
                raise WarehouseError(f"could not commit run {self.run_id} to {self.warehouse}: {why(exc)}") from None
            self.committed = True
        files.fsync_dir(self.target.parent)
        self.bytes_committed = sum(p.stat().st_size for p in self.target.rglob("*.parquet"))
        return self.target

    def retract(self) -> None:
        if not self.committed:
            return
        with commit_lock(self.warehouse):
            try:
                os.rename(self.target, self.staging)
            except OSError as exc:
                raise WarehouseError(f"could not take back run {self.run_id} from {self.warehouse}: {why(exc)}") from None
            self.committed = False
        self.abort()

    def abort(self) -> None:
        keys = self._drop_writers()
        if self.owns_staging:
            shutil.rmtree(self.staging, ignore_errors=True)
            return
        for key in keys:
            self._file(*key).unlink(missing_ok=True)


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
        raise WarehouseError(f"cannot lock the warehouse {warehouse} for a commit: {why(exc)}") from None
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        held[key] = 1
        yield
    finally:
        held.pop(key, None)
        handle.close()  # closing releases the lock

"""What every run writer shares: tables streamed as Parquet files in row groups, failures to
write as one line, and the context-manager contract (leaving the block without `commit()`
removes what this writer wrote). Where the files go and how a run is committed is each
store's: writer.py (a folder: stage, then rename) and remote_writer.py (an object store:
files in place, then the manifest).
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod

import pyarrow as pa
import pyarrow.parquet as pq

from lensdb.errors import WarehouseError, folded
from lensdb.warehouse import paths
from lensdb.warehouse.schema import with_metadata

ROW_GROUP_ROWS = 65_536
PARQUET_OPTIONS = dict(compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True)


class TableWriter(ABC):
    """Streams one run's tables; `commit()` makes the run visible, anything else removes it.

    Several processes can write one run (torchrun ranks, lensdb/extract/distributed.py):
    each names its files with its own `file_tag` (`part-rank1-00000.parquet`); one
    writer owns the run and commits, the others `join()` it (by its `share_name`) and `finish()`.
    """

    filesystem = None  # a pyarrow filesystem for the files' paths (None: local paths)

    def __init__(self, warehouse, model: str, run_id: str, *, file_tag: str = ""):
        self.warehouse = warehouse
        self.model = paths.check_model_name(model)
        self.run_id = paths.check_run_id(run_id)
        self._place()
        self.file_tag = file_tag  # inserted in file names, so that several writers can share a run
        self.owns_staging = True  # False for a writer that joined another's run
        # Keyed by (table, part): a table may be written as several files ("part" names them).
        self._writers: dict[tuple[str, str], pq.ParquetWriter] = {}
        self._pending: dict[tuple[str, str], list[pa.RecordBatch]] = {}
        self._pending_rows: dict[tuple[str, str], int] = {}
        self.rows_written: dict[str, int] = {}
        self.committed = False
        self.bytes_committed = 0

    # ------------------------------------------------------------ each store's

    @abstractmethod
    def _place(self) -> None:
        """Set where the run goes (`target`) and where this writer's files go."""

    @abstractmethod
    def _file(self, table: str, part: str):
        """The path of one of this writer's files."""

    @abstractmethod
    def open(self) -> None: ...

    @abstractmethod
    def commit(self, manifest: pa.Table, manifest_schema: pa.Schema):
        """Close every file, write the manifest, and make the run visible; returns where it is."""

    @abstractmethod
    def retract(self) -> None:
        """Undo this writer's commit (an import of several runs failed after committing it)."""

    @abstractmethod
    def abort(self) -> None:
        """Remove what this writer wrote (a writer that owns the run: the whole run)."""

    @property
    @abstractmethod
    def share_name(self) -> str:
        """What another process needs to `join` this writer (torchrun ranks)."""

    def _table_folder(self, table: str) -> None:
        """Make the folder of a table's files, where the store has folders."""

    def _closed(self, path) -> None:
        """A file of this writer's is complete (a local writer fsyncs it)."""

    # ------------------------------------------------------------ shared

    def __enter__(self):
        self.open()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if not self.committed:
            self.abort()

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

    def write(self, table: str, data: pa.Table, schema: pa.Schema) -> None:
        self.append(table, data, schema)

    @contextlib.contextmanager
    def _writing(self):
        """Failures to write (a full disk, say) as one line naming the warehouse."""
        try:
            yield
        except OSError as exc:  # pyarrow's I/O errors are OSErrors too
            raise WarehouseError(
                f"cannot write run {self.run_id} to the warehouse {self.warehouse}: {why(exc)}; nothing was committed"
            ) from None

    def _open_writer(self, key: tuple[str, str], schema: pa.Schema) -> None:
        table, part = key
        self._table_folder(table)
        self._writers[key] = pq.ParquetWriter(
            self._file(table, part), with_metadata(schema, table), filesystem=self.filesystem, **PARQUET_OPTIONS
        )
        self.rows_written.setdefault(table, 0)

    def _flush(self, key: tuple[str, str]) -> None:
        batches = self._pending.pop(key, [])
        self._pending_rows[key] = 0
        if not batches:
            return
        writer = self._writers[key]
        writer.write_table(pa.Table.from_batches(batches).cast(writer.schema))
        self.rows_written[key[0]] += sum(b.num_rows for b in batches)

    def _close_all(self) -> None:
        for key in list(self._writers):
            self._flush(key)
            self._writers.pop(key).close()
            self._closed(self._file(*key))

    def finish(self) -> None:
        """Write out and close every file of this writer (for a writer that does not commit)."""
        with self._writing():
            self._close_all()

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


def why(exc: BaseException) -> str:
    """An OS or Arrow I/O error's reason, in one line (Arrow's keep the errno in the text)."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return folded(exc).rsplit("Detail: ", 1)[-1] or type(exc).__name__

"""Write one run into an object-store warehouse (remote.py has the protocol): files under the
run's final prefix, named with this writer's token, and the manifest last as the commit
marker, by a conditional put, listing every file and its size. Leaving the block without a
commit deletes this writer's files; a process killed outright leaves them for `lensdb cleanup`.
"""

from __future__ import annotations

import json
import secrets

import pyarrow as pa

from lensdb.errors import WarehouseError
from lensdb.warehouse import paths
from lensdb.warehouse.remote_survey import FILES_KEY, MANIFEST_FILE
from lensdb.warehouse.schema import parquet_bytes, with_metadata
from lensdb.warehouse.writer_base import PARQUET_OPTIONS, TableWriter


class RemoteRunWriter(TableWriter):
    """Writes `runs/model=<key>/run=<id>/<table>/<part>-<token>[<file tag>]-00000.parquet`, then the manifest."""

    def _place(self) -> None:
        self.prefix = f"{paths.RUNS_DIR}/{paths.MODEL_PREFIX}{paths.model_key(self.model)}/{paths.RUN_PREFIX}{self.run_id}"
        self.target = self.warehouse.url_of(self.warehouse.path(self.prefix))
        self.token = secrets.token_hex(6)
        self.filesystem = self.warehouse.arrow_fs

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
        self.warehouse.ensure_schema_files(writer=True)  # also shows that the store takes writes
        self._check_run_id_is_new()

    def _check_run_id_is_new(self) -> None:
        for folder in self.warehouse.run_folders():
            if folder.run_id == self.run_id:
                raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}")

    def _file(self, table: str, part: str) -> str:
        return self.warehouse.path(self.prefix, table, f"{part}-{self.token}{self.file_tag}-00000.parquet")

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
        if not self.owns_staging:
            raise WarehouseError("only the writer that opened the run commits it")
        self.finish()
        files = self._own_files(all_ranks=True)
        schema = with_metadata(manifest_schema, "manifest")
        schema = schema.with_metadata({**schema.metadata, FILES_KEY: json.dumps(files, sort_keys=True).encode()})
        data = parquet_bytes(manifest.cast(schema), **PARQUET_OPTIONS)
        self._check_run_id_is_new()
        try:
            self.warehouse.write_bytes(f"{self.prefix}/{MANIFEST_FILE}", data, exclusive=True)
        except FileExistsError:
            raise WarehouseError(f"run id {self.run_id} already exists in {self.warehouse}") from None
        self.committed = True
        self.rows_written["manifest"] = manifest.num_rows
        self.bytes_committed = sum(files.values()) + len(data)
        return self.target

    def retract(self) -> None:
        if not self.committed:
            return
        self.warehouse.remove([f"{self.prefix}/{MANIFEST_FILE}"])  # the run leaves every view here
        self.committed = False
        self.abort()

    def abort(self) -> None:
        self._drop_writers()
        try:
            own = self._own_files(all_ranks=self.owns_staging)
            self.warehouse.remove([f"{self.prefix}/{name}" for name in own])
        except WarehouseError:
            pass  # unreachable store: `lensdb cleanup` removes the files later

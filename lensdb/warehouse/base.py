"""The warehouse's one interface: what lensdb asks of a warehouse, wherever it lives.

`layout.open_warehouse(location)` gives a `Warehouse`; callers never ask which kind it is.

    kind          class                     module          location            commit strategy
    folder        local.LocalWarehouse      local.py        a Path              stage in _staging/, rename into
                                                                                runs/ under a lock (writer.py)
    object store  remote.RemoteWarehouse    remote.py       s3://, gs://, ...   files in place, then the manifest
                  (any fsspec filesystem)   (urls.py)       (the store itself)  by a conditional put
                                                                                (remote_writer.py)

Where do I add a store? A store that fsspec reaches (a new URL scheme) is an object store
already: at most add its package to urls.py's install hints. A store with another commit
protocol is one new module beside local.py and remote.py: a `Warehouse` subclass that
implements every abstract method below (its run writer a writer_base.TableWriter), which
`layout.open_warehouse` returns for its locations.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from lensdb.warehouse.paths import RunFolder


@dataclass
class Survey:
    """The runs of a warehouse as its views see them, from one look at it."""

    folders: list[RunFolder] = field(default_factory=list)  # runs with a manifest (committed or damaged)
    damaged: list = field(default_factory=list)  # health.DamagedRun


@dataclass(frozen=True)
class LeftoverInfo:
    """What a crashed (or losing) writer left, as `lensdb runs --uncommitted` lists it."""

    kind: str  # staging / trash (a local folder), uncommitted (a remote run prefix without a manifest), stray
    run_id: str
    model: str | None
    files: int
    bytes_on_disk: int
    age_seconds: float | None
    removable: bool  # False: a writer on this host still runs, or it is younger than --older-than
    location: str
    _paths: tuple = ()


class Warehouse(ABC):
    """A warehouse: its runs, how they are written, removed and read, and its DuckDB catalog."""

    location: object  # what the rest of lensdb passes around and prints: a Path, or the store itself
    keeps_records_in_runs: bool = False  # damage records may be written in run folders (health.record_data_damage)

    def __str__(self) -> str:
        return str(self.location)

    # ------------------------------------------------------------ the runs

    @abstractmethod
    def exists(self) -> bool:
        """Whether the warehouse is there (a folder, a bucket prefix)."""

    @abstractmethod
    def run_folders(self) -> list[RunFolder]:
        """Every run folder, committed or damaged, sorted by model key and run id."""

    @abstractmethod
    def survey(self) -> Survey:
        """The run folders and the damaged ones among them, from one look at the warehouse."""

    def holds_nothing(self) -> bool:
        """Whether a cheap look, before any catalog is built, shows no run and no stored lens
        (False where a look costs requests: then the session's survey counts the runs)."""
        return False

    @abstractmethod
    def damage_of(self, model_folder: str, run_id: str) -> "object | None":
        """The damage (health.DamagedRun) of the run `model=<key>/run=<id>` whose file a query
        failed to read; None when its files read whole (the query's own error)."""

    @abstractmethod
    def run_data_damage(self, folder: Path | PurePosixPath) -> str | None:
        """Why a run's Parquet files cannot be read to the end, or None (slow: reads them all)."""

    @abstractmethod
    def file_signature(self, folder: Path | PurePosixPath) -> dict[str, list]:
        """A run's files with their sizes and times, as a damage record holds them."""

    # ------------------------------------------------------------ one run folder

    @abstractmethod
    def folder_files(self, folder: Path | PurePosixPath) -> dict[str, int]:
        """Every file of a run folder: path relative to the folder -> bytes."""

    @abstractmethod
    def open_file(self, folder: Path | PurePosixPath, name: str):
        """A run folder's file, as pyarrow reads it (a path or an open file; a context manager)."""

    @abstractmethod
    def shown_folder(self, folder: Path | PurePosixPath):
        """A run folder as lensdb shows it (`lensdb runs`' path): a Path, or a URL."""

    @abstractmethod
    def folder_of_shown(self, shown) -> Path | PurePosixPath:
        """The run folder `shown_folder` showed."""

    def folder_inode(self, folder: Path | PurePosixPath) -> int | None:
        """The folder's inode (a removal, or a new run under the same id, changes it); None
        where folders have none. OSError if the folder is gone."""
        return None

    # ------------------------------------------------------------ writing and removing

    @abstractmethod
    def writer(self, model: str, run_id: str, *, file_tag: str = ""):
        """A run writer (writer_base.TableWriter) with this warehouse's commit strategy."""

    @abstractmethod
    def joined_writer(self, model: str, run_id: str, share_name: str, *, file_tag: str):
        """A writer adding its files to the run another writer opened (`share_name`) and commits."""

    def commit_lock(self):
        """A context in which commits of this warehouse are serialised, where the store can (re-entrant)."""
        return contextlib.nullcontext()

    @abstractmethod
    def remove_runs(self, runs: list[tuple[str, Path | PurePosixPath]]) -> None:
        """Remove (run id, folder) runs: each leaves every view in one step, then its files go."""

    @abstractmethod
    def leftovers(self, older_than_seconds: float) -> list[LeftoverInfo]:
        """What crashed writers left (invisible to the views), and whether each may be removed."""

    @abstractmethod
    def remove_leftover(self, left: LeftoverInfo) -> None: ...

    # ------------------------------------------------------------ the views

    @abstractmethod
    def catalog_path(self) -> Path:
        """The DuckDB catalog file (always local: DuckDB databases cannot live on object storage)."""

    def register(self, con) -> None:
        """Let a DuckDB connection read the warehouse's files."""

    @abstractmethod
    def ensure_schema_files(self, *, writer: bool) -> None:
        """The schema files (anchors.py) the views read first: written where missing (by a
        `writer`, also where out of date). OSError, or WarehouseError, if they cannot be."""

    def linked_data_paths(self) -> list[Path]:
        """The symbolic links among the warehouse's data (paths.linked_data_paths): their real
        places are where a confined DuckDB may read too."""
        return []

    def lens_root(self) -> Path | None:
        """The folder of the stored tuned lenses (lenses/); None where the store keeps none."""
        return None

    def stored_lens_files(self) -> list[Path]:
        """The stored lenses' tables (lenses/<name>/lens.parquet, v1.lenses)."""
        return []

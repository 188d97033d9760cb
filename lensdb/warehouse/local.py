"""A warehouse in a local (or mounted) folder: runs are staged in `_staging/` and renamed into
`runs/` under the commit lock (writer.py); `lensdb rm` renames a run into `_trash/` (out of
every view in one step) before deleting it. The folder layout is in paths.py.

A process killed between the two steps of a removal leaves the whole run in `_trash/`
(invisible), which the next removal on this host deletes; killed before the rename, it
leaves the whole run.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from lensdb import files
from lensdb.errors import WarehouseError
from lensdb.warehouse import anchors, health, paths, writer
from lensdb.warehouse.base import LeftoverInfo, Survey, Warehouse


@dataclass(frozen=True, eq=False)
class LocalWarehouse(Warehouse):
    location: Path

    keeps_records_in_runs = True

    def exists(self) -> bool:
        return self.location.is_dir()

    def run_folders(self) -> list[paths.RunFolder]:
        return paths.list_run_folders(self.location)

    def survey(self) -> Survey:
        folders = self.run_folders()
        return Survey(folders=folders, damaged=health.damaged_runs(self.location, folders))

    def holds_nothing(self) -> bool:
        return not self.run_folders() and not self.stored_lens_files()

    def damage_of(self, model_folder: str, run_id: str):
        folder = paths.RunFolder(
            path=self.location / paths.RUNS_DIR / model_folder / f"{paths.RUN_PREFIX}{run_id}",
            model_key=model_folder[len(paths.MODEL_PREFIX) :],
            run_id=run_id,
        )
        # A query may name a run's file itself (a missing one, say): only real damage counts.
        reason = health.run_damage(folder) or health.run_data_damage(folder.path)
        if reason is None:
            return None
        return health.DamagedRun(model=folder.model, run_id=run_id, path=folder.path, reason=reason)

    def run_data_damage(self, folder) -> str | None:
        return health.run_data_damage(Path(folder))

    def file_signature(self, folder) -> dict[str, list]:
        return health.local_file_signature(Path(folder))

    # ------------------------------------------------------------ one run folder

    def folder_files(self, folder) -> dict[str, int]:
        found = {}
        for path in Path(folder).rglob("*"):
            try:
                if path.is_file():
                    found[path.relative_to(folder).as_posix()] = path.stat().st_size
            except OSError:
                continue
        return found

    def open_file(self, folder, name: str):
        return contextlib.nullcontext(Path(folder) / name)

    def shown_folder(self, folder) -> Path:
        return Path(folder)

    def folder_of_shown(self, shown) -> Path:
        return Path(shown)

    def folder_inode(self, folder) -> int:
        return os.stat(folder).st_ino

    # ------------------------------------------------------------ writing and removing

    def writer(self, model: str, run_id: str, *, file_tag: str = "") -> writer.RunWriter:
        return writer.RunWriter(self.location, model, run_id, file_tag=file_tag)

    def joined_writer(self, model: str, run_id: str, share_name: str, *, file_tag: str) -> writer.RunWriter:
        return writer.RunWriter.join(self.location, model, run_id, share_name, file_tag=file_tag)

    def commit_lock(self):
        return writer.commit_lock(self.location)

    def remove_runs(self, runs) -> None:
        trash = self.location / paths.TRASH_DIR
        try:
            trash.mkdir(exist_ok=True)
            files.remove_stale_folders(trash)
        except OSError as exc:
            raise WarehouseError(f"warehouse is not writable: {self.location} ({exc.strerror or exc})") from None
        for run_id, folder in runs:
            target = trash / f"{run_id}.{secrets.token_hex(4)}@{files.owner_tag()}"
            try:
                os.rename(folder, target)  # the run leaves every view here
            except OSError as exc:
                raise WarehouseError(f"could not remove run {run_id}: {exc.strerror or exc}") from None
            files.fsync_dir(Path(folder).parent)
            shutil.rmtree(target, ignore_errors=True)

    def leftovers(self, older_than_seconds: float) -> list[LeftoverInfo]:
        """Staging and trash folders: a writer's or a removal's that did not finish."""
        found = []
        for kind, name in (("staging", paths.STAGING_DIR), ("trash", paths.TRASH_DIR)):
            folder = self.location / name
            for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
                if not entry.is_dir():
                    continue
                inside = [p for p in entry.rglob("*") if p.is_file()]
                times = [p.stat().st_mtime for p in inside] or [entry.stat().st_mtime]
                age = max(0.0, time.time() - max(times))
                owner = files.owner_of_folder(entry.name)
                alive = owner is not None and files.owner_alive_here(*owner)
                dead = owner is not None and files.owner_dead_here(*owner)  # removable whatever its age
                found.append(
                    LeftoverInfo(
                        kind=kind,
                        run_id=entry.name.split("@")[0].split(".")[0],
                        model=None,
                        files=len(inside),
                        bytes_on_disk=sum(p.stat().st_size for p in inside),
                        age_seconds=age,
                        removable=not alive and (age >= older_than_seconds or dead),
                        location=str(entry),
                        _paths=(entry,),
                    )
                )
        return found

    def remove_leftover(self, left: LeftoverInfo) -> None:
        shutil.rmtree(left._paths[0], ignore_errors=True)

    # ------------------------------------------------------------ the views

    def catalog_path(self) -> Path:
        return self.location / paths.CATALOG_FILE

    def ensure_schema_files(self, *, writer: bool) -> None:
        anchors.write_schema_anchors(self.location)  # only those missing or out of date

    def linked_data_paths(self) -> list[Path]:
        return paths.linked_data_paths(self.location)

    def lens_root(self) -> Path:
        return self.location / paths.LENSES_DIR

    def stored_lens_files(self) -> list[Path]:
        return list(self.location.glob("lenses/*/lens.parquet"))


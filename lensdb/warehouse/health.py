"""Which committed run folders are damaged: a manifest or a Parquet file that cannot be read.

Reads the folder tree and the Parquet footers directly (never the views), so one damaged
run never hides the others. A folder under runs/ without a manifest is damaged too: the
writer renames a run into runs/ only after its manifest is written.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from lensdb.warehouse import layout


@dataclass(frozen=True)
class DamagedRun:
    model: str
    run_id: str
    path: Path
    reason: str


def damaged_runs(warehouse: Path) -> list[DamagedRun]:
    """Every run folder of `warehouse` that a query could trip over, with the first problem found."""
    damaged = []
    for folder in layout.run_folders(Path(warehouse)):
        reason = _problem(folder)
        if reason:
            damaged.append(
                DamagedRun(model=layout.model_of_folder(folder), run_id=layout.run_id_of_folder(folder), path=folder, reason=reason)
            )
    return damaged


def _problem(folder: Path) -> str | None:
    manifests = sorted((folder / "manifest").glob("*.parquet"))
    if not manifests:
        return "no manifest"
    for path in sorted(folder.rglob("*.parquet")):
        try:
            if path.parent.name == "manifest":
                pq.read_table(path)  # one row: read whole, it is what every view filters on
            else:
                pq.read_metadata(path)
        except (OSError, ValueError) as exc:  # pyarrow raises ArrowInvalid (a ValueError) or OSError
            return f"unreadable {path.relative_to(folder)}: {_one_line(exc)}"
    return None


def _one_line(exc: Exception) -> str:
    text = " ".join(str(exc).split())
    return text[:160] if text else type(exc).__name__

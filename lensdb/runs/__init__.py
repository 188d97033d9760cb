"""Run management: list, show and remove the runs of a warehouse (`lensdb runs`, `show`, `rm`,
`cleanup`).

    listing.py  the run folders, read directly (not through the views): a damaged run is listed
    details.py  `lensdb show`: manifest, tables, diagnostics (lensdb/queries/show/*.sql)
    changes.py  removing runs and what crashed writers left, through the warehouse's interface
    text.py     tables, text and JSON for people and scripts
"""

from lensdb.runs.changes import cleanup, leftovers, remove_runs
from lensdb.runs.details import RunDetails, show_run
from lensdb.runs.listing import DAMAGED, RunInfo, TableStats, existing_warehouse, find_runs, human_size, list_runs, runs_to_remove
from lensdb.runs.text import details_as_dict, format_details, leftovers_table, runs_table, shown_path
from lensdb.warehouse.base import LeftoverInfo

__all__ = [
    "DAMAGED", "LeftoverInfo", "RunDetails", "RunInfo", "TableStats", "cleanup", "details_as_dict", "existing_warehouse",
    "find_runs", "format_details", "human_size", "leftovers", "leftovers_table", "list_runs", "remove_runs", "runs_table",
    "runs_to_remove", "show_run", "shown_path",
]

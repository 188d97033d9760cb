"""Installing the views: each SQL file rendered (its placeholders filled in as data) and run
in one transaction, with the versions, hashes and fingerprint recorded in `lensdb_meta`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lensdb.catalog.sqlfiles import VIEW_VERSIONS, sql_files, sql_hashes
from lensdb.warehouse import layout
from lensdb.warehouse.health import DamagedRun

META_SCHEMA = "lensdb_meta"
SKIP_VARIABLE = "lensdb_skip_runs"
DAMAGED_VARIABLE = "lensdb_damaged_runs"
DAMAGED_TYPE = "STRUCT(model VARCHAR, run_id VARCHAR, folder VARCHAR, reason VARCHAR)[]"
LATEST_ONLY_VARIABLE = "lensdb_latest_only"  # SET VARIABLE ... = true: every view keeps only v1.latest_runs' runs
# Part of the fingerprint: bump when the way the views are rendered changes.
LAYOUT_VERSION = "2"
_PLACEHOLDER = re.compile(r"\{\{(ROOT|SKIP_RUNS|DAMAGED_RUNS)\}\}")


@dataclass(frozen=True)
class Root:
    """What the views' globs start with: the warehouse itself, or a folder of this user's
    that links to its runs (when the warehouse's path cannot be a DuckDB glob, or its schema
    files cannot be written)."""

    warehouse: Path
    path: Path

    @property
    def linked(self) -> bool:
        return self.path != self.warehouse


def render(text: str, root: Root | Path, damaged: list[DamagedRun] | tuple = ()) -> str:
    """The SQL of a file with its placeholders filled in as data: the root as an escaped
    glob inside a string literal, the damaged runs as list literals. Comment lines keep
    their placeholders' names, so that no value (a path with a newline, say) leaves a comment."""
    if isinstance(root, Path):
        root = Root(root, root)
    values = {
        "ROOT": layout.glob_literal(str(root.path)).replace("'", "''"),
        "SKIP_RUNS": _skip_literal(damaged),
        "DAMAGED_RUNS": _damaged_literal(damaged),
    }
    lines = []
    for line in text.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            lines.append(_PLACEHOLDER.sub(lambda m: f"<{m.group(1).lower()}>", line))
        else:
            lines.append(_PLACEHOLDER.sub(lambda m: values[m.group(1)], line))
    return "".join(lines)


def _skip_literal(damaged) -> str:
    return "[" + ", ".join(layout.sql_string(run.folder_key) for run in damaged) + "]::VARCHAR[]"


def _damaged_literal(damaged) -> str:
    rows = [
        "{" + ", ".join(f"'{key}': {layout.sql_string(value)}" for key, value in damaged_row(run).items()) + "}"
        for run in damaged
    ]
    return "[" + ", ".join(rows) + f"]::{DAMAGED_TYPE}"


def damaged_row(run: DamagedRun) -> dict[str, str]:
    return {"model": run.model, "run_id": run.run_id, "folder": f"{layout.RUNS_DIR}/{run.folder_key}", "reason": run.reason}


def fingerprint(root: Root, damaged) -> dict[str, str]:
    """What a catalog was built from: every SQL file's hash, the warehouse, the root, the damaged runs."""
    return sql_hashes() | {
        "warehouse": str(root.warehouse),
        "root": str(root.path),
        "layout": LAYOUT_VERSION,
        "damaged": "\n".join(run.folder_key for run in damaged),
    }


def install(root: Root | Path, con, damaged=()) -> None:
    """(Re)create every view in `con` and record versions, hashes and the fingerprint. The root's
    schema files must be in place (cache.view_root; describe writes them into its empty root)."""
    if isinstance(root, Path):
        root = Root(root, root)
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(f"CREATE SCHEMA IF NOT EXISTS {META_SCHEMA}")
        con.execute(
            f"CREATE OR REPLACE TABLE {META_SCHEMA}.views (name VARCHAR, view_version VARCHAR, file VARCHAR, "
            "version VARCHAR, sql_sha256 VARCHAR, installed_at TIMESTAMP DEFAULT current_timestamp)"
        )
        con.execute(f"CREATE OR REPLACE TABLE {META_SCHEMA}.fingerprint (key VARCHAR, value VARCHAR)")
        for view_version in VIEW_VERSIONS:
            for sql_file in sql_files(view_version):
                con.execute(render(sql_file.text, root, damaged))
                for name in sql_file.defines:
                    con.execute(
                        f"INSERT INTO {META_SCHEMA}.views (name, view_version, file, version, sql_sha256) VALUES (?, ?, ?, ?, ?)",
                        [name, view_version, sql_file.path.name, sql_file.version, sql_file.sha256],
                    )
        con.executemany(f"INSERT INTO {META_SCHEMA}.fingerprint VALUES (?, ?)", list(fingerprint(root, damaged).items()))
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def set_variables(con, damaged) -> None:
    con.execute(f"SET VARIABLE {SKIP_VARIABLE} = ?::VARCHAR[]", [[run.folder_key for run in damaged]])
    con.execute(f"SET VARIABLE {DAMAGED_VARIABLE} = ?::{DAMAGED_TYPE}", [[damaged_row(run) for run in damaged]])


def latest_only(con) -> None:
    """From now on, every view of `con` shows only the latest committed run of each model and prompt set."""
    con.execute(f"SET VARIABLE {LATEST_ONLY_VARIABLE} = true")

"""`lensdb runs --uncommitted` and `lensdb cleanup` on a local warehouse: staging and trash
folders of processes that no longer run are listed and removed; a live writer's is kept."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import psutil

from lensdb import files, runs
from lensdb.warehouse import layout
from tests.cli_helpers import run_cli
from tests.warehouse_fixtures import build_warehouse


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_cleanup_removes_what_dead_writers_left_and_keeps_live_ones(tmp_path):
    warehouse = build_warehouse(tmp_path / "wh")
    host = socket.gethostname()
    dead = warehouse / layout.STAGING_DIR / f"r-dead@{_dead_pid()}@{host}"
    live = warehouse / layout.STAGING_DIR / f"r-live@{os.getpid()}@{host}"
    trash = warehouse / layout.TRASH_DIR / f"r-gone.abcd1234@{_dead_pid()}@{host}"
    for folder in (dead, live, trash):
        (folder / "records").mkdir(parents=True)
        (folder / "records" / "part-00000.parquet").write_bytes(b"x" * 100)
    before = {run.run_id for run in runs.list_runs(warehouse)}

    listed = run_cli("runs", "--uncommitted", "--format", "json", "--warehouse", warehouse)
    assert listed.exit_code == 0, listed.stderr
    rows = {row["run_id"]: row for row in json.loads(listed.stdout)}
    assert set(rows) >= {"r-dead", "r-live", "r-gone"}
    assert rows["r-dead"]["removable"] and rows["r-gone"]["removable"] and not rows["r-live"]["removable"]
    assert rows["r-dead"]["kind"] == "staging" and rows["r-gone"]["kind"] == "trash"

    dry = run_cli("cleanup", "--dry-run", "--warehouse", warehouse)
    assert dry.exit_code == 0 and "would remove staging r-dead" in dry.stdout and dead.is_dir()

    done = run_cli("cleanup", "--warehouse", warehouse)
    assert done.exit_code == 0, done.stderr
    assert not dead.exists() and not trash.exists() and live.is_dir()
    assert {run.run_id for run in runs.list_runs(warehouse)} == before  # committed runs untouched


def test_cleanup_refuses_a_bad_age(tmp_path):
    warehouse = build_warehouse(tmp_path / "wh")
    result = run_cli("cleanup", "--older-than", "soon", "--warehouse", warehouse)
    assert result.exit_code != 0 and "--older-than" in result.stderr


def test_a_killed_writer_not_yet_reaped_counts_as_dead(tmp_path):
    """A killed writer whose parent has not reaped it (a zombie: in containers whose init reaps
    slowly, every killed extract is one for a while) no longer writes: its staging folder goes."""
    writer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        writer.kill()
        deadline = time.monotonic() + 30
        while psutil.Process(writer.pid).status() != psutil.STATUS_ZOMBIE:  # killed, not waited for
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert files.owner_dead_here(str(writer.pid), socket.gethostname())
        staging = tmp_path / "_staging"
        (staging / f"r-killed@{writer.pid}@{socket.gethostname()}" / "records").mkdir(parents=True)
        (staging / f"r-live@{os.getpid()}@{socket.gethostname()}").mkdir()
        files.remove_stale_folders(staging)
        assert [p.name for p in staging.iterdir()] == [f"r-live@{os.getpid()}@{socket.gethostname()}"]
    finally:
        writer.wait()
    assert files.owner_dead_here(str(writer.pid), socket.gethostname())  # reaped: gone for good


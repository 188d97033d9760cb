"""Warehouses on object storage (issue 11, items 1, 2 and 6) against a real S3 API server.

moto's server mode runs on localhost (tests/object_store.py); lensdb talks to it through
s3fs as it would to AWS or MinIO, with the credentials and endpoint in the standard AWS_*
variables only. Models are the tiny random ones of conftest.py; extracts run in this process
(the CLI through click's runner) or as real `python -m lensdb` processes where concurrency,
kills and a second reader are the point.

Every command's output and every local catalog cache is kept in TRANSCRIPT, so that the last
test can check that the secret key appears nowhere lensdb wrote or printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import lensdb
from lensdb import catalog
from lensdb.warehouse import layout, remote, schema
from lensdb.warehouse.writer import RemoteRunWriter, run_writer
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import LEGACY_RUN
from tests.object_store import ACCESS_KEY, SECRET_KEY, s3_env, s3_server  # noqa: F401 - fixtures

REPO = Path(__file__).resolve().parent.parent
EXTRACT = ["--device", "cpu", "--batch-size", "4"]


@dataclass
class Transcript:
    """What the tests ran and where lensdb wrote locally: searched for secrets at the end."""

    outputs: list[tuple[str, str]] = field(default_factory=list)  # (command, stdout + stderr)
    caches: set[Path] = field(default_factory=set)  # $LENSDB_CACHE_DIR folders

    def record(self, command, text: str) -> None:
        self.outputs.append((" ".join(map(str, command)), text))


TRANSCRIPT = Transcript()


def cli(s3_env, *args):
    """`lensdb ARGS` in this process (the AWS_* variables of s3_env are set), recorded."""
    TRANSCRIPT.caches.add(Path(s3_env.env["LENSDB_CACHE_DIR"]))
    result = run_cli(*args)
    TRANSCRIPT.record(args, result.stdout + result.stderr)
    return result


def ok(s3_env, *args) -> str:
    result = cli(s3_env, *args)
    assert result.exit_code == 0, result.stderr
    return result.stdout


def process_env(s3_env, **more) -> dict[str, str]:
    return s3_env.subprocess_env(PYTHONPATH=str(REPO), PYTHONWARNINGS="ignore", **more)


def spawn(env: dict[str, str], *args, script: Path | None = None) -> subprocess.Popen:
    """`python -m lensdb ARGS` (or `python SCRIPT ARGS`) as a process of its own."""
    head = [sys.executable, str(script)] if script else [sys.executable, "-m", "lensdb"]
    TRANSCRIPT.caches.add(Path(env["LENSDB_CACHE_DIR"]))
    return subprocess.Popen([*head, *map(str, args)], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    TRANSCRIPT.record(process.args, stdout + stderr)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_process(env, *args, timeout: float = 300) -> subprocess.CompletedProcess:
    return finish(spawn(env, *args), timeout)


def objects(s3_env, prefix: str = "wh") -> dict[str, int]:
    """Every object under s3://bucket/prefix, read with a filesystem of the test's own: key -> size."""
    fs = s3_env.filesystem()
    try:
        found = fs.find(f"{s3_env.bucket}/{prefix}", detail=True)
    except FileNotFoundError:
        return {}
    return {path[len(s3_env.bucket) + 1 :]: info["size"] for path, info in found.items()}


def run_objects(s3_env, run_id: str, prefix: str = "wh") -> dict[str, int]:
    return {key: size for key, size in objects(s3_env, prefix).items() if f"/{layout.RUN_PREFIX}{run_id}/" in key}


def public_views() -> list[str]:
    return sorted(name for name, (definition, _file) in catalog.definitions().items() if definition.public and definition.kind == "view")


def view_rows(view: str, warehouse, leave_out: set[str]) -> tuple[list[str], list[str], set[str]]:
    """`SELECT * FROM view` without the columns `leave_out`: (its columns and types, its rows as
    exact reprs, sorted: equal tables whatever the row order, floats to the last bit; the
    columns left out)."""
    table = lensdb.query(f"SELECT * FROM {view}", warehouse)
    dropped = leave_out & set(table.column_names)
    table = table.drop_columns(sorted(dropped))
    return [f"{f.name} {f.type}" for f in table.schema], sorted(repr(row) for row in table.to_pylist()), dropped


# --- 1. every view over s3:// equals a local warehouse of the same runs -----------------------


def write_fixture_runs(warehouse) -> None:
    """The golden fixture warehouse's runs (tests/warehouse_fixtures.py), through lensdb's
    writer for that warehouse: hand-made records that reach every branch of the views."""
    for run in wf.fixture_runs():
        with run_writer(warehouse, run.model, run.run_id) as writer:
            wf._stage(writer, run)
            writer.commit(wf.manifest_table(run), schema.MANIFEST)


def test_every_view_over_s3_equals_a_local_warehouse_of_the_same_runs(s3_env, tiny_llama, tiny_gpt2, tiny_prompts, tmp_path):
    local, url = tmp_path / "local", s3_env.url()
    for warehouse in (local, url):
        # Same model, prompts, run id and seed: the records are deterministic on the CPU.
        ok(s3_env, "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, *EXTRACT, "--run-id", "llama-1", "--seed", 7, "--keep-residuals", "--quiet")
        ok(s3_env, "extract", tiny_gpt2, "--prompts", tiny_prompts, "--warehouse", warehouse, *EXTRACT, "--run-id", "gpt2-1", "--seed", 7, "--quiet")
        write_fixture_runs(layout.resolve_warehouse(str(warehouse)))
    assert {f.run_id for f in layout.run_folders(remote.open_url(url))} == {"llama-1", "gpt2-1", *(r.run_id for r in wf.fixture_runs())}

    # Columns that differ between two extracts of the same run, and why:
    differ = {
        "created_at",  # the wall-clock start of each extract
        "finished_at",  # its wall-clock commit
        "load_seconds",  # a timing
        "load_peak_host_rss_bytes",  # this test process's resident memory, which grows from one extract to the next
        "peak_host_rss_bytes",  # the same
    }
    compared, dropped = {}, set()
    for view in public_views():
        columns, expected, left_out = view_rows(view, local, differ)
        assert view_rows(view, url, differ) == (columns, expected, left_out), view
        compared[view], dropped = len(expected), dropped | left_out
    # Not vacuous: every view has rows, but the damaged-runs list (none here) and v1.lenses
    # (stored tuned lenses: none in this warehouse); and every column named above exists.
    assert {view for view, rows in compared.items() if rows == 0} == {"v1.damaged_runs", "v1.lenses"}, compared
    assert dropped == differ

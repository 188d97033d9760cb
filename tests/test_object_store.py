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


# --- 2. import-legacy into s3://, export from it ----------------------------------------------


def exported(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def test_import_legacy_into_s3_exports_what_a_local_import_exports(s3_env, tmp_path):
    if not LEGACY_RUN.is_dir():
        pytest.skip("../shared/fixtures/legacy-run-2025-08-30 is not available")
    local, url = tmp_path / "local", s3_env.url()
    for warehouse in (local, url):
        imported = ok(s3_env, "import-legacy", LEGACY_RUN, "--warehouse", warehouse)
        assert imported.count(" run ") == 3 and "already imported" not in imported
        ok(s3_env, "export", "--warehouse", warehouse, "--out", tmp_path / f"export-{'s3' if warehouse == url else 'local'}")
    from_s3, from_local = exported(tmp_path / "export-s3"), exported(tmp_path / "export-local")
    assert len(from_s3) == 9 and from_s3 == from_local
    # And both are the legacy files themselves, byte for byte (README: import, then export).
    assert from_s3 == {name: (LEGACY_RUN / name).read_bytes() for name in from_s3}

    # Importing the same files again is recognised from the manifests in the bucket.
    before = objects(s3_env)
    again = ok(s3_env, "import-legacy", LEGACY_RUN, "--warehouse", url)
    runs = json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))
    assert len(runs) == 3
    for run in runs:
        assert f"{run['model']}  already imported as run {run['run_id']}" in again
    assert objects(s3_env) == before, "a repeated import writes nothing"


# --- 3. runs, show, rm against s3:// ------------------------------------------------------------


def extract_into(s3_env, model: Path, prompts: Path, warehouse, run_id: str) -> str:
    return ok(s3_env, "extract", model, "--prompts", prompts, "--warehouse", warehouse, *EXTRACT, "--run-id", run_id, "--quiet").strip()


def records_per_run(warehouse) -> dict[str, int]:
    table = lensdb.query("SELECT run_id, count(*) AS n FROM v1.records GROUP BY run_id", warehouse)
    return dict(zip(table.column("run_id").to_pylist(), table.column("n").to_pylist()))


def test_runs_show_and_rm_against_s3(s3_env, tiny_llama, tiny_gpt2, tiny_prompts):
    url = s3_env.url()
    assert extract_into(s3_env, tiny_llama, tiny_prompts, url, "run-a") == "run-a"
    assert extract_into(s3_env, tiny_gpt2, tiny_prompts, url, "run-b") == "run-b"
    records = records_per_run(url)
    assert set(records) == {"run-a", "run-b"}

    # runs: read from the objects themselves (sizes, footers) and agreeing with the views.
    listed = {run["run_id"]: run for run in json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))}
    for run_id, model in (("run-a", tiny_llama.name), ("run-b", tiny_gpt2.name)):
        run = listed[run_id]
        assert (run["model"], run["status"], run["damaged"], run["records"]) == (model, "committed", None, records[run_id])
        assert run["bytes_on_disk"] == sum(run_objects(s3_env, run_id).values()) > 0
        assert run["path"] == f"{url}/runs/model={model}/run={run_id}"
    table = ok(s3_env, "runs", "--warehouse", url, "--model", tiny_gpt2.name)
    assert "run-b" in table and "run-a" not in table

    # show: the manifest, each table's rows, the diagnostics (read through the views).
    shown = json.loads(ok(s3_env, "show", "run-a", "--warehouse", url, "--format", "json"))
    assert (shown["manifest"]["run_id"], shown["manifest"]["model"], shown["run"]["status"]) == ("run-a", tiny_llama.name, "committed")
    assert shown["tables"]["records"]["rows"] == records["run-a"]
    assert sum(stats["bytes_on_disk"] for stats in shown["tables"].values()) == listed["run-a"]["bytes_on_disk"]
    assert shown["note"] is None
    assert {row["lens"] for row in shown["diagnostics"]} == {"norm", "final_ln", "raw"}
    text = ok(s3_env, "show", "run-a", "--warehouse", url)
    assert text.startswith("run          run-a\n") and f"{url}/runs/model={tiny_llama.name}/run=run-a" in text

    # rm with an unknown id removes nothing; rm run-a removes every object of it and only those.
    before = objects(s3_env)
    assert_one_line_error(cli(s3_env, "rm", "run-a", "no-such-run", "--yes", "--warehouse", url), "no run no-such-run in")
    assert objects(s3_env) == before
    assert ok(s3_env, "rm", "run-a", "--yes", "--warehouse", url).startswith("removed run-a  (")
    after = objects(s3_env)
    assert run_objects(s3_env, "run-a") == {}
    assert after == {key: size for key, size in before.items() if "/run=run-a/" not in key}
    assert [run["run_id"] for run in json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))] == ["run-b"]
    assert records_per_run(url) == {"run-b": records["run-b"]}
    assert remote.survey(remote.open_url(url)).leftovers == []

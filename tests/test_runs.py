"""Run management: `lensdb runs` (damaged runs listed too), `lensdb show`, `lensdb rm` (atomic:
a killed rm leaves the whole run or nothing visible), v1.latest_runs and --latest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import lensdb
from lensdb import runs
from lensdb.warehouse import health
from tests import warehouse_fixtures as wf
from tests.conftest import LEGACY_RUN
from tests.cli_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent

# Every public view and what identifies a row's run there.
VIEWS = (
    "v1.runs", "v1.latest_runs", "v1.prompts", "v1.records", "v1.residuals", "v1.final_predictions", "v1.vocab",
    "v1.pure_next_token", "v1.diagnostics", "v1.control_summary", "v1.ablation_summary", "v1.raw_lens_check",
    "v1.raw_lens_summary", "v1.last_layer_consistency",
)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return wf.build_warehouse(tmp_path_factory.mktemp("runs") / "pristine")


@pytest.fixture
def warehouse(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "warehouse", symlinks=True))


def rows_per_run(warehouse: Path, latest: bool = False) -> dict[str, dict[str, int]]:
    """view -> run_id -> rows, for every public view (one connection, as a DuckDB client would)."""
    from lensdb import catalog

    sql = " UNION ALL ".join(f"SELECT '{view}' AS view, run_id, count(*) AS n FROM {view} GROUP BY run_id" for view in VIEWS)
    con = lensdb.connect(warehouse, read_only=True)
    try:
        if latest:
            catalog.latest_only(con)
        rows = con.execute(sql).fetchall()
    finally:
        con.close()
    counts: dict[str, dict[str, int]] = {view: {} for view in VIEWS}
    for view, run_id, n in rows:
        counts[view][run_id] = n
    return counts


def without(counts: dict[str, dict[str, int]], run_id: str) -> dict[str, dict[str, int]]:
    return {view: {run: n for run, n in per_run.items() if run != run_id} for view, per_run in counts.items()}


def folder_bytes(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        total += sum(os.path.getsize(os.path.join(root, name)) for name in files)
    return total


def run_folder(warehouse: Path, model: str, run_id: str) -> Path:
    from urllib.parse import quote

    return warehouse / "runs" / f"model={quote(model, safe='-_.')}" / f"run={run_id}"


# ---------------------------------------------------------------- lensdb runs


def test_runs_lists_every_run_folder_with_counts_from_the_views(warehouse):
    listed = {run.run_id: run for run in runs.list_runs(warehouse)}
    assert set(listed) == set(wf.COMMITTED_RUNS) | {wf.RUN_NO_MANIFEST}  # _staging/ is not a run folder
    records = lensdb.query("SELECT run_id, count(*) AS n FROM v1.records GROUP BY run_id", warehouse=warehouse).to_pylist()
    prompts = lensdb.query("SELECT run_id, count(*) AS n FROM v1.prompts GROUP BY run_id", warehouse=warehouse).to_pylist()
    manifests = {row["run_id"]: row for row in lensdb.query("SELECT * FROM v1.runs", warehouse=warehouse).to_pylist()}
    for row in records:
        assert listed[row["run_id"]].records == row["n"]
    for row in prompts:
        assert listed[row["run_id"]].prompts == row["n"]
    for run_id in wf.COMMITTED_RUNS:
        run, manifest = listed[run_id], manifests[run_id]
        assert (run.model, run.source, run.status, run.prompt_set, run.created_at) == (
            manifest["model"], manifest["source"], "committed", manifest["prompt_set"], manifest["created_at"]
        )
        assert run.damaged is None
        assert run.bytes_on_disk == folder_bytes(run.path)
    orphan = listed[wf.RUN_NO_MANIFEST]
    assert (orphan.status, orphan.damaged, orphan.model, orphan.source) == ("damaged", "manifest missing", wf.MODEL_B, None)


def test_runs_are_listed_by_model_then_creation_time(warehouse):
    order = [run.run_id for run in runs.list_runs(warehouse)]
    assert order.index(wf.RUN_A1) == order.index(wf.RUN_A2) - 1  # model A: 2025-01 then 2025-02
    assert [run.model for run in runs.list_runs(warehouse)] == sorted(run.model for run in runs.list_runs(warehouse))


def test_a_damaged_run_is_listed_and_hides_no_other_run(warehouse):
    bad = run_folder(warehouse, wf.MODEL_A, wf.RUN_A1) / "records" / "part-00000.parquet"
    bad.write_bytes(b"not parquet" * 40)
    manifest = next((run_folder(warehouse, wf.MODEL_B, wf.RUN_B1) / "manifest").glob("*.parquet"))
    manifest.write_bytes(manifest.read_bytes()[:-40])  # a truncated manifest: its footer is gone

    result = run_cli("runs", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    listed = {row["run_id"]: row for row in json.loads(result.stdout)}
    assert set(listed) == set(wf.COMMITTED_RUNS) | {wf.RUN_NO_MANIFEST}
    assert listed[wf.RUN_A1]["status"] == "damaged" and "records/part-00000.parquet" in listed[wf.RUN_A1]["damaged"]
    assert listed[wf.RUN_A1]["model"] == wf.MODEL_A and listed[wf.RUN_A1]["source"] == "extract"  # its manifest still reads
    assert listed[wf.RUN_B1]["status"] == "damaged" and "manifest" in listed[wf.RUN_B1]["damaged"]
    assert listed[wf.RUN_B1]["model"] == wf.MODEL_B  # from the folder name
    for run_id in (wf.RUN_A2, wf.RUN_LEGACY):
        assert listed[run_id]["status"] == "committed" and listed[run_id]["damaged"] is None
    assert {d.run_id for d in health.damaged_runs(warehouse)} == {wf.RUN_A1, wf.RUN_B1, wf.RUN_NO_MANIFEST}

    table = run_cli("runs", "--warehouse", warehouse)
    assert table.exit_code == 0, table.stderr
    assert all(run_id in table.stdout for run_id in (*wf.COMMITTED_RUNS, wf.RUN_NO_MANIFEST))


def test_runs_of_one_model_by_id_or_short_name(warehouse):
    for name in (wf.MODEL_A, "model-a"):
        result = run_cli("runs", "--model", name, "--warehouse", warehouse, "--format", "csv")
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert lines[0].split(",")[:3] == ['"run_id"', '"model"', '"status"']
        assert sorted(line.split(",")[0].strip('"') for line in lines[1:]) == [wf.RUN_A1, wf.RUN_A2]
    assert runs.list_runs(warehouse, model="no-such-model") == []


def test_runs_table_fits_the_terminal_and_keeps_run_ids_whole(warehouse, monkeypatch):
    from rich.cells import cell_len

    for width in (60, 90, 140):
        monkeypatch.setenv("COLUMNS", str(width))
        result = run_cli("runs", "--warehouse", warehouse)
        assert result.exit_code == 0, result.stderr
        assert max(cell_len(line) for line in result.stdout.splitlines()) <= width
        for run_id in (*wf.COMMITTED_RUNS, wf.RUN_NO_MANIFEST):
            assert any(f"│ {run_id} " in line for line in result.stdout.splitlines()), (width, run_id)


def test_runs_without_a_warehouse(tmp_path):
    assert_one_line_error(run_cli("runs", "--warehouse", tmp_path / "nowhere"), "no warehouse at")


# ---------------------------------------------------------------- lensdb show


def test_show_summarises_the_diagnostics_of_the_run(warehouse):
    result = run_cli("show", wf.RUN_A1, "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    shown = json.loads(result.stdout)
    assert shown["manifest"]["run_id"] == wf.RUN_A1 and shown["manifest"]["lenses"] == ["norm", "raw"]
    assert shown["run"]["status"] == "committed"
    assert shown["tables"]["records"]["rows"] == runs.list_runs(warehouse, model=wf.MODEL_A)[0].records

    per_prompt = lensdb.query(f"SELECT * FROM v1.diagnostics WHERE run_id = '{wf.RUN_A1}'", warehouse=warehouse).to_pylist()
    groups: dict[tuple[str, str], list[dict]] = {}
    for row in per_prompt:
        groups.setdefault((row["lens"], row["role"]), []).append(row)
    assert [(row["lens"], row["role"]) for row in shown["diagnostics"]] == sorted(groups)
    for row in shown["diagnostics"]:
        group = groups[(row["lens"], row["role"])]
        semantic = [r["L_semantic"] for r in group if r["L_semantic"] is not None]
        copies = [r["L_copy"] for r in group if r["L_copy"] is not None]
        assert row["prompts"] == len(group)
        assert row["answered"] == len(semantic) and row["copied"] == len(copies)
        assert row["L_semantic"] == (statistics.median(semantic) if semantic else None)
        assert row["L_copy"] == (statistics.median(copies) if copies else None)

    checks = lensdb.query(f"SELECT * FROM v1.last_layer_consistency WHERE run_id = '{wf.RUN_A1}'", warehouse=warehouse).to_pylist()
    for row in shown["last_layer"]:
        lens_rows = [r for r in checks if r["lens"] == row["lens"]]
        assert row["kl_above_0_5_bits"] == sum(r["warn_high_last_layer_kl"] for r in lens_rows)
        assert row["max_kl_bits"] == max(r["kl_to_final_bits"] for r in lens_rows)
    risks = lensdb.query(f"SELECT lens_artifact_risk FROM v1.raw_lens_summary WHERE run_id = '{wf.RUN_A1}'", warehouse=warehouse)
    expected = {risk: risks.column(0).to_pylist().count(risk) for risk in set(risks.column(0).to_pylist())}
    assert {row["risk"]: row["prompts"] for row in shown["raw_lens"]} == expected


def test_show_as_text(warehouse):
    result = run_cli("show", wf.RUN_A2, "--warehouse", warehouse)
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    for fragment in (wf.RUN_A2, wf.MODEL_A, "lenses norm,final_ln", "top-k 5", "torch 2.5.0", "Diagnostics", "Last layer"):
        assert fragment in text, fragment


def test_show_a_damaged_run_and_an_unknown_one(warehouse):
    result = run_cli("show", wf.RUN_NO_MANIFEST, "--warehouse", warehouse)
    assert result.exit_code == 0, result.stderr
    assert "damaged" in result.stdout and "manifest missing" in result.stdout
    assert_one_line_error(run_cli("show", "no-such-run", "--warehouse", warehouse), "no run no-such-run")


# ---------------------------------------------------------------- lensdb rm


def test_rm_removes_the_run_from_every_view_and_nothing_else(warehouse):
    before = rows_per_run(warehouse)
    result = run_cli("rm", wf.RUN_A1, "--yes", "--warehouse", warehouse)
    assert result.exit_code == 0, result.stderr
    assert wf.RUN_A1 in result.stdout
    assert rows_per_run(warehouse) == without(before, wf.RUN_A1)  # a-run2 stays model A's latest run
    assert not run_folder(warehouse, wf.MODEL_A, wf.RUN_A1).exists()
    assert list((warehouse / "_trash").iterdir()) == []
    assert wf.RUN_A1 not in {run.run_id for run in runs.list_runs(warehouse)}


def test_rm_of_the_latest_run_makes_the_previous_one_latest(warehouse):
    assert run_cli("rm", wf.RUN_A2, "--yes", "--warehouse", warehouse).exit_code == 0
    latest = lensdb.query("SELECT run_id FROM v1.latest_runs ORDER BY run_id", warehouse=warehouse).column(0).to_pylist()
    assert latest == [wf.RUN_A1, wf.RUN_B1, wf.RUN_LEGACY]


def test_rm_several_runs_and_damaged_ones(warehouse):
    result = run_cli("rm", wf.RUN_B1, wf.RUN_NO_MANIFEST, wf.RUN_LEGACY, "--yes", "--warehouse", warehouse)
    assert result.exit_code == 0, result.stderr
    assert {run.run_id for run in runs.list_runs(warehouse)} == {wf.RUN_A1, wf.RUN_A2}


def test_rm_with_an_unknown_run_removes_nothing(warehouse):
    before = rows_per_run(warehouse)
    assert_one_line_error(run_cli("rm", wf.RUN_A1, "nope-1", "nope-2", "--yes", "--warehouse", warehouse), "no run nope-1, nope-2")
    assert_one_line_error(run_cli("rm", "*", "--yes", "--warehouse", warehouse), "invalid run id")
    assert rows_per_run(warehouse) == before


def test_rm_of_a_run_id_under_two_model_folders_needs_the_model(warehouse):
    """Issue 21.6: `rm --yes` of a run id that also exists as a damaged copy under another
    model folder removed both. Without --model it names them and removes nothing."""
    original = run_folder(warehouse, wf.MODEL_A, wf.RUN_A1)
    copy = run_folder(warehouse, wf.MODEL_B, wf.RUN_A1)
    shutil.copytree(original, copy)  # under model B's folder: damaged (its manifest names model A)
    before = rows_per_run(warehouse)
    assert_one_line_error(
        run_cli("rm", wf.RUN_A1, "--yes", "--warehouse", warehouse),
        f"run id {wf.RUN_A1} is in 2 model folders: ", f"{wf.MODEL_A} (committed)", f"{wf.MODEL_B} (damaged)", "give --model", "nothing was removed",
    )
    assert original.is_dir() and copy.is_dir() and rows_per_run(warehouse) == before
    assert_one_line_error(run_cli("rm", wf.RUN_A1, "--yes", "--model", "nobody", "--warehouse", warehouse), f"no run {wf.RUN_A1} of model nobody")
    result = run_cli("rm", wf.RUN_A1, "--yes", "--model", wf.MODEL_B, "--warehouse", warehouse)
    assert result.exit_code == 0, result.stderr
    assert original.is_dir() and not copy.exists() and rows_per_run(warehouse) == before
    short_name = wf.MODEL_A.rsplit("/", 1)[-1]
    assert run_cli("rm", wf.RUN_A1, "--yes", "--model", short_name, "--warehouse", warehouse).exit_code == 0
    assert not original.exists() and rows_per_run(warehouse) == without(before, wf.RUN_A1)


def test_rm_asks_first(warehouse):
    from click.testing import CliRunner

    from lensdb.cli import main

    declined = CliRunner().invoke(main, ["rm", wf.RUN_B1, "--warehouse", str(warehouse)], input="n\n")
    assert declined.exit_code == 1 and "nothing removed" in declined.stderr
    assert run_folder(warehouse, wf.MODEL_B, wf.RUN_B1).is_dir()
    accepted = CliRunner().invoke(main, ["rm", wf.RUN_B1, "--warehouse", str(warehouse)], input="y\n")
    assert accepted.exit_code == 0, accepted.stderr
    assert wf.RUN_B1 in accepted.stderr  # the runs are named before the question
    assert not run_folder(warehouse, wf.MODEL_B, wf.RUN_B1).exists()


KILLED_RM = textwrap.dedent(
    """
    import os, shutil, signal, sys
    from lensdb import runs
    where = sys.argv[3]
    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)
    if where == "before-rename":
        os.rename = die
    else:
        shutil.rmtree = die
    runs.remove_runs(sys.argv[1], [sys.argv[2]])
    """
)


def kill_rm_at(warehouse: Path, run_id: str, where: str) -> None:
    env = os.environ | {"PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    process = subprocess.run([sys.executable, "-c", KILLED_RM, str(warehouse), run_id, where], capture_output=True, text=True, cwd=REPO, env=env)
    assert process.returncode == -signal.SIGKILL, process.stderr


def test_rm_killed_after_the_rename_leaves_nothing_visible(warehouse):
    lensdb.connect(warehouse).close()  # a catalog already in place, as in real use
    before = rows_per_run(warehouse)
    kill_rm_at(warehouse, wf.RUN_A1, "after-rename")
    assert rows_per_run(warehouse) == without(before, wf.RUN_A1)
    assert wf.RUN_A1 not in {run.run_id for run in runs.list_runs(warehouse)}
    [left] = list((warehouse / "_trash").iterdir())
    assert left.name.startswith(f"{wf.RUN_A1}.") and any(left.rglob("*.parquet"))  # the whole run, out of sight
    runs.remove_runs(warehouse, [wf.RUN_B1])  # the next rm deletes what the killed one left
    assert list((warehouse / "_trash").iterdir()) == []
    assert rows_per_run(warehouse) == without(without(before, wf.RUN_A1), wf.RUN_B1)


def test_rm_killed_before_the_rename_leaves_the_whole_run(warehouse):
    before = rows_per_run(warehouse)
    files_before = sorted(p.relative_to(warehouse) for p in run_folder(warehouse, wf.MODEL_A, wf.RUN_A1).rglob("*"))
    kill_rm_at(warehouse, wf.RUN_A1, "before-rename")
    assert rows_per_run(warehouse) == before
    assert sorted(p.relative_to(warehouse) for p in run_folder(warehouse, wf.MODEL_A, wf.RUN_A1).rglob("*")) == files_before


# ---------------------------------------------------------------- v1.latest_runs and --latest


def expected_latest(warehouse: Path) -> set[str]:
    """Independently of the SQL: per (model, prompt set), the greatest (created_at, finished_at, run_id)."""
    best: dict[tuple, tuple] = {}
    for folder in (warehouse / "runs").glob("model=*/run=*"):
        manifest_files = list((folder / "manifest").glob("*.parquet"))
        if not manifest_files:
            continue
        m = pq.read_table(manifest_files[0]).to_pylist()[0]
        key, rank = (m["model"], m["prompt_set"]), (m["created_at"], m["finished_at"], m["run_id"])
        best[key] = max(best.get(key, rank), rank)
    return {rank[2] for rank in best.values()}


def add_run(warehouse: Path, run_id: str, *, prompt_set: str = "fixture", created_at: datetime, finished_second: int = 59) -> None:
    run = wf._run_b1()
    run.run_id, run.model, run.created_at = run_id, wf.MODEL_A, created_at
    manifest = wf.manifest_table(run).to_pylist()[0] | {
        "prompt_set": prompt_set, "finished_at": created_at.replace(second=finished_second)
    }
    import pyarrow as pa

    from lensdb.warehouse import schema
    from lensdb.warehouse.writer import RunWriter

    with RunWriter(warehouse, run.model, run.run_id) as writer:
        wf._stage(writer, run)
        writer.commit(pa.Table.from_pylist([manifest], schema=schema.MANIFEST), schema.MANIFEST)


def test_latest_runs_per_model_and_prompt_set(warehouse):
    add_run(warehouse, "a-other-set", prompt_set="capitals", created_at=datetime(2024, 1, 1))  # older, but its own set
    add_run(warehouse, "a-tie-1", created_at=datetime(2025, 2, 3, 4, 5, 6), finished_second=58)  # ties a-run2's start
    latest = set(lensdb.query("SELECT run_id FROM v1.latest_runs", warehouse=warehouse).column(0).to_pylist())
    assert latest == expected_latest(warehouse) == {wf.RUN_A2, "a-other-set", wf.RUN_B1, wf.RUN_LEGACY}
    add_run(warehouse, "a-tie-2", created_at=datetime(2025, 2, 3, 4, 5, 6), finished_second=59)  # same start and end: run id decides
    latest = set(lensdb.query("SELECT run_id FROM v1.latest_runs", warehouse=warehouse).column(0).to_pylist())
    assert latest == expected_latest(warehouse) == {"a-tie-2", "a-other-set", wf.RUN_B1, wf.RUN_LEGACY}
    flags = lensdb.query("SELECT run_id, is_latest FROM v1.runs", warehouse=warehouse).to_pylist()
    assert {row["run_id"] for row in flags if row["is_latest"]} == latest


def test_latest_switch_keeps_only_the_latest_runs_in_every_view(warehouse):
    everything = rows_per_run(warehouse)
    latest = rows_per_run(warehouse, latest=True)
    keep = expected_latest(warehouse)
    assert keep == {wf.RUN_A2, wf.RUN_B1, wf.RUN_LEGACY}
    assert latest == {view: {run: n for run, n in per_run.items() if run in keep} for view, per_run in everything.items()}
    assert latest["v1.diagnostics"] and latest["v1.records"]  # something left to compare

    result = run_cli("query", "--latest", "SELECT DISTINCT run_id FROM v1.diagnostics ORDER BY run_id", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["run_id"] for row in json.loads(result.stdout)] == sorted(keep)
    plain = run_cli("query", "SELECT DISTINCT run_id FROM v1.diagnostics ORDER BY run_id", "--warehouse", warehouse, "--format", "json")
    assert [row["run_id"] for row in json.loads(plain.stdout)] == sorted(wf.COMMITTED_RUNS)
    from_python = lensdb.query("SELECT DISTINCT run_id FROM v1.records ORDER BY run_id", warehouse=warehouse, latest=True)
    assert from_python.column("run_id").to_pylist() == sorted(keep)


@pytest.mark.skipif(not LEGACY_RUN.is_dir(), reason="../shared/fixtures/legacy-run-2025-08-30 is not available")
def test_export_latest_is_the_latest_run_of_each_model(tmp_path):
    warehouse = tmp_path / "warehouse"
    first = lensdb_import(LEGACY_RUN, warehouse)
    second = lensdb_import(LEGACY_RUN, warehouse, force=True)
    latest = run_cli("export", "--latest", "--out", tmp_path / "latest", "--warehouse", warehouse)
    assert latest.exit_code == 0, latest.stderr
    for run in second:
        one = run_cli("export", "--run", run.run_id, "--out", tmp_path / run.run_id, "--warehouse", warehouse)
        assert one.exit_code == 0, one.stderr
        for path in (tmp_path / run.run_id).iterdir():
            assert (tmp_path / "latest" / path.name).read_bytes() == path.read_bytes()
    assert len(list((tmp_path / "latest").iterdir())) == 3 * len(first)
    result = run_cli("export", "--latest", "--run", first[0].run_id, "--out", tmp_path / "x", "--warehouse", warehouse)
    assert result.exit_code != 0 and "--run or --latest" in result.stderr


def lensdb_import(folder: Path, warehouse: Path, force: bool = False):
    from lensdb.legacy.importer import import_legacy

    return import_legacy(folder, warehouse, force=force)

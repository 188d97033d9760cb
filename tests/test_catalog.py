"""The DuckDB catalog (<warehouse>/lensdb.duckdb) and `lensdb query`: where it can be opened
from, when it refreshes, writes beside an open catalog, and one-line errors for bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

import lensdb
from lensdb import catalog
from lensdb.catalog import sqlfiles
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The fixture warehouse, built once; tests work on copies."""
    return wf.build_warehouse(tmp_path_factory.mktemp("catalog") / "pristine")


@pytest.fixture
def warehouse(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "warehouse", symlinks=True))


def new_run(run_id: str, model: str = "model-c") -> wf.Run:
    run = wf._run_b1()
    run.run_id, run.model = run_id, model
    return run


def installed(con) -> dict[str, tuple[str, str, str]]:
    rows = con.execute(f"SELECT name, file, version, sql_sha256 FROM {catalog.META_SCHEMA}.views").fetchall()
    return {name: (file, version, sha) for name, file, version, sha in rows}


# --- (a) the catalog file on its own, from another working directory -----------------------


def test_catalog_opens_with_plain_duckdb_from_another_directory(warehouse, tmp_path):
    lensdb.connect(warehouse).close()
    elsewhere = tmp_path / "elsewhere" / "deeper"
    elsewhere.mkdir(parents=True)
    script = textwrap.dedent(
        """
        import duckdb, sys
        con = duckdb.connect(sys.argv[1], read_only=True)
        print(con.execute("SELECT count(*), count(DISTINCT model) FROM v1.diagnostics").fetchone())
        """
    )
    relative = os.path.relpath(warehouse / "lensdb.duckdb", elsewhere)
    done = subprocess.run([sys.executable, "-c", script, relative], cwd=elsewhere, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(24, 3)"  # 24 diagnostics rows of 3 models


# --- (b) new runs appear without a reinstall ----------------------------------------------


def test_a_run_committed_later_appears_without_reinstalling(warehouse):
    con = lensdb.connect(warehouse)
    before = con.execute(f"SELECT min(installed_at) FROM {catalog.META_SCHEMA}.views").fetchone()
    con.close()
    wf.write_run(warehouse, new_run("c-run1"))
    con = duckdb.connect(str(warehouse / "lensdb.duckdb"), read_only=True)  # no lensdb: nothing can reinstall
    try:
        assert con.execute("SELECT count(*) FROM v1.diagnostics WHERE run_id = 'c-run1'").fetchone() == (2,)
        assert con.execute("SELECT model FROM v1.runs WHERE run_id = 'c-run1'").fetchone() == ("model-c",)
        assert con.execute(f"SELECT min(installed_at) FROM {catalog.META_SCHEMA}.views").fetchone() == before
    finally:
        con.close()


# --- (c) versions and hashes; refresh on SQL change and on a moved warehouse ---------------


def test_catalog_records_each_views_version_and_sql_hash(warehouse):
    con = lensdb.connect(warehouse, read_only=True)
    try:
        views = installed(con)
    finally:
        con.close()
    expected = {name: (f.path.name, f.version, f.sha256) for f in catalog.sql_files("v1") for name in f.defines}
    assert views == expected
    assert {"v1.diagnostics", "v1.pure_next_token", "v1_base.records"} <= set(views)
    assert all(version == "1" for _, version, _ in views.values())


def test_catalog_refreshes_when_the_sql_changes(warehouse, tmp_path, monkeypatch):
    lensdb.connect(warehouse).close()
    edited = tmp_path / "sql"
    shutil.copytree(catalog.sql_dir(), edited)
    summaries = edited / "v1" / "40_summaries.sql"
    text = summaries.read_text(encoding="utf-8")
    text = text.replace("-- version: 1", "-- version: 2", 1)
    text = text.replace("max(control_margin) AS max_control_margin", "max(control_margin) AS max_control_margin, 'edited' AS marker")
    summaries.write_text(text, encoding="utf-8")
    monkeypatch.setattr(sqlfiles, "sql_dir", lambda: edited)

    con = lensdb.connect(warehouse, read_only=True)
    try:
        views = installed(con)
        edited_file = next(f for f in catalog.sql_files("v1") if f.path.name == "40_summaries.sql")
        assert views["v1.control_summary"] == ("40_summaries.sql", "2", edited_file.sha256)
        assert views["v1.ablation_summary"][1:] == ("2", edited_file.sha256)
        assert views["v1.diagnostics"][1] == "1"
        assert con.execute("SELECT DISTINCT marker FROM v1.control_summary").fetchall() == [("edited",)]
    finally:
        con.close()
    monkeypatch.undo()  # the shipped SQL again: installed again
    con = lensdb.connect(warehouse, read_only=True)
    try:
        assert "marker" not in [d[0] for d in con.execute("SELECT * FROM v1.control_summary").description]
        assert installed(con)["v1.control_summary"][1] == "1"
    finally:
        con.close()


def test_catalog_follows_a_moved_warehouse(warehouse, tmp_path):
    lensdb.connect(warehouse).close()
    moved = Path(shutil.move(warehouse, tmp_path / "moved-warehouse"))
    stale = duckdb.connect(str(moved / "lensdb.duckdb"), read_only=True)
    try:  # the views still point at the old folder
        with pytest.raises(duckdb.Error):
            stale.execute("SELECT count(*) FROM v1.runs").fetchall()
    finally:
        stale.close()
    assert lensdb.query("SELECT count(*) AS n FROM v1.runs", warehouse=moved).to_pylist() == [{"n": 4}]
    con = duckdb.connect(str(moved / "lensdb.duckdb"), read_only=True)
    try:
        fingerprint = dict(con.execute(f"SELECT key, value FROM {catalog.META_SCHEMA}.fingerprint").fetchall())
        assert fingerprint["warehouse"] == str(moved.resolve())
        assert con.execute("SELECT count(*) FROM v1.diagnostics").fetchone() == (24,)
    finally:
        con.close()


# --- (d) writes beside an open catalog ------------------------------------------------------


def test_a_write_while_a_catalog_connection_is_open(warehouse):
    catalog_file = warehouse / "lensdb.duckdb"
    con = lensdb.connect(warehouse)
    try:
        stamp = catalog_file.stat().st_mtime_ns
        wf.write_run(warehouse, new_run("c-run2"))
        assert catalog_file.stat().st_mtime_ns == stamp  # the writer never touched the catalog
        assert con.execute("SELECT count(*) FROM v1.pure_next_token WHERE run_id = 'c-run2'").fetchone() == (6,)
    finally:
        con.close()


def test_another_process_holding_the_catalog_blocks_neither_writes_nor_queries(warehouse):
    lensdb.connect(warehouse).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, lensdb; con = lensdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.readline();"
         " print(con.execute(\"SELECT count(*) FROM v1.runs WHERE run_id = 'c-run3'\").fetchone()[0])", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        wf.write_run(warehouse, new_run("c-run3"))
        # The catalog is locked by the other process: lensdb.query installs the views in memory.
        assert lensdb.query("SELECT count(*) AS n FROM v1.diagnostics WHERE run_id = 'c-run3'", warehouse=warehouse).to_pylist() == [{"n": 2}]
        out, err = holder.communicate("\n", timeout=60)
        assert holder.returncode == 0, err
        assert out.strip() == "1"
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


# --- (e) lensdb query: bad input, formats, --list, the Python API -------------------------


def test_bad_sql(warehouse):
    assert_one_line_error(run_cli("query", "SELEC * FROM v1.runs", "--warehouse", str(warehouse)), "syntax error")


def test_unknown_view(warehouse):
    assert_one_line_error(run_cli("query", "SELECT * FROM v1.nope", "--warehouse", str(warehouse)), "nope", "lensdb query --list")


def test_unknown_named_query(warehouse):
    assert_one_line_error(run_cli("query", "--name", "nope", "--warehouse", str(warehouse)), "unknown named query 'nope'", "semantic_collapse")


def test_missing_warehouse(tmp_path):
    assert_one_line_error(run_cli("query", "SELECT 1", "--warehouse", str(tmp_path / "nowhere")), "no warehouse at")


def test_empty_warehouse(tmp_path):
    (tmp_path / "empty").mkdir()
    assert_one_line_error(run_cli("query", "SELECT * FROM v1.runs", "--warehouse", str(tmp_path / "empty")), "no committed runs")


def test_corrupt_parquet_file_leaves_its_run_out_with_a_warning_and_other_runs_still_work(warehouse):
    bad = warehouse / "runs" / "model=model-b" / f"run={wf.RUN_B1}" / "records" / "next-00000.parquet"
    bad.write_bytes(b"not a parquet file" * 64)
    result = run_cli("query", "SELECT DISTINCT run_id FROM v1.diagnostics ORDER BY run_id", "--warehouse", str(warehouse), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["run_id"] for row in json.loads(result.stdout)] == [wf.RUN_A1, wf.RUN_A2, wf.RUN_LEGACY]
    warning = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warning) == 1 and warning[0].startswith("lensdb: warning: "), result.stderr
    assert f"run {wf.RUN_B1} (model-b): records/next-00000.parquet unreadable" in warning[0]
    for sql in (
        f"SELECT count(*) AS n FROM v1.diagnostics WHERE run_id = '{wf.RUN_A1}'",
        f"SELECT count(*) AS n FROM v1.records WHERE run_id = '{wf.RUN_A1}'",
        f"SELECT count(*) AS n FROM v1.raw_lens_summary WHERE run_id = '{wf.RUN_A1}'",
    ):
        result = run_cli("query", sql, "--warehouse", str(warehouse), "--format", "json")
        assert result.exit_code == 0, result.stderr
        assert json.loads(result.stdout)[0]["n"] > 0


def test_corrupt_file_before_the_catalog_exists(warehouse):
    assert not (warehouse / "lensdb.duckdb").exists()  # the views are installed with the bad file present
    bad = warehouse / "runs" / "model=model-b" / f"run={wf.RUN_B1}" / "prompts" / "part-00000.parquet"
    bad.write_bytes(b"garbage")
    result = run_cli("query", f"SELECT count(*) AS n FROM v1.prompts WHERE run_id = '{wf.RUN_A2}'", "--warehouse", str(warehouse), "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == [{"n": 1}]


def test_json_is_an_array_of_row_objects(warehouse):
    result = run_cli("query", "SELECT run_id, n_layers, lenses FROM v1.runs ORDER BY run_id", "--warehouse", str(warehouse), "--format", "json")
    assert result.exit_code == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows[0] == {"run_id": wf.RUN_A1, "n_layers": 4, "lenses": ["norm", "raw"]}
    assert [row["run_id"] for row in rows] == sorted(wf.COMMITTED_RUNS)


def test_parquet_output_is_readable(warehouse, tmp_path):
    out = tmp_path / "diagnostics.parquet"
    result = run_cli("query", "--name", "semantic_collapse", "--warehouse", str(warehouse), "--format", "parquet", "--out", str(out))
    assert result.exit_code == 0, result.stderr
    table = pq.read_table(out)
    assert table.num_rows == 14  # norm-lens rows: 9 + 1 + 2 + 2
    assert {"model", "L_semantic", "L_semantic_frac"} <= set(table.column_names)


def test_list_shows_named_queries_and_views():
    result = run_cli("query", "--list")
    assert result.exit_code == 0
    for name in (*catalog.named_queries(), "v1.diagnostics", "v1.diagnostics_with", "v1.raw_lens_summary"):
        assert name in result.stdout


def test_python_api_polars(warehouse):
    import polars as pl

    frame = lensdb.query("SELECT model, count(*) AS prompts FROM v1.prompts GROUP BY model ORDER BY model", warehouse=warehouse, format="polars")
    assert isinstance(frame, pl.DataFrame)
    assert frame.to_dicts() == [
        {"model": wf.MODEL_LEGACY, "prompts": 2},
        {"model": wf.MODEL_B, "prompts": 2},
        {"model": wf.MODEL_A, "prompts": 10},
    ]

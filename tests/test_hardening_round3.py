"""Red-team round 3 (issue 21), items 7-13, and the guards that held:

7. query SQL reads nothing outside the warehouse, relative paths and DuckDB's temp folder included;
8. a warehouse URL holding a secret is refused without showing any part of it;
9. SIGTERM during extract is handled as Ctrl-C;
10. linked folders inside the warehouse (runs/, a model folder) are data, and work;
11. two concurrent imports of the same legacy files import each model once;
12. static plots draw model names as plain text ('$', '\\', '_^');
13. damage a query finds inside a file is listed by v1.damaged_runs afterwards.
Guards: cleanup beside a live writer, HTML escaping, the sandbox against symlinks / '..' /
ATTACH / COPY / SET.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import lensdb
from lensdb import catalog
from lensdb.errors import QueryError
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
B1 = Path("runs") / "model=model-b" / f"run={wf.RUN_B1}"
RUNS_SQL = "SELECT list(run_id ORDER BY run_id) AS runs FROM v1.runs"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return wf.build_warehouse(tmp_path_factory.mktemp("round3") / "pristine")


@pytest.fixture
def warehouse(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "warehouse", symlinks=True))


def query_json(warehouse, sql: str):
    result = run_cli("query", sql, "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


# --- 7. the query sandbox covers relative paths and DuckDB's temp folder ---------------------


@pytest.fixture
def hostile_cwd(tmp_path, monkeypatch) -> Path:
    """A working directory with a `.tmp/` folder (DuckDB's default temp_directory) holding a
    file, a Parquet file and a link to an outside folder, and an outside folder of its own."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-secret\n")
    cwd = tmp_path / "cwd"
    (cwd / ".tmp").mkdir(parents=True)
    (cwd / ".tmp" / "note.txt").write_text("tmp-secret\n")
    pq.write_table(pa.table({"secret": ["tmp-secret"]}), cwd / ".tmp" / "data.parquet")
    os.symlink(outside, cwd / ".tmp" / "link")
    (cwd / "plain").mkdir()
    (cwd / "plain" / "note.txt").write_text("cwd-secret\n")
    monkeypatch.chdir(cwd)
    return cwd


CWD_READS = [
    "SELECT * FROM read_text('.tmp/note.txt')",
    "SELECT * FROM read_csv('.tmp/note.txt')",
    "SELECT * FROM read_parquet('.tmp/data.parquet')",
    "SELECT * FROM read_blob('.tmp/note.txt')",
    "SELECT * FROM glob('.tmp/*')",
    "SELECT * FROM glob('.tmp/**')",
    "SELECT * FROM read_text('.tmp/link/secret.txt')",
    "SELECT * FROM read_text('./.tmp/note.txt')",
    "SELECT * FROM read_text('{cwd}/.tmp/note.txt')",
    "SELECT * FROM read_text('plain/note.txt')",
    "SELECT * FROM glob('*')",
    "SELECT * FROM read_text('../outside/secret.txt')",
]


@pytest.mark.parametrize("sql", CWD_READS)
def test_query_sql_reads_nothing_of_the_working_directory(warehouse, hostile_cwd, sql):
    text = sql.format(cwd=hostile_cwd)
    result = run_cli("query", text, "--warehouse", warehouse, "--format", "json")
    assert_one_line_error(result)
    assert "secret" not in result.stdout + result.stderr.replace("secret.txt", "")
    with pytest.raises(QueryError):
        lensdb.query(text, warehouse=warehouse)


def test_the_temp_folder_as_a_link_out_is_not_readable(warehouse, tmp_path, monkeypatch):
    """`.tmp` itself a link to another folder: DuckDB would allow that folder."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "secret.txt").write_text("linked-secret\n")
    cwd = tmp_path / "cwd2"
    cwd.mkdir()
    os.symlink(outside, cwd / ".tmp")
    monkeypatch.chdir(cwd)
    for sql in (f"SELECT * FROM read_text('{outside}/secret.txt')", "SELECT * FROM read_text('.tmp/secret.txt')", "SELECT * FROM glob('.tmp/*')"):
        assert_one_line_error(run_cli("query", sql, "--warehouse", warehouse))


def test_duckdb_allows_only_the_warehouse_and_a_private_temp_folder(warehouse, hostile_cwd):
    session = catalog.open_session(warehouse, sandbox=True, quiet=True)
    try:
        allowed = session.con.execute("SELECT current_setting('allowed_directories')").fetchone()[0]
        temp = session.con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    finally:
        session.con.close()
    assert temp and not temp.startswith(str(hostile_cwd)) and not temp.startswith(".")
    assert (Path(temp).parent.parent.stat().st_mode & 0o077) == 0  # under a folder of this user's alone
    for folder in allowed:
        assert folder.startswith(f"{warehouse}/") or folder.rstrip("/") == str(Path(temp).resolve()), allowed


def test_a_query_larger_than_memory_still_spills_and_leaves_nothing(warehouse, hostile_cwd):
    """The private temp folder works (DuckDB spills there), and is gone when the connection closes."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '40MB'")
    con.execute("SET threads = 1")
    catalog._confine(con, catalog.Root(warehouse, warehouse))
    temp = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    sql = "SELECT count(*) FROM (SELECT i, md5(i::VARCHAR) AS m FROM range(1500000) t(i) ORDER BY m)"
    assert con.execute(sql).fetchone() == (1500000,)
    assert Path(temp).is_dir()  # it spilled there
    con.close()
    assert not Path(temp).exists()
    assert sorted(p.name for p in (hostile_cwd / ".tmp").iterdir()) == ["data.parquet", "link", "note.txt"]

"""Warehouse hardening (issue 9), one section per class of fault, on copies of the fixture
warehouse (tests/warehouse_fixtures.py):

1. paths are data: odd warehouse paths, model ids and run ids read exactly their own runs;
4. one damaged run (any file, the manifest included) never hides the others, and is reported;
5. the catalog repairs itself and is safe to create from many processes at once;
6. read-only readers: a read-only warehouse, outside DuckDB clients beside lensdb;
7. query SQL cannot touch the file system beyond the warehouse;
8. bad output paths and SQL files are one line, and so is any remaining OSError.
(Concurrent run ids, import-legacy and extract's checks are in test_hardening_extract.py.)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import lensdb
from lensdb import catalog
from lensdb.errors import DamagedRunsWarning, QueryError, WarehouseError
from lensdb.warehouse import anchors, health, layout
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent
EXPORTABLE_RUN, EXPORTABLE_MODEL = "export-me", "org/exportable"
COMMITTED = sorted((*wf.COMMITTED_RUNS, EXPORTABLE_RUN))
N_DIAGNOSTICS = 26  # v1.diagnostics rows: 24 of the fixture runs, 2 of the exportable one
RUNS_SQL = "SELECT list(run_id ORDER BY run_id) AS runs FROM v1.runs"


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The fixture warehouse and a run `lensdb export` can write (a prompt with role 'pos')."""
    warehouse = wf.build_warehouse(tmp_path_factory.mktemp("hardening") / "pristine")
    run = other_run(EXPORTABLE_RUN, EXPORTABLE_MODEL)
    run.prompts[0].role = "pos"
    wf.write_run(warehouse, run)
    return warehouse


@pytest.fixture
def warehouse(pristine, tmp_path) -> Path:
    return Path(shutil.copytree(pristine, tmp_path / "warehouse", symlinks=True))


def runs_of(warehouse: Path, sql: str = RUNS_SQL) -> list[str]:
    result = run_cli("query", sql, "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)[0]["runs"]


def warnings_of(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("lensdb: warning: ")]


def python(code: str, *args, cwd=None, timeout=120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def other_run(run_id: str, model: str = wf.MODEL_B) -> wf.Run:
    run = wf._run_b1()
    run.run_id, run.model = run_id, model
    return run


# --- 1. paths are data ----------------------------------------------------------------------

ODD_NAMES = [
    "w[ab]1",  # a glob class that matches the siblings wa1 and wb1
    "w*",  # matches every sibling
    "w?1",
    "w{a,b}1",
    "w]1",
    "w**",
    "q'uo\"te",
    "sp ace",
    "ünï日本",
    "a=b/run=zz/model=q",  # hive-like folders above the warehouse
    "back\\slash",  # DuckDB reads '\' as a separator: a linked root
    "new\nline",
    "pct%41",
    "semi;colon--dash",
    "$HOME",
]


@pytest.mark.parametrize("name", ODD_NAMES)
def test_an_odd_warehouse_path_reads_exactly_its_own_runs(pristine, tmp_path, name):
    for sibling in ("wa1", "wb1", "w1"):
        wf.write_run(tmp_path / sibling, other_run(f"sibling-{sibling}"))
        wf.write_stored_lenses(tmp_path / sibling)
    warehouse = tmp_path / name
    warehouse.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(pristine, warehouse)

    assert runs_of(warehouse) == COMMITTED
    assert lensdb.query("SELECT count(*) AS n FROM v1.diagnostics", warehouse=warehouse).to_pylist() == [{"n": N_DIAGNOSTICS}]
    # Stored lenses, vocabularies and --latest read the same way (no sibling's files).
    lens_rows = sum(pq.read_metadata(path).num_rows for path in (pristine / "lenses").glob("*/lens.parquet"))
    assert lensdb.query("SELECT count(*) AS n FROM v1.lenses", warehouse=warehouse).to_pylist() == [{"n": lens_rows}]
    with_vocab = sorted(folder.run_id for folder in layout.run_folders(pristine) if (folder.path / "vocab").is_dir() and folder.run_id in COMMITTED)
    assert lensdb.query("SELECT list(DISTINCT run_id ORDER BY run_id) AS runs FROM v1.vocab", warehouse=warehouse).to_pylist() == [{"runs": with_vocab}]
    latest = lensdb.query("SELECT list(run_id ORDER BY run_id) AS runs FROM v1.runs WHERE is_latest", warehouse=warehouse).to_pylist()
    assert lensdb.query(RUNS_SQL, warehouse=warehouse, latest=True).to_pylist() == latest
    assert len(latest[0]["runs"]) < len(COMMITTED)
    if "\\" in name:
        return  # DuckDB opens no database file under such a path: lensdb keeps its views in memory
    # The catalog lensdb wrote is right for any DuckDB client too.
    done = python(
        "import duckdb, sys; con = duckdb.connect(sys.argv[1], read_only=True);"
        " print(con.execute('SELECT list(run_id ORDER BY run_id) FROM v1.runs').fetchone()[0])",
        warehouse / "lensdb.duckdb",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(COMMITTED)


def test_the_escaped_glob_matches_only_its_path():
    assert layout.glob_literal("/a/w[ab]1/x*?") == "/a/w[[]ab]1/x[*][?]"
    with pytest.raises(ValueError):
        layout.glob_literal("/a/b\\c")


ODD_MODELS = [
    "org/mo[d]el*?",
    "it's \"quoted\"",
    "{a,b}/c d",
    "model=x/run=y",
    "100%/..",
    "ünï/日本語",
    "x'); DROP TABLE v1.runs; --",
]


def test_model_ids_are_data(warehouse):
    for index, model in enumerate(ODD_MODELS):
        wf.write_run(warehouse, other_run(f"odd-{index}", model))
    rows = lensdb.query(
        "SELECT r.run_id, r.model, count(DISTINCT d.prompt_id) AS prompts FROM v1.runs r "
        "JOIN v1.diagnostics d USING (run_id, model) WHERE r.run_id LIKE 'odd-%' GROUP BY ALL ORDER BY r.run_id",
        warehouse=warehouse,
    ).to_pylist()
    assert rows == [{"run_id": f"odd-{i}", "model": model, "prompts": 2} for i, model in enumerate(ODD_MODELS)]
    assert runs_of(warehouse, "SELECT list(DISTINCT model ORDER BY model) AS runs FROM v1.records WHERE run_id LIKE 'odd-%'") == sorted(ODD_MODELS)


@pytest.mark.parametrize("run_id", ["", "a*", "a[b]", "../x", "run=1", "a b", "a'b", "-x", "x" * 129, "ünï"])
def test_run_ids_are_checked(run_id):
    with pytest.raises(WarehouseError, match="invalid run id"):
        layout.check_run_id(run_id)


def test_long_model_ids_get_short_collision_free_folders(warehouse):
    models = ["a" * 300, "a" * 299 + "b", "日本語" * 120, "org/" + "x" * 400]
    keys = [layout.model_key(model) for model in models]
    assert len(set(keys)) == len(models)
    assert all(len(("model=" + key).encode()) <= 255 and layout.SHORTENED_MARK in key for key in keys)
    assert layout.model_key("org/short-name") == "org%2Fshort-name"  # short ids as before
    for index, model in enumerate(models):
        wf.write_run(warehouse, other_run(f"long-{index}", model))
    rows = lensdb.query(
        "SELECT r.run_id, r.model AS manifest_model, any_value(p.model) AS prompts_model, any_value(d.model) AS diagnostics_model "
        "FROM v1.runs r JOIN v1.prompts p USING (run_id) JOIN v1.diagnostics d USING (run_id) "
        "WHERE r.run_id LIKE 'long-%' GROUP BY ALL ORDER BY r.run_id",
        warehouse=warehouse,
    ).to_pylist()
    assert [(r["manifest_model"], r["prompts_model"], r["diagnostics_model"]) for r in rows] == [(m, m, m) for m in models]


# --- 4. damaged runs --------------------------------------------------------------------------

B1 = Path("runs") / "model=model-b" / f"run={wf.RUN_B1}"


def _rewrite_manifest(folder: Path, **changes) -> None:
    path = folder / "manifest" / "part-00000.parquet"
    table = pq.read_table(path)
    rows = [row | changes for row in table.to_pylist()]
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), path)


def _retype(path: Path, column: str, values) -> None:
    table = pq.read_table(path)
    pq.write_table(table.set_column(table.schema.get_field_index(column), column, pa.array(values(table.num_rows))), path)


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _corrupt_middle(path: Path) -> None:
    """Overwrite the data pages' bytes but keep the footer readable."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(4, len(data) - footer - 4):
        data[i] = 0xA5
    path.write_bytes(bytes(data))


DAMAGE = {
    "manifest truncated": (lambda f: _truncate(f / "manifest" / "part-00000.parquet"), "manifest unreadable"),
    "manifest emptied": (lambda f: (f / "manifest" / "part-00000.parquet").write_bytes(b""), "manifest unreadable"),
    "manifest garbage": (lambda f: (f / "manifest" / "part-00000.parquet").write_bytes(b"PAR1 not really" * 50), "manifest unreadable"),
    "manifest deleted": (lambda f: (f / "manifest" / "part-00000.parquet").unlink(), "manifest missing"),
    "manifest folder is a file": (lambda f: (shutil.rmtree(f / "manifest"), (f / "manifest").write_text("x")), "manifest missing"),
    "manifest names another run": (lambda f: _rewrite_manifest(f, run_id="someone-else"), "manifest names run 'someone-else'"),
    "manifest not committed": (lambda f: _rewrite_manifest(f, status="writing"), "manifest status is 'writing'"),
    "records truncated": (lambda f: _truncate(f / "records" / "next-00000.parquet", 0.9), "records/next-00000.parquet unreadable"),
    "prompts emptied": (lambda f: (f / "prompts" / "part-00000.parquet").write_bytes(b""), "prompts/part-00000.parquet unreadable"),
    "a folder named like a file": (lambda f: (f / "finals" / "extra.parquet").mkdir(), "finals/extra.parquet is not a file"),
    "a stray unreadable file": (lambda f: (f / "residuals" / "part-00001.parquet").write_bytes(b"\0" * 100), "residuals/part-00001.parquet unreadable"),
    "records folder deleted": (lambda f: shutil.rmtree(f / "records"), "records/ missing"),
    "manifest lacks a column": (
        lambda f: pq.write_table(pq.read_table(f / "manifest" / "part-00000.parquet").drop(["n_layers"]), f / "manifest" / "part-00000.parquet"),
        "manifest lacks column n_layers",
    ),
    "manifest column of another type": (
        lambda f: _retype(f / "manifest" / "part-00000.parquet", "n_layers", lambda n: ["two"] * n),
        "manifest has column n_layers of type string, expected int32",
    ),
}


@pytest.mark.parametrize("kind", sorted(DAMAGE))
def test_a_damaged_run_is_left_out_and_reported(warehouse, kind):
    damage, reason = DAMAGE[kind]
    damage(warehouse / B1)
    found = {run.run_id: run for run in health.damaged_runs(warehouse)}
    assert reason in found[wf.RUN_B1].reason and found[wf.RUN_B1].model == wf.MODEL_B
    assert found[wf.RUN_B1].path == warehouse / B1

    result = run_cli("query", "SELECT DISTINCT run_id FROM v1.diagnostics ORDER BY run_id", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["run_id"] for row in json.loads(result.stdout)] == [wf.RUN_A1, wf.RUN_A2, EXPORTABLE_RUN, wf.RUN_LEGACY]
    (line,) = warnings_of(result)
    assert f"run {wf.RUN_B1} ({wf.MODEL_B}): " in line and reason in line and "b-crashed" in line
    # Filtering the damaged run out by hand works too, and so does every view.
    assert runs_of(warehouse, f"SELECT list(DISTINCT run_id ORDER BY run_id) AS runs FROM v1.records WHERE run_id <> '{wf.RUN_B1}'") == [
        wf.RUN_A1, wf.RUN_A2, EXPORTABLE_RUN, wf.RUN_LEGACY]
    damaged = lensdb.query("SELECT run_id, folder, reason FROM v1.damaged_runs ORDER BY run_id", warehouse=warehouse).to_pylist()
    assert [row["run_id"] for row in damaged] == [wf.RUN_NO_MANIFEST, wf.RUN_B1]
    assert damaged[1]["folder"] == B1.as_posix() and reason in damaged[1]["reason"]
    # An outside DuckDB client gets the same, from the catalog lensdb wrote.
    con = duckdb.connect(str(warehouse / "lensdb.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(DISTINCT run_id) FROM v1.diagnostics").fetchone() == (4,)
        assert con.execute("SELECT run_id FROM v1.damaged_runs ORDER BY run_id").fetchall() == [(wf.RUN_NO_MANIFEST,), (wf.RUN_B1,)]
    finally:
        con.close()


def test_damage_inside_a_data_page_is_found_by_the_query(warehouse):
    """The footer reads, the pages do not: the query leaves the run out and tells."""
    _corrupt_middle(warehouse / B1 / "records" / "next-00000.parquet")
    assert wf.RUN_B1 not in {run.run_id for run in health.damaged_runs(warehouse)}
    result = run_cli("query", "SELECT DISTINCT run_id FROM v1.pure_next_token ORDER BY run_id", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["run_id"] for row in json.loads(result.stdout)] == [wf.RUN_A1, wf.RUN_A2, EXPORTABLE_RUN, wf.RUN_LEGACY]
    (line,) = warnings_of(result)
    assert f"run {wf.RUN_B1} ({wf.MODEL_B}): records/next-00000.parquet unreadable" in line


def test_a_column_duckdb_cannot_cast_is_found_by_the_query(warehouse):
    """A records file whose `layer` holds text: DuckDB fails while reading it; the run is
    confirmed damaged by its columns, left out, and the query answers."""
    _retype(warehouse / B1 / "records" / "next-00000.parquet", "layer", lambda n: ["x"] * n)
    sql = "SELECT run_id, max(layer) AS layers FROM v1.pure_next_token GROUP BY run_id ORDER BY run_id"
    result = run_cli("query", sql, "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert [row["run_id"] for row in json.loads(result.stdout)] == [wf.RUN_A1, wf.RUN_A2, EXPORTABLE_RUN, wf.RUN_LEGACY]
    (line,) = warnings_of(result)
    assert "records/next-00000.parquet has column layer of type string, expected int32" in line


def test_a_query_that_fails_on_its_own_blames_no_run(warehouse):
    for sql in (
        "SELECT CAST(run_id AS INTEGER) FROM v1.runs",
        f"SELECT * FROM read_parquet('{warehouse}/runs/model=model-b/run={wf.RUN_B1}/records/nothing-here.parquet')",
        "SELECT error('my own error') FROM v1.records",
    ):
        result = run_cli("query", sql, "--warehouse", warehouse)
        assert_one_line_error(result)
        assert "damaged" not in result.stderr


def test_two_damaged_runs_and_the_python_api_warning(warehouse):
    _truncate(warehouse / B1 / "manifest" / "part-00000.parquet")
    a2 = warehouse / "runs" / "model=org%2Fmodel-a" / f"run={wf.RUN_A2}"
    (a2 / "finals" / "part-00000.parquet").write_bytes(b"nope")
    with pytest.warns(DamagedRunsWarning, match=r"3 damaged runs are left out of every view") as caught:
        table = lensdb.query("SELECT DISTINCT run_id FROM v1.final_predictions ORDER BY run_id", warehouse=warehouse)
    assert table.column("run_id").to_pylist() == [wf.RUN_A1, EXPORTABLE_RUN, wf.RUN_LEGACY]
    assert wf.RUN_A2 in str(caught[0].message) and wf.RUN_B1 in str(caught[0].message)


def test_export_skips_damaged_runs(warehouse, tmp_path):
    _truncate(warehouse / "runs" / "model=legacy%2Fllama-mini" / f"run={wf.RUN_LEGACY}" / "manifest" / "part-00000.parquet")
    result = run_cli("export", "--model", EXPORTABLE_MODEL, "--warehouse", warehouse, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "output-exportable-pure-next-token.csv", "output-exportable-records.csv", "output-exportable.json"]


# --- 5. the catalog repairs itself ----------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b""),  # killed while creating it
        lambda p: p.write_bytes(b"\0" * 4096 + b"not duckdb" * 100),
        lambda p: _truncate(p, 0.3),
        lambda p: Path(f"{p}.wal").write_bytes(b"a stale write-ahead log" * 10),
    ],
    ids=["empty", "garbage", "truncated", "stale wal"],
)
def test_an_unreadable_catalog_is_rebuilt(warehouse, damage):
    lensdb.connect(warehouse).close()
    damage(warehouse / "lensdb.duckdb")
    assert runs_of(warehouse) == COMMITTED
    con = duckdb.connect(str(warehouse / "lensdb.duckdb"), read_only=True)
    try:
        assert con.execute("SELECT count(*) FROM v1.diagnostics").fetchone() == (N_DIAGNOSTICS,)
    finally:
        con.close()


def test_leftovers_of_dead_builders_are_removed(warehouse):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    import socket

    leftover = warehouse / f"lensdb.duckdb.{dead}@{socket.gethostname()}.abcd1234.tmp"
    leftover.write_bytes(b"half a catalog")
    assert runs_of(warehouse) == COMMITTED
    assert not leftover.exists()


def test_damaged_schema_files_are_written_again(warehouse):
    anchor = anchors.anchor_path(warehouse, "records")
    lensdb.connect(warehouse).close()
    anchor.write_bytes(b"")
    assert runs_of(warehouse) == COMMITTED
    assert anchors.anchors_current(warehouse)


def test_many_processes_create_the_catalog_at_once(warehouse):
    shutil.rmtree(warehouse / "_schema")
    assert not (warehouse / "lensdb.duckdb").exists()
    code = "import sys, lensdb; print(lensdb.query('SELECT count(*) AS n FROM v1.diagnostics', warehouse=sys.argv[1]).to_pylist())"
    env = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(warehouse)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for _ in range(8)]
    results = [proc.communicate(timeout=300) + (proc.returncode,) for proc in procs]
    assert all(rc == 0 for _, _, rc in results), [err for _, err, rc in results if rc]
    assert {out.strip() for out, _, _ in results} == {f"[{{'n': {N_DIAGNOSTICS}}}]"}
    leftovers = [p for p in warehouse.rglob("*") if p.name.endswith(".tmp") or p.name.endswith(".wal")]
    assert leftovers == []
    assert anchors.anchors_current(warehouse)


# --- 6. read-only readers -------------------------------------------------------------------


@contextlib.contextmanager
def read_only(folder: Path):
    """The folder as a reader without write access sees it: a read-only bind mount (as root,
    where permissions do not stop writes), else without write permission."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in [folder, *folder.rglob("*")]}
        for path in modes:
            path.chmod(modes[path] & ~0o222)
        try:
            yield folder
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    mount = folder.parent / f"{folder.name}-read-only"
    mount.mkdir()
    bound = subprocess.run(["mount", "--bind", str(folder), str(mount)], capture_output=True).returncode == 0
    try:
        if not bound or subprocess.run(["mount", "-o", "remount,bind,ro", str(mount)], capture_output=True).returncode:
            pytest.skip("cannot make a read-only bind mount here")
        yield mount
    finally:
        if bound:
            subprocess.run(["umount", str(mount)], check=False) == 0 or subprocess.run(["umount", "-l", str(mount)], check=False)
        mount.rmdir()


def _snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")}


@pytest.mark.parametrize("state", ["current catalog", "no catalog, no schema files", "stale catalog"])
def test_a_read_only_warehouse_can_be_queried_and_exported(warehouse, tmp_path, state):
    if state == "current catalog":
        lensdb.connect(warehouse).close()
    elif state == "no catalog, no schema files":
        shutil.rmtree(warehouse / "_schema")
    else:
        lensdb.connect(warehouse).close()
        con = duckdb.connect(str(warehouse / "lensdb.duckdb"))
        con.execute("UPDATE lensdb_meta.fingerprint SET value = 'elsewhere' WHERE key = 'warehouse'")
        con.close()
    before = _snapshot(warehouse)
    with read_only(warehouse) as reader_view:
        assert runs_of(reader_view) == COMMITTED
        assert lensdb.query("SELECT count(*) AS n FROM v1.diagnostics", warehouse=reader_view).to_pylist() == [{"n": N_DIAGNOSTICS}]
        con = lensdb.connect(reader_view, read_only=True)
        assert con.execute("SELECT count(*) FROM v1.records WHERE run_id = ?", [wf.RUN_B1]).fetchone()[0] > 0
        con.close()
        result = run_cli("export", "--model", EXPORTABLE_MODEL, "--warehouse", reader_view, "--out", tmp_path / "out")
        assert result.exit_code == 0, result.stderr
        assert len(list((tmp_path / "out").iterdir())) == 3
    assert _snapshot(warehouse) == before


def test_lensdb_connect_holds_no_write_lock(warehouse):
    lensdb.connect(warehouse).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, lensdb; con = lensdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.readline()", str(warehouse)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        done = python("import duckdb, sys; print(duckdb.connect(sys.argv[1], read_only=True).execute('SELECT count(*) FROM v1.runs').fetchone()[0])",
                      warehouse / "lensdb.duckdb")
        assert done.returncode == 0 and done.stdout.strip() == str(len(COMMITTED)), done.stderr
    finally:
        holder.communicate("\n", timeout=60)


def test_queries_beside_an_outside_writer(warehouse):
    """An outside client holding the catalog for writing: lensdb uses an in-memory catalog
    and leaves the file alone."""
    lensdb.connect(warehouse).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('open', flush=True); sys.stdin.readline()",
         str(warehouse / "lensdb.duckdb")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        stamp = (warehouse / "lensdb.duckdb").stat().st_mtime_ns
        assert runs_of(warehouse) == COMMITTED
        assert (warehouse / "lensdb.duckdb").stat().st_mtime_ns == stamp
    finally:
        holder.communicate("\n", timeout=60)


def test_outside_readers_during_queries_never_hit_a_lock(warehouse):
    lensdb.connect(warehouse).close()
    reader = (
        "import duckdb, sys, time\n"
        "end = time.time() + 8\n"
        "n = 0\n"
        "while time.time() < end:\n"
        "    con = duckdb.connect(sys.argv[1], read_only=True)\n"
        "    con.execute('SELECT count(*) FROM v1.runs').fetchone(); con.close(); n += 1\n"
        "print(n)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", reader, str(warehouse / "lensdb.duckdb")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for _ in range(4):
        assert runs_of(warehouse) == COMMITTED
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert int(out) > 0


# --- 7. query SQL stays inside the warehouse ------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.txt").write_text("secret")
    return folder


REFUSED = [
    "COPY (SELECT 42) TO '{outside}/copy.csv'",
    "COPY (SELECT 42) TO '{warehouse}/inside.csv'",
    "SELECT 1; COPY (SELECT 42) TO '{outside}/second.csv'",
    "EXPLAIN ANALYZE COPY (SELECT 42) TO '{outside}/explained.csv'",
    "SELECT * FROM read_text('{outside}/secret.txt')",
    "SELECT * FROM read_csv('{outside}/secret.txt')",
    "SELECT * FROM glob('{outside}/*')",
    "SELECT * FROM read_text('{warehouse}/../outside/secret.txt')",
    "ATTACH '{outside}/new.duckdb' AS other",
    "ATTACH '{warehouse}/lensdb.duckdb' AS mine",
    "CREATE TABLE t AS SELECT 1",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "PRAGMA enable_profiling",
    "EXPORT DATABASE '{outside}/dump'",
    "CALL pragma_version()",
]


@pytest.mark.parametrize("sql", REFUSED)
def test_query_sql_cannot_reach_beyond_the_warehouse(warehouse, outside, sql):
    lensdb.connect(warehouse).close()
    before, outside_before = _snapshot(warehouse), _snapshot(outside)
    text = sql.format(outside=outside, warehouse=warehouse)
    assert_one_line_error(run_cli("query", text, "--warehouse", warehouse))
    with pytest.raises(QueryError):
        lensdb.query(text, warehouse=warehouse)
    assert _snapshot(warehouse) == before and _snapshot(outside) == outside_before


def test_query_sql_reads_the_warehouse_and_describes(warehouse):
    files = f"{warehouse}/runs/model=model-b/run={wf.RUN_B1}/prompts/*.parquet"
    assert lensdb.query(f"SELECT count(*) AS n FROM read_parquet('{files}')", warehouse=warehouse).to_pylist() == [{"n": 2}]
    for sql in ("DESCRIBE v1.runs", "SHOW ALL TABLES", "SUMMARIZE v1.runs", "EXPLAIN SELECT * FROM v1.runs", "FROM v1.runs LIMIT 1", "VALUES (1)"):
        assert lensdb.query(sql, warehouse=warehouse).num_rows > 0, sql


def test_allow_files_lifts_the_limits(warehouse, outside):
    target = outside / "copy.csv"
    result = run_cli("query", f"COPY (SELECT 42 AS answer) TO '{target}'", "--warehouse", warehouse, "--allow-files")
    assert result.exit_code == 0, result.stderr
    assert target.read_text().split() == ["answer", "42"]
    table = lensdb.query(f"SELECT content FROM read_text('{outside}/secret.txt')", warehouse=warehouse, allow_files=True)
    assert table.to_pylist() == [{"content": "secret"}]
    catalog_file = warehouse / "lensdb.duckdb"
    stamp = catalog_file.stat().st_mtime_ns
    result = run_cli("query", "CREATE TABLE v1.mine AS SELECT 1", "--warehouse", warehouse, "--allow-files")
    assert result.exit_code != 0  # the catalog is attached read-only: never changed by a query
    assert catalog_file.stat().st_mtime_ns == stamp


# --- 8. output paths, SQL files, remaining OS errors ----------------------------------------


def test_query_out_into_a_missing_folder_or_under_a_file(warehouse, tmp_path):
    (tmp_path / "a-file").write_text("x")
    cases = [
        (tmp_path / "missing" / "out.csv", "does not exist"),
        (tmp_path / "a-file" / "out.csv", "is a file"),
        (tmp_path / "a-file" / "deeper" / "out.csv", "is a file"),
        (tmp_path, "is a folder"),
    ]
    for out, fragment in cases:
        assert_one_line_error(run_cli("query", RUNS_SQL, "--warehouse", warehouse, "--out", out, "--format", "csv"), str(out), fragment)


def test_export_out_into_a_missing_folder_or_under_a_file(warehouse, tmp_path):
    (tmp_path / "a-file").write_text("x")
    for out, fragment in [
        (tmp_path / "missing" / "out", "does not exist"),
        (tmp_path / "a-file", "is a file"),
        (tmp_path / "a-file" / "out", "is a file"),
    ]:
        assert_one_line_error(run_cli("export", "--warehouse", warehouse, "--out", out), fragment)
    result = run_cli("export", "--model", EXPORTABLE_MODEL, "--warehouse", warehouse, "--out", tmp_path / "new")
    assert result.exit_code == 0, result.stderr  # a missing last folder is created


def test_a_failed_output_write_leaves_nothing(warehouse, tmp_path, monkeypatch):
    import errno

    out = tmp_path / "result.parquet"
    lensdb.connect(warehouse).close()

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pq, "write_table", full_disk)
    assert_one_line_error(run_cli("query", RUNS_SQL, "--warehouse", warehouse, "--out", out, "--format", "parquet"), "No space left on device")
    assert list(tmp_path.iterdir()) == [warehouse]


def test_sql_file_not_utf8(warehouse, tmp_path):
    path = tmp_path / "bad.sql"
    path.write_bytes(b"SELECT 1\n-- fine\nSELECT '\xff\xfe'\n")
    assert_one_line_error(run_cli("query", "--file", path, "--warehouse", warehouse), f"{path}:3", "not UTF-8")
    missing = tmp_path / "missing.sql"
    assert_one_line_error(run_cli("query", "--file", missing, "--warehouse", warehouse), str(missing))


def test_any_remaining_os_error_is_one_line_with_the_traceback_on_request(warehouse, monkeypatch):
    import errno

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error", str(warehouse / "runs"))

    monkeypatch.setattr(health, "damaged_runs", broken)
    line = assert_one_line_error(run_cli("query", RUNS_SQL, "--warehouse", warehouse), "Input/output error", str(warehouse / "runs"))
    assert "Traceback" not in line
    monkeypatch.setenv("LENSDB_DEBUG", "1")
    result = run_cli("query", RUNS_SQL, "--warehouse", warehouse)
    assert result.exit_code != 0
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("lensdb: error: ")

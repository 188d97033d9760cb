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
from lensdb.catalog import sandbox
from lensdb.errors import QueryError
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}
B1 = Path("runs") / "model=model-b" / f"run={wf.RUN_B1}"
RUNS_SQL = "SELECT list(run_id ORDER BY run_id) AS runs FROM v1.runs"


EXPORTABLE_RUN, EXPORTABLE_MODEL = "export-me", "org/exportable"
COMMITTED = sorted((*wf.COMMITTED_RUNS, EXPORTABLE_RUN))


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    """The fixture warehouse and a run `lensdb export` can write (a prompt with role 'pos')."""
    warehouse = wf.build_warehouse(tmp_path_factory.mktemp("round3") / "pristine")
    run = wf._run_b1()
    run.run_id, run.model = EXPORTABLE_RUN, EXPORTABLE_MODEL
    run.prompts[0].role = "pos"
    wf.write_run(warehouse, run)
    return warehouse


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
    sandbox.confine(con, catalog.Root(warehouse, warehouse))
    temp = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    sql = "SELECT count(*) FROM (SELECT i, md5(i::VARCHAR) AS m FROM range(1500000) t(i) ORDER BY m)"
    assert con.execute(sql).fetchone() == (1500000,)
    assert Path(temp).is_dir()  # it spilled there
    con.close()
    assert not Path(temp).exists()
    assert sorted(p.name for p in (hostile_cwd / ".tmp").iterdir()) == ["data.parquet", "link", "note.txt"]


# --- 8. a warehouse URL holding a secret: refused, and no part of the secret shown -----------

KEY_ID, SECRET = "AKIAQZ7WXK9PMEXAMPLE", "wJalrXUtnFEMIK7MDENGbPxRfiCYzEXAMPLEKEY"
TOKEN = "Fq0tOkEnVaLuE9z"
SECRET_URLS = [
    "{scheme}://{key}:{secret}@bucket/prefix",
    "{scheme}://{key}@bucket/prefix",
    "{scheme}://{key}:{secret}@bucket/prefix?x-token={token}",
    "{scheme}://{key}:Se/cr+et{secret}@bucket/prefix",  # an unescaped '/' in the secret: no '@' in the host part
    "{scheme}://{key}:{secret}/bucket/prefix",
    "{scheme}://{key}:a?b{secret}@bucket/prefix",
    "{scheme}://bucket/prefix?X-Amz-Security-Token={token}&X-Amz-Credential={key}",
    "{scheme}://bucket/prefix?a=b@{token}",
    "{scheme}://bucket/prefix#{token}",
    "{scheme}://{key}:{secret}@/prefix",
]
SCHEMES = ["s3", "gs", "file"]


def _secret_parts() -> list[str]:
    """Every 6-character piece of the key id, secret key and token."""
    return sorted({text[i : i + 6] for text in (KEY_ID, SECRET, TOKEN) for i in range(len(text) - 5)})


def _shows_no_secret(text: str) -> None:
    shown = [part for part in _secret_parts() if part in text]
    assert shown == [], (shown, text)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("template", SECRET_URLS)
def test_a_url_with_a_secret_is_refused_without_showing_it(scheme, template, tmp_path):
    url = template.format(scheme=scheme, key=KEY_ID, secret=SECRET, token=TOKEN)
    if scheme == "file":
        url = url.replace("bucket/prefix", f"localhost{tmp_path}").replace("@/prefix", f"@{tmp_path}")
    for args in (["runs"], ["query", "SELECT 1"], ["export", "--out", tmp_path / "out"], ["show", "x"], ["rm", "x", "--yes"]):
        result = run_cli(*args, "--warehouse", url)
        line = assert_one_line_error(result)
        _shows_no_secret(result.stdout + result.stderr)
        assert "warehouse URL" in line, line
    with pytest.raises(lensdb.errors.WarehouseError) as refused:
        lensdb.query("SELECT 1", url)
    _shows_no_secret(str(refused.value))
    env = {**ENV, "LENSDB_WAREHOUSE": url}
    done = subprocess.run([sys.executable, "-m", "lensdb", "runs"], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode != 0 and done.stderr.startswith("lensdb: error: ") and len(done.stderr.splitlines()) == 1, done.stderr
    _shows_no_secret(done.stdout + done.stderr)
    assert "Traceback" not in done.stderr


def test_redacted_urls_keep_what_is_not_secret():
    from lensdb.warehouse.urls import redact_url

    assert redact_url(f"s3://{KEY_ID}:{SECRET}@bucket/prefix") == "s3://bucket/prefix"
    assert redact_url(f"s3://bucket/prefix?token={TOKEN}") == "s3://bucket/prefix?…"
    assert redact_url(f"gs://{KEY_ID}:{SECRET}@bucket/p?t={TOKEN}") == "gs://bucket/p?…"
    assert redact_url("s3://bucket/prefix") == "s3://bucket/prefix"
    assert redact_url("http://127.0.0.1:9000/bucket") == "http://127.0.0.1:9000/bucket"
    assert redact_url("/not/a/url") == "/not/a/url"
    for template in SECRET_URLS:
        _shows_no_secret(redact_url(template.format(scheme="s3", key=KEY_ID, secret=SECRET, token=TOKEN)))


# --- 10. linked folders inside the warehouse are data ----------------------------------------


def _move_and_link(folder: Path, disk: Path) -> Path:
    """Move `folder` to `disk` (another disk, say) and leave a link to it in its place."""
    disk.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), str(disk))
    os.symlink(disk, folder)
    return disk


LINKS = {
    "runs/": lambda w, d: _move_and_link(w / "runs", d / "runs"),
    "a model folder": lambda w, d: _move_and_link(w / "runs" / "model=model-b", d / "model-b"),
    "a run folder": lambda w, d: _move_and_link(w / B1, d / "b-run1"),
    "a table folder": lambda w, d: _move_and_link(w / B1 / "records", d / "records"),
    "a Parquet file": lambda w, d: _move_and_link(w / B1 / "records" / "next-00000.parquet", d / "next.parquet"),
    "runs/ and a model folder in it": lambda w, d: (_move_and_link(w / "runs", d / "runs"),
                                                    _move_and_link(d / "runs" / "model=model-b", d / "deeper" / "model-b")),
}


@pytest.mark.parametrize("kind", sorted(LINKS))
def test_linked_folders_inside_the_warehouse_are_data(warehouse, tmp_path, kind):
    LINKS[kind](warehouse, tmp_path / "other-disk")
    assert query_json(warehouse, RUNS_SQL)[0]["runs"] == COMMITTED
    counts = query_json(warehouse, "SELECT run_id, count(*) AS n FROM v1.records GROUP BY run_id ORDER BY run_id")
    assert {row["run_id"]: row["n"] for row in counts}[wf.RUN_B1] > 0
    assert lensdb.query(f"SELECT count(*) AS n FROM v1.pure_next_token WHERE run_id = '{wf.RUN_B1}'", warehouse=warehouse).to_pylist()[0]["n"] > 0
    listed = run_cli("runs", "--warehouse", warehouse, "--format", "json")
    assert listed.exit_code == 0, listed.stderr
    status = {row["run_id"]: row["status"] for row in json.loads(listed.stdout)}
    assert status[wf.RUN_B1] == "committed" and status[EXPORTABLE_RUN] == "committed"
    exported = run_cli("export", "--model", EXPORTABLE_MODEL, "--warehouse", warehouse, "--out", tmp_path / "out")
    assert exported.exit_code == 0, exported.stderr
    assert len(list((tmp_path / "out").iterdir())) == 3
    # The run's files read through the link with read_parquet too.
    files = f"{warehouse}/runs/model=model-b/run={wf.RUN_B1}/prompts/*.parquet"
    assert lensdb.query(f"SELECT count(*) AS n FROM read_parquet('{files}')", warehouse=warehouse).to_pylist() == [{"n": 2}]


def test_a_linked_lens_store_is_data(warehouse, tmp_path):
    if not (warehouse / "lenses").is_dir():
        wf.write_stored_lenses(warehouse)
    expected = query_json(warehouse, "SELECT count(*) AS n FROM v1.lenses")[0]["n"]
    assert expected > 0
    _move_and_link(warehouse / "lenses", tmp_path / "other-disk" / "lenses")
    assert query_json(warehouse, "SELECT count(*) AS n FROM v1.lenses")[0]["n"] == expected


def test_damage_behind_a_link_is_found(warehouse, tmp_path):
    _move_and_link(warehouse / "runs", tmp_path / "other-disk" / "runs")
    manifest = warehouse / B1 / "manifest" / "part-00000.parquet"
    manifest.write_bytes(manifest.read_bytes()[:100])
    result = run_cli("query", RUNS_SQL, "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)[0]["runs"] == [r for r in COMMITTED if r != wf.RUN_B1]
    assert f"run {wf.RUN_B1} (model-b): manifest unreadable" in result.stderr
    damaged = query_json(warehouse, "SELECT run_id, reason FROM v1.damaged_runs ORDER BY run_id")
    assert [row["run_id"] for row in damaged] == [wf.RUN_NO_MANIFEST, wf.RUN_B1]


def test_links_elsewhere_in_the_warehouse_stay_outside_the_sandbox(warehouse, tmp_path):
    """Only the layout's folders are data: a link beside them (or a folder in runs/ that is no
    model's) does not open its target to query SQL."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-secret\n")
    os.symlink(outside, warehouse / "evil")
    os.symlink(outside, warehouse / "runs" / "evil")
    os.symlink(outside, warehouse / "runs" / "model=model-b" / "evil")
    os.symlink(outside / "secret.txt", warehouse / "secret.txt")
    for sql in (
        f"SELECT * FROM read_text('{warehouse}/evil/secret.txt')",
        f"SELECT * FROM read_text('{warehouse}/runs/evil/secret.txt')",
        f"SELECT * FROM read_text('{warehouse}/runs/model=model-b/evil/secret.txt')",
        f"SELECT * FROM read_text('{warehouse}/secret.txt')",
        f"SELECT * FROM read_text('{outside}/secret.txt')",
        f"SELECT * FROM glob('{warehouse}/evil/*')",
    ):
        result = run_cli("query", sql, "--warehouse", warehouse)
        assert_one_line_error(result, "reads the warehouse only")
        assert "outside-secret" not in result.stdout
    assert query_json(warehouse, RUNS_SQL)[0]["runs"] == COMMITTED


# --- 9. SIGTERM during extract is Ctrl-C; guard: cleanup beside a live writer ----------------


def many_prompts(folder: Path, copies: int) -> Path:
    """The tiny prompts `copies` times over: an extract that takes a while."""
    from tests.conftest import TINY_PROMPTS, write_jsonl

    prompts = [{**p, "id": f"{p['id']}-{i}"} | ({"control_of": f"{p['control_of']}-{i}"} if "control_of" in p else {})
               for i in range(copies) for p in TINY_PROMPTS]
    return write_jsonl(folder / "many.jsonl", prompts)


def _start_extract(model: Path, prompts: Path, warehouse: Path, *more) -> subprocess.Popen:
    command = [sys.executable, "-m", "lensdb", "extract", str(model), "--prompts", str(prompts), "--warehouse", str(warehouse),
               "--device", "cpu", "--batch-size", "2", "--quiet", *more]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)


def _wait_for_staged_files(process: subprocess.Popen, warehouse: Path, timeout: float = 180) -> Path:
    deadline = time.time() + timeout
    while time.time() < deadline:
        staged = list((warehouse / "_staging").glob("*/records/*.parquet")) if (warehouse / "_staging").is_dir() else []
        if staged:
            return staged[0].parent.parent
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    process.kill()
    pytest.fail("the extract never staged its records")


def test_sigterm_during_extract_is_handled_as_ctrl_c(tiny_llama, tmp_path):
    warehouse = tmp_path / "warehouse"
    process = _start_extract(tiny_llama, many_prompts(tmp_path, 60), warehouse)
    folder = _wait_for_staged_files(process, warehouse)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 143, (process.returncode, err)
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("lensdb: ") and "terminated" in lines[0], err
    assert "Traceback" not in err and out == ""
    assert not folder.exists() and list((warehouse / "_staging").iterdir()) == []
    assert not (warehouse / "runs").exists() or list((warehouse / "runs").glob("*/*")) == []
    assert catalog.committed_run_count(warehouse) == 0  # nothing for v1.runs to show
    result = run_cli("runs", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0 and json.loads(result.stdout) == [], result.stdout + result.stderr


def test_cleanup_beside_a_live_extract_keeps_its_staging(tiny_llama, tmp_path):
    warehouse = tmp_path / "warehouse"
    process = _start_extract(tiny_llama, many_prompts(tmp_path, 12), warehouse)
    folder = _wait_for_staged_files(process, warehouse)
    cleaned = run_cli("cleanup", "--warehouse", warehouse)
    assert cleaned.exit_code == 0, cleaned.stderr
    assert folder.is_dir()
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err
    run_id = out.strip()
    assert [row["run_id"] for row in query_json(warehouse, "SELECT run_id FROM v1.runs")] == [run_id]


# --- 11. two concurrent imports of the same legacy files -------------------------------------

IMPORTER = """
import sys, time
from pathlib import Path
from lensdb.legacy import importer
from lensdb.cli import main
folder, warehouse, me, others = sys.argv[1], sys.argv[2], Path(sys.argv[3]), [Path(p) for p in sys.argv[4:]]
real = importer.stage_run
staged = []

def stage_then_wait(writer, tables):
    # Every process has passed the early content check and staged its runs before any commits.
    real(writer, tables)
    staged.append(1)
    if len(staged) == expected:
        me.touch()
        deadline = time.time() + 120
        while not all(p.exists() for p in others) and time.time() < deadline:
            time.sleep(0.01)

importer.stage_run = stage_then_wait
expected = len(importer.find_legacy_files(Path(folder)))
main(["import-legacy", folder, "--warehouse", warehouse])
"""


@pytest.fixture
def legacy_folder(tmp_path, request) -> Path:
    """The shared fixture's legacy folder, else the legacy files of a tiny model's seed run."""
    from tests.conftest import LEGACY_RUN

    if LEGACY_RUN.is_dir():
        return LEGACY_RUN
    tiny_llama = request.getfixturevalue("tiny_llama")
    source = tmp_path / "source"
    extracted = run_cli("extract", tiny_llama, "--warehouse", source, "--device", "cpu", "--quiet")
    assert extracted.exit_code == 0, extracted.stderr
    out = tmp_path / "legacy"
    exported = run_cli("export", "--warehouse", source, "--out", out)
    assert exported.exit_code == 0, exported.stderr
    return out


def test_concurrent_imports_of_the_same_files_import_each_model_once(legacy_folder, tmp_path):
    warehouse = tmp_path / "warehouse"
    marks = [tmp_path / f"staged-{i}" for i in range(2)]
    procs = [
        subprocess.Popen([sys.executable, "-c", IMPORTER, str(legacy_folder), str(warehouse), str(mark), *map(str, (m for m in marks if m != mark))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
        for mark in marks
    ]
    outputs = [proc.communicate(timeout=300) for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert all(mark.exists() for mark in marks), "both imports staged before either committed"
    rows = lensdb.query("SELECT model, run_id FROM v1.runs ORDER BY model", warehouse=warehouse).to_pylist()
    models = [row["model"] for row in rows]
    assert len(models) == len(set(models)) > 0, rows  # each model imported once
    run_of = {row["model"]: row["run_id"] for row in rows}
    imported = [line for out, _ in outputs for line in out.splitlines() if "already imported" not in line]
    skipped = [line for out, _ in outputs for line in out.splitlines() if "already imported" in line]
    assert len(imported) == len(skipped) == len(models), outputs
    for line in skipped:  # the second import names the first's run
        model = line.split()[0]
        assert f"already imported as run {run_of[model]}" in line
    assert list((warehouse / "_staging").iterdir()) == []


# --- 12. model names are plain text in static plots ------------------------------------------

ODD_MODELS = ["$x$", "price $5", "back\\slash $", "_^{}", "$\\frac{$", "a_b^c"]


@pytest.fixture(scope="module")
def odd_models(tmp_path_factory) -> Path:
    warehouse = tmp_path_factory.mktemp("round3-plot") / "warehouse"
    for i, model in enumerate(ODD_MODELS):
        run = wf._run_b1()
        run.run_id, run.model = f"odd-{i}", model
        wf.write_run(warehouse, run)
    return warehouse


@pytest.mark.parametrize("suffix", [".png", ".svg", ".pdf"])
def test_plot_curves_with_dollar_signs_in_model_names(odd_models, tmp_path, suffix):
    out = tmp_path / f"curves{suffix}"
    result = run_cli("plot", "curves", "--warehouse", odd_models, "--out", out)
    assert result.exit_code == 0, result.stderr
    assert "Traceback" not in result.stderr and out.stat().st_size > 1000


def test_static_labels_are_the_names_as_written(odd_models, tmp_path):
    import lensdb.plot

    fig = lensdb.plot.curves(warehouse=odd_models)
    (legend,) = [child for ax in fig.axes for child in ax.get_children() if type(child).__name__ == "Legend"]
    texts = [text for text in legend.get_texts()]
    shown = {text.get_text().split(" (")[0] for text in texts} - {"L_semantic"}
    assert shown == set(ODD_MODELS)
    assert all(not text.get_parse_math() and not text.get_usetex() for text in texts)
    lensdb.plot.save(fig, tmp_path / "curves.png")
    for model in ODD_MODELS:
        for kind in ("heatmap", "lenses"):
            out = tmp_path / f"{kind}-{ODD_MODELS.index(model)}.png"
            result = run_cli("plot", kind, "--model", model, "--prompt", wf._run_b1().prompts[0].prompt_id, "--warehouse", odd_models, "--out", out)
            assert result.exit_code == 0, (model, kind, result.stderr)
        fig = lensdb.plot.heatmap(model=model, prompt=wf._run_b1().prompts[0].prompt_id, warehouse=odd_models)
        assert model in fig._suptitle.get_text() and not fig._suptitle.get_parse_math()


HOSTILE = "</script><img src=x onerror=alert(1)>"


def test_guard_html_escaping_in_plots_and_the_report(odd_models, tmp_path):
    """A model name holding markup is text in every HTML lensdb writes (and '$' names too)."""
    warehouse = Path(shutil.copytree(odd_models, tmp_path / "warehouse"))
    run = wf._run_b1()
    run.run_id, run.model = "hostile-1", HOSTILE
    wf.write_run(warehouse, run)
    prompt = run.prompts[0].prompt_id
    outputs = []
    for args in (["report"], ["plot", "curves"], ["plot", "heatmap", "--model", HOSTILE, "--prompt", prompt],
                 ["plot", "lenses", "--model", HOSTILE, "--prompt", prompt]):
        out = tmp_path / f"{args[-1].replace('/', '_')[:8]}-{len(outputs)}.html"
        result = run_cli(*args, "--warehouse", warehouse, "--out", out)
        assert result.exit_code == 0, (args, result.stderr)
        outputs.append(out.read_text(encoding="utf-8"))
    for page in outputs:
        assert "<img src=x" not in page and "</script><img" not in page
    assert any("&lt;img src=x" in page or "\\u003cimg src=x" in page or "\\u003c/script" in page for page in outputs)


# --- 13. damage a query finds inside a file is listed by v1.damaged_runs afterwards ----------


def _corrupt_pages(path: Path) -> None:
    """Overwrite the data pages' bytes but keep the footer readable."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    for i in range(4, len(data) - footer - 4):
        data[i] = 0xA5
    path.write_bytes(bytes(data))


def test_damage_found_by_a_query_is_listed_by_damaged_runs(warehouse, pristine, tmp_path, monkeypatch):
    monkeypatch.setenv("LENSDB_CACHE_DIR", str(tmp_path / "cache"))
    target = warehouse / B1 / "records" / "next-00000.parquet"
    _corrupt_pages(target)
    result = run_cli("query", "SELECT DISTINCT run_id FROM v1.pure_next_token ORDER BY run_id", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert wf.RUN_B1 not in [row["run_id"] for row in json.loads(result.stdout)]
    assert f"run {wf.RUN_B1} (model-b): records/next-00000.parquet unreadable" in result.stderr
    assert "SELECT * FROM v1.damaged_runs" in result.stderr
    # The warning and the view agree: a later query of the view (which reads no records) lists it.
    damaged = query_json(warehouse, "SELECT run_id, folder, reason FROM v1.damaged_runs ORDER BY run_id")
    assert [row["run_id"] for row in damaged] == [wf.RUN_NO_MANIFEST, wf.RUN_B1]
    assert damaged[1]["folder"] == B1.as_posix() and damaged[1]["reason"].startswith("records/next-00000.parquet unreadable")
    listed = run_cli("runs", "--warehouse", warehouse, "--format", "json")
    assert {row["run_id"]: row["status"] for row in json.loads(listed.stdout)}[wf.RUN_B1] == "damaged"
    assert wf.RUN_B1 not in query_json(warehouse, RUNS_SQL)[0]["runs"]
    # An outside DuckDB client reads the same list from the catalog lensdb rebuilt.
    import duckdb

    con = duckdb.connect(str(warehouse / "lensdb.duckdb"), read_only=True)
    try:
        assert (wf.RUN_B1,) in con.execute("SELECT run_id FROM v1.damaged_runs").fetchall()
    finally:
        con.close()
    # Repaired (the file replaced): the record no longer holds and the run is back.
    shutil.copyfile(pristine / B1 / "records" / "next-00000.parquet", target)
    assert query_json(warehouse, "SELECT list(run_id ORDER BY run_id) AS runs FROM v1.damaged_runs")[0]["runs"] == [wf.RUN_NO_MANIFEST]
    assert wf.RUN_B1 in [row["run_id"] for row in query_json(warehouse, "SELECT DISTINCT run_id FROM v1.pure_next_token")]


def test_damage_found_in_a_read_only_run_folder_is_recorded_in_the_cache(warehouse, tmp_path, monkeypatch):
    """A run folder this user cannot write: the finding goes to the user's cache instead."""
    from lensdb.warehouse import health

    monkeypatch.setenv("LENSDB_CACHE_DIR", str(tmp_path / "cache"))
    _corrupt_pages(warehouse / B1 / "records" / "next-00000.parquet")
    real = health._write_json

    def no_run_folder(path, value):
        if path.name == health.DAMAGE_RECORD:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, value)

    monkeypatch.setattr(health, "_write_json", no_run_folder)
    result = run_cli("query", "SELECT count(*) AS n FROM v1.pure_next_token", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert not (warehouse / B1 / health.DAMAGE_RECORD).exists() and list((tmp_path / "cache" / "damage").iterdir())
    damaged = query_json(warehouse, "SELECT list(run_id ORDER BY run_id) AS runs FROM v1.damaged_runs")
    assert damaged[0]["runs"] == [wf.RUN_NO_MANIFEST, wf.RUN_B1]
    # Nowhere to record it: the warning says so instead of pointing at the view alone.
    monkeypatch.setattr(health, "_write_json", lambda path, value: (_ for _ in ()).throw(PermissionError(13, "Permission denied")))
    shutil.rmtree(tmp_path / "cache")
    result = run_cli("query", "SELECT count(*) AS n FROM v1.pure_next_token", "--warehouse", warehouse, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert "could not record it" in result.stderr


def test_damage_found_by_a_query_on_object_storage_is_listed_too(s3_env):
    from lensdb.warehouse import remote, schema
    from lensdb.warehouse.layout import open_warehouse

    url = s3_env.url()
    for run in wf.fixture_runs():
        with open_warehouse(remote.open_url(url)).writer(run.model, run.run_id) as writer:
            wf._stage(writer, run)
            writer.commit(wf.manifest_table(run), schema.MANIFEST)
    fs = s3_env.filesystem()
    [victim] = [key for key in fs.find(f"{s3_env.bucket}/wh/runs/model=model-b/run={wf.RUN_B1}/records") if "/next-" in key]
    data = bytearray(fs.cat_file(victim))
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4 : len(data) - footer - 4] = b"\xa5" * (len(data) - footer - 8)  # the same size: the manifest's check passes
    fs.pipe_file(victim, bytes(data))
    result = run_cli("query", "SELECT DISTINCT run_id FROM v1.pure_next_token", "--warehouse", url, "--format", "json")
    assert result.exit_code == 0, result.stderr
    assert wf.RUN_B1 not in [row["run_id"] for row in json.loads(result.stdout)]
    assert f"run {wf.RUN_B1} (model-b): records/next-" in result.stderr
    damaged = query_json(url, "SELECT list(run_id) AS runs FROM v1.damaged_runs")
    assert damaged[0]["runs"] == [wf.RUN_B1]


# --- guards: the sandbox against symlinks, '..', ATTACH, COPY, SET ----------------------------

GUARDED = [
    "ATTACH '{outside}/new.duckdb' AS other",
    "ATTACH ':memory:' AS other",
    "COPY (SELECT 42) TO '{outside}/copy.csv'",
    "COPY (SELECT 42) TO '.tmp/copy.csv'",
    "SET temp_directory = '{outside}'",
    "SET allowed_directories = ['/']",
    "SET enable_external_access = true",
    "RESET lock_configuration",
    "SELECT * FROM read_text('{warehouse}/../outside/secret.txt')",
    "SELECT * FROM read_text('{warehouse}/runs/../../outside/secret.txt')",
    "SELECT * FROM read_text('{warehouse}/inner-link/secret.txt')",
    "SELECT * FROM glob('{warehouse}/inner-link/*')",
    "SELECT * FROM read_text('{outside}/secret.txt')",
]


@pytest.mark.parametrize("sql", GUARDED)
def test_guard_the_sandbox_still_refuses(warehouse, tmp_path, hostile_cwd, sql):
    outside = tmp_path / "outside"  # hostile_cwd made it, with secret.txt
    os.symlink(outside, warehouse / "inner-link")
    text = sql.format(outside=outside, warehouse=warehouse)
    result = run_cli("query", text, "--warehouse", warehouse)
    assert_one_line_error(result)
    assert "outside-secret" not in result.stdout
    with pytest.raises(QueryError):
        lensdb.query(text, warehouse=warehouse)
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (hostile_cwd / ".tmp" / "copy.csv").exists()

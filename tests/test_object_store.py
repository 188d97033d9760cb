"""Warehouses on object storage (issue 11) against a real S3 API server: URLs for every
command, the commit protocol without rename, queries, and that no secret is written or printed.

moto's server mode runs on localhost (tests/object_store.py); lensdb talks to it through
s3fs as it would to AWS or MinIO, with the credentials and endpoint in the standard AWS_*
variables only. Models are the tiny random ones of conftest.py; extracts run in this process
(the CLI through click's runner) or as real `python -m lensdb` processes where concurrency,
kills and a second reader are the point.

Every command's output and every local catalog cache is kept in TRANSCRIPT, so that the last
test can check that the keys appear nowhere lensdb wrote or printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import lensdb
from lensdb import catalog
from lensdb.errors import DamagedRunsWarning, WarehouseError
from lensdb.warehouse import layout, remote, schema
from lensdb.warehouse.layout import open_warehouse
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import LEGACY_RUN
from tests.object_store import ACCESS_KEY, SECRET_KEY

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


def spawn(env: dict[str, str], *args, cwd: Path = REPO) -> subprocess.Popen:
    """`python -m lensdb ARGS` as a process of its own."""
    TRANSCRIPT.caches.add(Path(env["LENSDB_CACHE_DIR"]))
    command = [sys.executable, "-m", "lensdb", *map(str, args)]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=timeout)
    TRANSCRIPT.record(process.args, stdout + stderr)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def run_process(env, *args, cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess:
    return finish(spawn(env, *args, cwd=cwd), timeout)


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
        with open_warehouse(warehouse).writer(run.model, run.run_id) as writer:
            wf._stage(writer, run)
            writer.commit(wf.manifest_table(run), schema.MANIFEST)


def test_every_view_over_s3_equals_a_local_warehouse_of_the_same_runs(s3_env, tiny_llama, tiny_prompts, tmp_path):
    local, url = tmp_path / "local", s3_env.url()
    for warehouse in (local, url):
        # Same model, prompts, run id and seed: the records are deterministic on the CPU.
        ok(s3_env, "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, *EXTRACT, "--run-id", "llama-1", "--seed", 7, "--keep-residuals", "--quiet")
        write_fixture_runs(layout.resolve_warehouse(str(warehouse)))
    assert {f.run_id for f in layout.run_folders(remote.open_url(url))} == {"llama-1", *(r.run_id for r in wf.fixture_runs())}

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


# --- 4. concurrent extracts into one bucket prefix ---------------------------------------------


def table_rows(sql: str, warehouse) -> list[str]:
    return sorted(repr(row) for row in lensdb.query(sql, warehouse).to_pylist())


def test_four_concurrent_extracts_commit_four_runs(s3_env, tiny_llama, tiny_gpt2, tiny_prompts):
    url, env = s3_env.url(), process_env(s3_env)
    models = [tiny_llama, tiny_gpt2, tiny_llama, tiny_gpt2]  # two writers in each model's prefix
    # Not --quiet: the summaries, progress bars and logs go into the transcript (test 7).
    processes = [spawn(env, "extract", model, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT, "--json") for model in models]
    done = [finish(process) for process in processes]
    assert [p.returncode for p in done] == [0] * 4, [p.stderr for p in done]
    run_ids = [json.loads(p.stdout)["run_id"] for p in done]
    assert len(set(run_ids)) == 4

    surveyed = remote.survey(remote.open_url(url))
    assert sorted(f.run_id for f in surveyed.folders) == sorted(run_ids)
    assert (surveyed.damaged, surveyed.leftovers) == ([], [])
    records = records_per_run(url)
    assert set(records) == set(run_ids)
    footers = {run["run_id"]: run["records"] for run in json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))}
    assert footers == records
    # The two runs of one model hold the same records (no writer's files went into another's run).
    by_run: dict[str, list[str]] = {run_id: [] for run_id in run_ids}
    for row in lensdb.query("SELECT * FROM v1.records", url).to_pylist():
        by_run[row.pop("run_id")].append(repr(row))
    for first, second in ((run_ids[0], run_ids[2]), (run_ids[1], run_ids[3])):
        assert sorted(by_run[first]) == sorted(by_run[second]) and len(by_run[first]) == records[first]


def test_two_concurrent_extracts_with_one_run_id_commit_once(s3_env, tiny_llama, tiny_prompts):
    url, env = s3_env.url(), process_env(s3_env)
    args = ["extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT, "--run-id", "same-id", "--quiet"]
    done = [finish(process) for process in [spawn(env, *args), spawn(env, *args)]]
    assert sorted(p.returncode for p in done)[0] == 0 and sorted(p.returncode for p in done)[1] != 0, [p.stderr for p in done]
    winner, loser = sorted(done, key=lambda p: p.returncode)
    assert winner.stdout.strip() == "same-id"
    assert loser.stderr.strip() == f"lensdb: error: run id same-id already exists in {url}"
    surveyed = remote.survey(remote.open_url(url))
    assert [f.run_id for f in surveyed.folders] == ["same-id"]
    assert (surveyed.damaged, surveyed.leftovers) == ([], []), "the loser removed its files"
    assert records_per_run(url) == {"same-id": json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))[0]["records"]}


RACING_WRITER = """
import sys, time
from pathlib import Path
from lensdb.errors import LensdbError
from lensdb.warehouse import layout, schema
from lensdb.warehouse.layout import open_warehouse
from tests import warehouse_fixtures as wf
url, ready, go = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
run = wf._run_b1()
run.run_id = "same-id"
try:
    with open_warehouse(url).writer(run.model, run.run_id) as writer:
        wf._stage(writer, run)
        writer.finish()  # every data file is in the bucket before any writer commits
        ready.touch()
        while not go.exists():
            time.sleep(0.005)
        writer.commit(wf.manifest_table(run), schema.MANIFEST)
    print("committed")
except LensdbError as exc:
    print(f"failed: {exc}")
"""


def test_writers_racing_for_one_run_id_in_one_prefix_commit_exactly_once(s3_env, tmp_path):
    """Four writers of one model and run id pass the early check, write their files, then all
    commit at once: the conditional put of the manifest lets exactly one win, and the losers
    remove their files."""
    url, env = s3_env.url(), process_env(s3_env)
    processes = [
        subprocess.Popen([sys.executable, "-c", RACING_WRITER, url, str(tmp_path / f"ready-{i}"), str(tmp_path / "go")], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(4)):
        assert time.time() < deadline and all(p.poll() is None for p in processes), [p.communicate() for p in processes if p.poll() is not None]
        time.sleep(0.01)
    tokens = {name.rsplit("-", 2)[-2] for name in run_objects(s3_env, "same-id") if "/records/" in name}
    assert len(tokens) == 4, "every writer's files are in the run's prefix before the commit"
    (tmp_path / "go").touch()
    outputs = [finish(process, 120).stdout.strip() for process in processes]
    assert outputs.count("committed") == 1, outputs
    assert all(o == "committed" or o == f"failed: run id same-id already exists in {url}" for o in outputs), outputs
    surveyed = remote.survey(remote.open_url(url))
    assert [f.run_id for f in surveyed.folders] == ["same-id"]
    assert (surveyed.damaged, surveyed.leftovers) == ([], [])


def test_the_manifest_put_is_conditional(s3_env, monkeypatch):
    """Of two writers past every check, the second manifest put fails on the store's
    If-None-Match (not on lensdb's own look first), and the first commit stays intact."""
    warehouse = remote.open_url(s3_env.url())
    run = wf._run_b1()
    first, second = (open_warehouse(warehouse).writer(run.model, run.run_id) for _ in range(2))
    for writer in (first, second):
        writer.open()
        wf._stage(writer, run)
    first.commit(wf.manifest_table(run), schema.MANIFEST)
    manifest = f"{first.prefix}/{remote.MANIFEST_FILE}"
    committed = warehouse.read_bytes(manifest)
    monkeypatch.setattr(second, "_check_run_id_is_new", lambda: None)
    with pytest.raises(WarehouseError, match=f"run id {run.run_id} already exists"):
        second.commit(wf.manifest_table(run), schema.MANIFEST)
    second.abort()
    assert warehouse.read_bytes(manifest) == committed
    surveyed = remote.survey(warehouse)
    assert [f.run_id for f in surveyed.folders] == [run.run_id]
    assert (surveyed.damaged, surveyed.leftovers) == ([], [])
    assert {name.rsplit("-", 2)[-2] for name in run_objects(s3_env, run.run_id) if not name.endswith(remote.MANIFEST_FILE)} == {first.token}


# --- 5. an extract killed mid-write --------------------------------------------------------------

# `lensdb extract` killed outright (SIGKILL) at the one moment when a killed extract leaves
# objects: its data files are closed and in the bucket, its manifest is not. Before that
# moment a kill leaves no object at all: s3fs uploads a file when it is closed (a file above
# the block size as a multipart upload, invisible until completed), and extract closes its
# files only when it commits.
KILLED_EXTRACT = """
import os, signal, sys
from lensdb.cli import main
from lensdb.warehouse.remote_writer import RemoteRunWriter

def commit_then_die(self, manifest, manifest_schema):
    self.finish()
    os.kill(os.getpid(), signal.SIGKILL)

RemoteRunWriter.commit = commit_then_die
main(args=sys.argv[1:], prog_name="lensdb")
"""


def test_an_extract_killed_mid_write_leaves_nothing_visible_and_cleanup_removes_it(s3_env, tiny_llama, tiny_gpt2, tiny_prompts):
    url = s3_env.url()
    extract_into(s3_env, tiny_gpt2, tiny_prompts, url, "kept")
    views_before = table_rows("SELECT run_id, model, lens, count(*) AS n FROM v1.records GROUP BY ALL", url)
    kept = run_objects(s3_env, "kept")

    args = ["extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT, "--run-id", "killed", "--quiet"]
    killed = subprocess.run([sys.executable, "-c", KILLED_EXTRACT, *map(str, args)], cwd=REPO, env=process_env(s3_env), capture_output=True, text=True, timeout=300)
    TRANSCRIPT.record(killed.args, killed.stdout + killed.stderr)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    left = run_objects(s3_env, "killed")
    assert {key.split("/")[-2] for key in left} >= {"prompts", "records", "vocab", "finals"}, left
    assert not any(key.endswith(remote.MANIFEST_FILE) for key in left)

    # Nothing visible: not in `lensdb runs`, not in any view.
    assert [run["run_id"] for run in json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))] == ["kept"]
    assert table_rows("SELECT run_id, model, lens, count(*) AS n FROM v1.records GROUP BY ALL", url) == views_before
    assert table_rows("SELECT run_id FROM v1.runs", url) == [repr({"run_id": "kept"})]
    assert lensdb.query("SELECT count(*) AS n FROM v1.damaged_runs", url).column("n").to_pylist() == [0]

    # `runs --uncommitted` lists it; cleanup leaves it while it is young, removes it with --older-than 0s.
    [leftover] = json.loads(ok(s3_env, "runs", "--uncommitted", "--warehouse", url, "--format", "json"))
    assert (leftover["kind"], leftover["run_id"], leftover["model"], leftover["files"]) == ("uncommitted", "killed", tiny_llama.name, len(left))
    assert leftover["location"] == f"{url}/runs/model={tiny_llama.name}/run=killed"
    assert cli(s3_env, "cleanup", "--warehouse", url).stderr.strip() == "nothing to remove"
    assert ok(s3_env, "cleanup", "--older-than", "0s", "--dry-run", "--warehouse", url).startswith("would remove uncommitted killed  (")
    assert run_objects(s3_env, "killed") == left
    assert ok(s3_env, "cleanup", "--older-than", "0s", "--warehouse", url).startswith(f"removed uncommitted killed  ({len(left)} files, ")
    assert run_objects(s3_env, "killed") == {}
    assert run_objects(s3_env, "kept") == kept
    assert json.loads(ok(s3_env, "runs", "--uncommitted", "--warehouse", url, "--format", "json")) == []
    assert table_rows("SELECT run_id, model, lens, count(*) AS n FROM v1.records GROUP BY ALL", url) == views_before

    # The run id is free again: the next extract with it commits.
    assert extract_into(s3_env, tiny_llama, tiny_prompts, url, "killed") == "killed"
    assert sorted(records_per_run(url)) == ["kept", "killed"]


# --- 6. a second process that knows only the URL and the credentials ----------------------------


def test_a_second_process_with_only_the_url_and_credentials_sees_the_same_runs(s3_env, tiny_llama, tiny_prompts, tmp_path):
    url = s3_env.url()
    extract_into(s3_env, tiny_llama, tiny_prompts, url, "seen")
    sql = "SELECT run_id, model, lens, layer, count(*) AS n, sum(entropy_bits) AS entropy FROM v1.records GROUP BY ALL ORDER BY ALL"
    here_runs = ok(s3_env, "runs", "--warehouse", url, "--format", "json")
    here_query = ok(s3_env, "query", sql, "--warehouse", url, "--format", "json")

    # Another process: the AWS_* variables and the URL (in $LENSDB_WAREHOUSE), nothing of this
    # process: a catalog cache of its own, started empty, another working directory.
    fresh = tmp_path / "other-cache"
    env = {name: os.environ[name] for name in ("PATH", "HOME") if name in os.environ}
    env |= {name: value for name, value in s3_env.env.items() if name.startswith("AWS_")}
    env |= {"PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore", "LENSDB_CACHE_DIR": str(fresh), "LENSDB_WAREHOUSE": url}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    there_runs = run_process(env, "runs", "--format", "json", cwd=elsewhere)
    there_query = run_process(env, "query", sql, "--format", "json", cwd=elsewhere)
    assert (there_runs.returncode, there_query.returncode) == (0, 0), there_runs.stderr + there_query.stderr
    assert there_runs.stdout == here_runs and json.loads(here_runs)[0]["run_id"] == "seen"
    assert there_query.stdout == here_query and len(json.loads(here_query)) > 0
    assert list(fresh.glob("catalogs/*/lensdb.duckdb")), "the second process built its own catalog"


# --- 8. a damaged run on s3:// -------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::lensdb.errors.DamagedRunsWarning")
def test_an_overwritten_data_file_leaves_its_run_out_of_the_views(s3_env):
    url = s3_env.url()
    write_fixture_runs(remote.open_url(url))  # four runs of three models
    records = records_per_run(url)
    others = table_rows("SELECT * FROM v1.records WHERE run_id <> 'a-run1'", url)
    # Another writer overwrites one of a run's data files: a valid Parquet file, other bytes.
    [victim] = [key for key in run_objects(s3_env, "a-run1") if "/finals/" in key]
    [other] = [key for key in run_objects(s3_env, "b-run1") if "/finals/" in key]
    fs = s3_env.filesystem()
    original, replacement = fs.cat_file(f"{s3_env.bucket}/{victim}"), fs.cat_file(f"{s3_env.bucket}/{other}")
    assert len(replacement) != len(original)
    fs.pipe_file(f"{s3_env.bucket}/{victim}", replacement)

    folder = "runs/model=org%2Fmodel-a/run=a-run1"
    why = f"{victim.split(folder + '/', 1)[1]} has {len(replacement)} bytes, its manifest says {len(original)} (overwritten or truncated)"
    listed = {run["run_id"]: run for run in json.loads(ok(s3_env, "runs", "--warehouse", url, "--format", "json"))}
    assert {run_id: (run["status"], run["damaged"]) for run_id, run in listed.items()} == {
        "a-run1": ("damaged", why), "a-run2": ("committed", None), "b-run1": ("committed", None), "legacy-run1": ("committed", None)
    }
    with pytest.warns(DamagedRunsWarning, match=r"1 damaged run is left out of every view: run a-run1 \(org/model-a\)"):
        damaged = lensdb.query("SELECT model, run_id, folder, reason FROM v1.damaged_runs", url).to_pylist()
    assert damaged == [{"model": "org/model-a", "run_id": "a-run1", "folder": folder, "reason": why}]
    # The other runs still query, whole; the damaged one is in no view.
    assert records_per_run(url) == {run_id: n for run_id, n in records.items() if run_id != "a-run1"}
    assert table_rows("SELECT * FROM v1.records WHERE run_id <> 'a-run1'", url) == others
    views = ("v1.runs", "v1.prompts", "v1.final_predictions", "v1.diagnostics")
    sql = " UNION ".join(f"SELECT '{view}' AS view, run_id FROM {view}" for view in views)
    seen = lensdb.query(sql, url).to_pylist()
    assert sorted((row["view"], row["run_id"]) for row in seen) == [(view, run) for view in sorted(views) for run in ("a-run2", "b-run1", "legacy-run1")]
    result = cli(s3_env, "query", "SELECT count(DISTINCT run_id) AS n FROM v1.records", "--warehouse", url, "--format", "csv")
    assert result.exit_code == 0 and result.stdout == '"n"\n3\n'
    assert "run a-run1 (org/model-a)" in result.stderr, "the damaged run is named on stderr"


# --- queries read each file without asking the store about it first ------------------------------


def s3_requests(monkeypatch) -> list[tuple[str, str]]:
    """The S3 API calls s3fs makes in this process from now on: (operation, key)."""
    import s3fs.core

    calls: list[tuple[str, str]] = []
    real = s3fs.core.S3FileSystem._call_s3

    async def recording(self, method, *args, **kwargs):
        calls.append((method, kwargs.get("Key", "")))
        return await real(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.core.S3FileSystem, "_call_s3", recording)
    return calls


def test_a_query_asks_no_head_request_for_the_files_it_reads(s3_env, monkeypatch):
    """DuckDB opens, sizes and dates every file it reads through the registered filesystem;
    the listing of the glob that found the file answers all three (else: three HEAD requests
    per file and query, before its GET)."""
    warehouse = remote.open_url(s3_env.url())
    write_fixture_runs(warehouse)
    with monkeypatch.context() as patch:
        calls = s3_requests(patch)
        table = lensdb.query("SELECT run_id, count(*) AS n, sum(entropy_bits) AS h FROM v1.records GROUP BY ALL", warehouse)
    assert table.num_rows == len(wf.fixture_runs())
    records = {key for key in objects(s3_env) if "/records/" in key}
    assert {key for method, key in calls if method == "get_object" and "/records/" in key} == records
    assert [key for method, key in calls if method == "head_object" and "/records/" in key] == []


# --- 7. no secret anywhere ------------------------------------------------------------------------


def closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # free once the socket closes: nothing listens there


def test_no_secret_in_any_object_cache_file_or_output(s3_env, tiny_llama, tiny_prompts, monkeypatch, tmp_path):
    """Last in this module: what every test above wrote into the bucket(s), the local catalog
    caches and the outputs of every command, plus this test's own commands and failures."""
    url = s3_env.url()
    ok(s3_env, "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT, "--json")
    ok(s3_env, "query", "SELECT * FROM v1.runs", "--warehouse", url, "--format", "json")
    ok(s3_env, "runs", "--warehouse", url)
    ok(s3_env, "export", "--warehouse", url, "--out", tmp_path / "export")

    # A URL with credentials in it is refused in one line that names neither key.
    for args in (["runs"], ["query", "SELECT 1"], ["extract", tiny_llama, "--prompts", tiny_prompts, *EXTRACT]):
        line = assert_one_line_error(cli(s3_env, *args, "--warehouse", f"s3://{ACCESS_KEY}:{SECRET_KEY}@{s3_env.bucket}/x"), "holds credentials")
        assert SECRET_KEY not in line and ACCESS_KEY not in line
    with pytest.raises(WarehouseError) as refused:
        lensdb.query("SELECT 1", f"s3://{ACCESS_KEY}:{SECRET_KEY}@{s3_env.bucket}/x")
    assert SECRET_KEY not in str(refused.value) and ACCESS_KEY not in str(refused.value)

    # An endpoint where nothing listens: one line naming the warehouse, a non-zero exit. (One
    # attempt: botocore's retries would take some 13 s to end in the same message.)
    nowhere = f"http://127.0.0.1:{closed_port()}"
    with monkeypatch.context() as patch:
        patch.setenv("AWS_ENDPOINT_URL", nowhere)
        patch.setenv("AWS_MAX_ATTEMPTS", "1")
        for args in (["runs"], ["query", "SELECT 1"], ["rm", "x", "--yes"]):
            assert_one_line_error(cli(s3_env, *args, "--warehouse", url), f"the warehouse {url}: EndpointConnectionError")
        assert_one_line_error(cli(s3_env, "extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", url, *EXTRACT), f"the warehouse {url}: EndpointConnectionError")

    # Every object of every bucket of the server (this test's and the tests' above).
    fs = s3_env.filesystem()
    keys = [key for bucket in fs.ls("") for key in fs.find(bucket)]
    contents = fs.cat(keys)
    assert len(contents) == len(keys) > 0 and any(key.endswith(remote.MANIFEST_FILE) for key in keys)
    cached = [path for cache in TRANSCRIPT.caches for path in cache.rglob("*") if path.is_file()]
    assert any(path.name == "lensdb.duckdb" for path in cached)
    for secret in (SECRET_KEY, ACCESS_KEY):
        assert [key for key, data in contents.items() if secret.encode() in data] == [], secret
        assert [path for path in cached if secret.encode() in path.read_bytes()] == [], secret
        assert [command for command, text in TRANSCRIPT.outputs if secret in text] == [], secret
    assert len(TRANSCRIPT.outputs) >= 12

"""Warehouse hardening (issue 9) of the writers: run ids unique under concurrency (2),
import-legacy all or nothing (3), and extract's bad input as one line before any work,
full disks included (8). Real processes where concurrency is the point."""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

import lensdb
from lensdb.extract.config import SEED_MAX, SEED_MIN, check_extract_options
from lensdb.errors import LensdbError
from lensdb.warehouse import layout
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO), "PYTHONWARNINGS": "ignore"}


def run_folders(warehouse: Path) -> list[Path]:
    return [folder.path for folder in layout.run_folders(warehouse)]


def staging(warehouse: Path) -> list[Path]:
    folder = warehouse / layout.STAGING_DIR
    return sorted(folder.iterdir()) if folder.is_dir() else []


# --- 2. one run id, several writers at once ------------------------------------------------

WRITER = """
import sys, time
from pathlib import Path
from lensdb.errors import LensdbError
from lensdb.warehouse import schema
from lensdb.warehouse.writer import RunWriter
from tests import warehouse_fixtures as wf
warehouse, model, ready, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
run = wf._run_b1()
run.run_id, run.model = "same-id", model
try:
    with RunWriter(warehouse, model, run.run_id) as writer:
        wf._stage(writer, run)
        ready.touch()
        while not go.exists():
            time.sleep(0.005)
        writer.commit(wf.manifest_table(run), schema.MANIFEST)
    print("committed")
except LensdbError as exc:
    print(f"failed: {exc}")
"""


def test_writers_with_one_run_id_commit_exactly_once(tmp_path):
    """Every writer passes the early check, then all commit at once: exactly one wins."""
    warehouse = tmp_path / "warehouse"
    models = [f"org/model-{i}" for i in range(4)]
    procs = []
    for i, model in enumerate(models):
        args = [warehouse, model, tmp_path / f"ready-{i}", tmp_path / "go"]
        procs.append(subprocess.Popen([sys.executable, "-c", WRITER, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV))
    deadline = time.time() + 120
    while not all((tmp_path / f"ready-{i}").exists() for i in range(len(models))):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs if p.poll() is not None]
        time.sleep(0.01)
    (tmp_path / "go").touch()
    outputs = [p.communicate(timeout=120)[0].strip() for p in procs]
    assert outputs.count("committed") == 1, outputs
    assert all(o == "committed" or "run id same-id already exists" in o for o in outputs), outputs
    assert len(run_folders(warehouse)) == 1 and staging(warehouse) == []
    assert lensdb.query("SELECT count(*) AS n FROM v1.runs WHERE run_id = 'same-id'", warehouse=warehouse).to_pylist() == [{"n": 1}]


def test_concurrent_extracts_with_one_run_id(tiny_llama, tiny_prompts, tmp_path):
    warehouse = tmp_path / "warehouse"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "lensdb.cli", "extract", str(tiny_llama), "--prompts", str(tiny_prompts), "--warehouse", str(warehouse),
             "--run-id", "shared", "--model-name", name, "--device", "cpu", "--quiet", "--lens", "norm"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV,
        )
        for name in ("first-model", "second-model")
    ]
    results = [(p.communicate(timeout=600)[1], p.returncode) for p in procs]
    assert [rc for _, rc in results].count(0) == 1, results
    (failed_stderr,) = [err for err, rc in results if rc != 0]
    lines = [line for line in failed_stderr.splitlines() if line.strip()]
    assert lines == [f"lensdb: error: run id shared already exists in {warehouse}"], failed_stderr
    assert len(run_folders(warehouse)) == 1 and staging(warehouse) == []
    rows = lensdb.query("SELECT count(DISTINCT model) AS models, count(*) AS rows FROM v1.diagnostics WHERE run_id = 'shared'", warehouse=warehouse)
    assert rows.to_pylist() == [{"models": 1, "rows": 6}]  # 6 prompts x 1 lens: not doubled


# --- 3. import-legacy: all or nothing -------------------------------------------------------


@pytest.fixture(scope="module")
def legacy_folder(tmp_path_factory) -> Path:
    """Legacy files of two models, exported from fixture runs."""
    base = tmp_path_factory.mktemp("legacy")
    warehouse = base / "source"
    warehouse.mkdir()
    for index, model in enumerate(["org/exp-one", "org/exp-two"]):
        run = wf._run_b1()
        run.run_id, run.model = f"exp-{index}", model
        run.prompts[0].prompt_id, run.prompts[0].role = "pos", "pos"
        run.prompts[1].prompt_id, run.prompts[1].role, run.prompts[1].control_of = "ctl", "ctl", "pos"
        wf.write_run(warehouse, run)
    result = run_cli("export", "--warehouse", warehouse, "--out", base / "files")
    assert result.exit_code == 0, result.stderr
    return base / "files"


def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text(encoding="utf-8"))
    edit(doc)
    path.write_text(json.dumps(doc), encoding="utf-8")


def test_import_legacy_of_two_models(legacy_folder, tmp_path):
    result = run_cli("import-legacy", legacy_folder, "--warehouse", tmp_path / "w")
    assert result.exit_code == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()] == ["org/exp-one", "org/exp-two"]
    assert len(run_folders(tmp_path / "w")) == 2


def test_a_model_imported_before_is_named_and_the_new_one_imported(legacy_folder, tmp_path):
    """The content-hash skip (main) and the all-or-nothing import (harden) together."""
    only_one = tmp_path / "one"
    only_one.mkdir()
    for path in legacy_folder.glob("output-exp-one*"):
        shutil.copy(path, only_one / path.name)
    warehouse = tmp_path / "w"
    first = lensdb_import(only_one, warehouse)
    assert [(run.model, run.already_imported) for run in first] == [("org/exp-one", False)]
    both = lensdb_import(legacy_folder, warehouse)
    assert [(run.model, run.already_imported) for run in both] == [("org/exp-one", True), ("org/exp-two", False)]
    assert both[0].run_id == first[0].run_id
    assert sorted(folder.name for folder in run_folders(warehouse)) == sorted(f"run={run.run_id}" for run in both)


def lensdb_import(folder: Path, warehouse: Path):
    from lensdb.legacy.importer import import_legacy

    return import_legacy(folder, warehouse)


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda doc: doc["model_stats"].__setitem__("num_layers", "two"), "unexpected value in diagnostics or model_stats"),
        (lambda doc: doc["final_prediction"].__setitem__("entropy", "high"), "unexpected value"),
        (lambda doc: doc["diagnostics"].__setitem__("model", ""), "diagnostics.model"),
    ],
    ids=["manifest value", "table value", "empty model id"],
)
def test_a_bad_value_in_the_second_model_imports_nothing(legacy_folder, tmp_path, edit, fragment):
    folder = Path(shutil.copytree(legacy_folder, tmp_path / "files"))
    _edit_json(folder / "output-exp-two.json", edit)
    warehouse = tmp_path / "w"
    assert_one_line_error(run_cli("import-legacy", folder, "--warehouse", warehouse), "output-exp-two.json", fragment)
    assert run_folders(warehouse) == [] and staging(warehouse) == []


def test_a_failed_commit_takes_back_the_runs_committed_before(legacy_folder, tmp_path, monkeypatch):
    from lensdb.warehouse.writer import RunWriter

    commit = RunWriter.commit
    seen = []

    def commit_then_fail(self, *args):
        seen.append(self.model)
        if len(seen) == 2:
            raise OSError(errno.EIO, "Input/output error")
        return commit(self, *args)

    monkeypatch.setattr(RunWriter, "commit", commit_then_fail)
    warehouse = tmp_path / "w"
    assert_one_line_error(run_cli("import-legacy", legacy_folder, "--warehouse", warehouse), "Input/output error")
    assert seen == ["org/exp-one", "org/exp-two"]
    assert run_folders(warehouse) == [] and staging(warehouse) == []


def test_a_full_disk_during_an_import_imports_nothing(legacy_folder, tmp_path, monkeypatch):
    warehouse = tmp_path / "w"
    run_cli("import-legacy", legacy_folder, "--warehouse", warehouse)  # an earlier import
    before = run_folders(warehouse)
    calls = []
    write_table = pq.ParquetWriter.write_table

    def full_after_a_while(self, *args, **kwargs):
        calls.append(1)
        if len(calls) > 8:
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_table(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetWriter, "write_table", full_after_a_while)
    # --force: the same files again (without it, import-legacy finds them imported and writes nothing)
    assert_one_line_error(run_cli("import-legacy", legacy_folder, "--force", "--warehouse", warehouse), "No space left on device", str(warehouse))
    assert run_folders(warehouse) == before and staging(warehouse) == []


# --- 8. extract: bad input before any work, full disks ----------------------------------------


def test_seed_outside_64_bits(tiny_llama, tmp_path):
    warehouse = tmp_path / "w"
    for seed in (2**64, 2**63, SEED_MIN - 1):
        assert_one_line_error(run_cli("extract", tiny_llama, "--seed", seed, "--warehouse", warehouse), f"--seed {seed} is outside 64 bits")
    assert not warehouse.exists()  # refused before anything was written or loaded
    for seed in (SEED_MIN, 0, SEED_MAX):
        check_extract_options(model="m", model_name=None, seed=seed, run_id=None)


@pytest.mark.parametrize("name", ["", "   ", "a\nb", "tab\there", "bad\udcff"])
def test_bad_model_names(tiny_llama, tmp_path, name):
    warehouse = tmp_path / "w"
    assert_one_line_error(run_cli("extract", tiny_llama, "--model-name", name, "--warehouse", warehouse), "--model-name")
    assert not warehouse.exists()


def test_bad_model_argument_and_run_id(tmp_path):
    warehouse = tmp_path / "w"
    assert_one_line_error(run_cli("extract", "some-org/bad\udcff", "--warehouse", warehouse), "not valid UTF-8")
    assert_one_line_error(run_cli("extract", "some-org/model", "--run-id", "", "--warehouse", warehouse), "invalid run id")
    assert_one_line_error(run_cli("extract", "some-org/model", "--run-id", "../up", "--warehouse", warehouse), "invalid run id")
    assert not warehouse.exists()
    assert_one_line_error(run_cli("query", "SELECT 1", "--warehouse", str(tmp_path / "w\udcff")), "not valid UTF-8")


@pytest.mark.parametrize(
    "name, content, fragment",
    [
        ("latin1.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "caf\xe9"}\n', "latin1.jsonl:2: not UTF-8"),
        ("latin1.yaml", b"lensdb_prompt_set: 1\nname: x\nprompts:\n  - {id: a, text: caf\xe9}\n", "latin1.yaml:4: not UTF-8"),
        ("surrogate.jsonl", b'{"id": "a", "text": "fine"}\n{"id": "b", "text": "half \\ud800 a pair"}\n', "surrogate.jsonl:2: 'text' holds a lone surrogate"),
        ("surrogate-id.jsonl", b'{"id": "\\udc80", "text": "x"}\n', "surrogate-id.jsonl:1: 'id' holds a lone surrogate"),
        ("surrogate-gold.jsonl", b'{"id": "a", "text": "x", "gold": "\\ud83d"}\n', "'gold' holds a lone surrogate"),
    ],
)
def test_prompt_files_that_are_not_text(tiny_llama, tmp_path, name, content, fragment):
    path = tmp_path / name
    path.write_bytes(content)
    warehouse = tmp_path / "w"
    assert_one_line_error(run_cli("extract", tiny_llama, "--prompts", path, "--warehouse", warehouse), fragment)
    assert not warehouse.exists()


def test_a_long_model_name_is_stored_whole(tiny_llama, tiny_prompts, tmp_path):
    name = "org/" + "a-very-long-model-name-" * 12 + "日本語" * 20
    warehouse = tmp_path / "w"
    result = run_cli("extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, "--model-name", name,
                     "--device", "cpu", "--quiet", "--lens", "norm")
    assert result.exit_code == 0, result.stderr
    (folder,) = run_folders(warehouse)
    assert len(folder.parent.name.encode()) <= 255
    rows = lensdb.query("SELECT DISTINCT r.model AS run_model, d.model AS diagnostics_model FROM v1.runs r JOIN v1.diagnostics d USING (run_id)",
                        warehouse=warehouse).to_pylist()
    assert rows == [{"run_model": name, "diagnostics_model": name}]


@pytest.mark.parametrize("where", ["while streaming", "at the commit"])
def test_a_full_disk_is_one_line_and_leaves_earlier_runs(tiny_llama, tiny_prompts, tmp_path, monkeypatch, where):
    warehouse = tmp_path / "w"
    args = ["extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, "--device", "cpu", "--quiet", "--lens", "norm"]
    first = run_cli(*args, "--run-id", "earlier")
    assert first.exit_code == 0, first.stderr
    earlier = {p: p.read_bytes() for p in run_folders(warehouse)[0].rglob("*.parquet")}

    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if where == "while streaming":
        monkeypatch.setattr(pq.ParquetWriter, "__init__", no_space)
    else:
        monkeypatch.setattr(pq.ParquetWriter, "close", no_space)
    line = assert_one_line_error(run_cli(*args, "--run-id", "later"), str(warehouse), "No space left on device", "nothing was committed")
    assert "later" in line
    monkeypatch.undo()
    assert staging(warehouse) == [] and [p.name for p in run_folders(warehouse)] == ["run=earlier"]
    assert {p: p.read_bytes() for p in earlier} == earlier
    assert lensdb.query("SELECT count(*) AS n FROM v1.diagnostics", warehouse=warehouse).to_pylist() == [{"n": 6}]


def test_the_options_check_needs_no_torch():
    with pytest.raises(LensdbError, match="outside 64 bits"):
        check_extract_options(model="m", model_name=None, seed=-(2**63) - 1, run_id=None)
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, lensdb.extract.config; print(' '.join(sys.modules))"], capture_output=True, text=True, env=ENV
    ).stdout.split()

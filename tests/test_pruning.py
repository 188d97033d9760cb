"""Filters on model or run_id read only that partition's files (issue #11: on object storage
every opened file costs requests).

The views (sql/v1, rendered as lensdb installs them) run on a DuckDB connection whose
warehouse root is a counting fsspec filesystem: the local filesystem under its own protocol,
registered with the connection, so the test sees every file DuckDB opens, as an object
store's fsspec filesystem would. The warehouse holds the fixture runs plus runs of model ids
with '/', spaces, non-ASCII letters, '+' and '%', and of ids too long for a folder name
(shortened folder names, whose model only the manifest holds).
"""

from __future__ import annotations

import re
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import duckdb
import pytest
from fsspec.implementations.local import LocalFileSystem
from hypothesis import given, settings
from hypothesis import strategies as st

import lensdb
from lensdb import catalog
from lensdb.errors import DamagedRunsWarning
from lensdb.warehouse import health, layout
from tests import warehouse_fixtures as wf

PROTOCOL = "lensdbcount"
ODD_MODEL = "org/mödel 日本 +1%2B 100%"  # '/', spaces, non-ASCII, '+', '%' and a literal "%2B"
LONG_MODEL = "org/" + "x" * 300
LONG_MODEL_2 = "日本語" * 120
EXTRA_RUNS = {  # run id -> model
    "odd-1": ODD_MODEL,
    "plus-1": "a+b",
    "pct-1": "100%/..",
    "long-1": LONG_MODEL,
    "long-2": LONG_MODEL,  # the later run of LONG_MODEL (same created_at: the run id decides)
    "long-3": LONG_MODEL_2,
    "edge-249": "b" * 249,  # the longest key a folder name holds (layout.MODEL_KEY_MAX)
    "edge-250": "b" * 250,  # one more: shortened
}
MODELS = [wf.MODEL_A, wf.MODEL_B, wf.MODEL_LEGACY, ODD_MODEL, "a+b", "100%/..", LONG_MODEL, LONG_MODEL_2, "b" * 249, "b" * 250]
DATA_TABLES = ("prompts", "records", "finals", "consistency", "residuals", "legacy_raw_lens_samples", "vocab")
# Every public view of the runs (v1.lenses reads stored lenses, v1.damaged_runs a variable);
# those of the manifests alone prune them too.
MANIFEST_VIEWS = ("v1.runs", "v1.latest_runs")
VIEWS = [
    "v1.runs", "v1.latest_runs", "v1.prompts", "v1.records", "v1.residuals", "v1.final_predictions", "v1.vocab",
    "v1.pure_next_token", "v1.pure_next_token_with(0.5, 0.05, 2)", "v1.diagnostics", "v1.diagnostics_with(0.5, 0.05, 2)",
    "v1.control_summary", "v1.ablation_summary", "v1.raw_lens_check", "v1.raw_lens_summary", "v1.last_layer_consistency",
]


class CountingFileSystem(LocalFileSystem):
    """The local filesystem under its own protocol, recording every file it opens."""

    protocol = PROTOCOL
    root_marker = "/"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.opened: list[str] = []

    @classmethod
    def _strip_protocol(cls, path):
        path = str(path)
        if path.startswith(f"{PROTOCOL}://"):
            path = path[len(PROTOCOL) + 3 :]
        return LocalFileSystem._strip_protocol(path)

    def _open(self, path, mode="rb", **kwargs):
        self.opened.append(self._strip_protocol(path))
        return super()._open(path, mode, **kwargs)


@dataclass
class Result:
    columns: list[str]
    rows: list[tuple]  # sorted
    opened: set[str]  # files opened, relative to the warehouse

    def rows_where(self, column: str, value) -> list[tuple]:
        index = self.columns.index(column)
        return [row for row in self.rows if row[index] == value]


class Reader:
    """The v1 views over `warehouse` on a connection that reads through a counting filesystem.

    DuckDB's caches of file contents and Parquet metadata are off, so that every query
    opens what it reads (the same files as on a fresh connection)."""

    def __init__(self, warehouse: Path, damaged=None):
        self.warehouse = warehouse
        damaged = health.damaged_runs(warehouse) if damaged is None else damaged
        root = f"{PROTOCOL}://" + layout.glob_literal(str(warehouse)).replace("'", "''")
        self.filesystem = CountingFileSystem(skip_instance_cache=True)
        self._unfiltered: dict[str, Result] = {}
        self.con = duckdb.connect()
        self.con.execute("SET enable_external_file_cache = false")
        self.con.execute("SET parquet_metadata_cache = false")
        self.con.register_filesystem(self.filesystem)
        for sql_file in catalog.sql_files("v1"):
            self.con.execute(catalog.render(sql_file.text.replace("{{ROOT}}", root), warehouse, damaged))

    def read(self, sql: str, *, latest_only: bool = False) -> Result:
        """The rows of `sql` and the files it opened."""
        if latest_only:
            self.con.execute(f"SET VARIABLE {catalog.LATEST_ONLY_VARIABLE} = true")
        self.filesystem.opened.clear()
        try:
            relation = self.con.sql(sql)
            columns, rows = relation.columns, relation.fetchall()
        finally:
            self.con.execute(f"RESET VARIABLE {catalog.LATEST_ONLY_VARIABLE}")
        opened = {Path(path).relative_to(self.warehouse).as_posix() for path in self.filesystem.opened}
        return Result(columns, sorted(rows, key=repr), opened)

    def unfiltered(self, view: str) -> Result:
        """`SELECT * FROM view` (read once)."""
        if view not in self._unfiltered:
            self._unfiltered[view] = self.read(f"SELECT * FROM {view}")
        return self._unfiltered[view]

    def close(self) -> None:
        self.con.close()


def other_run(run_id: str, model: str) -> wf.Run:
    run = wf._run_b1()
    run.run_id, run.model = run_id, model
    return run


@pytest.fixture(scope="module")
def warehouse(tmp_path_factory) -> Path:
    warehouse = wf.build_warehouse(tmp_path_factory.mktemp("pruning") / "warehouse")
    for run_id, model in EXTRA_RUNS.items():
        wf.write_run(warehouse, other_run(run_id, model))
    return warehouse


@pytest.fixture(scope="module")
def reader(warehouse):
    reader = Reader(warehouse)
    yield reader
    reader.close()


def committed(warehouse: Path) -> dict[str, str]:
    """Run folder (relative to the warehouse) -> model, for every committed run."""
    runs = {run.run_id: run.model for run in wf.fixture_runs()} | EXTRA_RUNS
    return {layout.run_dir(warehouse, model, run_id).relative_to(warehouse).as_posix(): model for run_id, model in runs.items()}


def folders_of(warehouse: Path, model: str) -> set[str]:
    return {folder for folder, owner in committed(warehouse).items() if owner == model}


def shortened(warehouse: Path) -> set[str]:
    return {folder for folder in committed(warehouse) if layout.SHORTENED_MARK in folder}


def run_folders(opened: set[str], tables=(*DATA_TABLES, "manifest")) -> set[str]:
    """The run folders whose files of `tables` were opened (_schema files are no run's)."""
    folders = set()
    for path in opened:
        match = re.fullmatch(r"(runs/model=[^/]*/run=[^/]*)/([^/]+)/[^/]+", path)
        if match and match.group(2) in tables:
            folders.add(match.group(1))
    return folders


def literal(text: str) -> str:
    return layout.sql_string(text)


def test_the_warehouse_has_spelled_and_shortened_model_folders(warehouse):
    folders = committed(warehouse)
    assert all((warehouse / folder / "manifest").is_dir() for folder in folders)
    assert len(folders) == len(wf.COMMITTED_RUNS) + len(EXTRA_RUNS) and len(shortened(warehouse)) == 4
    assert layout.model_key("b" * 249) == "b" * 249 and layout.SHORTENED_MARK in layout.model_key("b" * 250)
    assert layout.model_key(ODD_MODEL) == "org%2Fm%C3%B6del%20%E6%97%A5%E6%9C%AC%20%2B1%252B%20100%25"


def test_without_a_filter_every_committed_run_is_read(reader, warehouse):
    """The counting sees the files: an unfiltered query opens those of every committed run."""
    result = reader.read("SELECT run_id, model, count(*) AS n FROM v1.records GROUP BY ALL")
    assert run_folders(result.opened) == set(committed(warehouse))
    assert {(run_id, model) for run_id, model, _ in result.rows} == {
        (folder.rsplit("/run=", 1)[1], model) for folder, model in committed(warehouse).items()}


@pytest.mark.parametrize("model", MODELS)
def test_a_filter_on_model_reads_only_that_models_files(reader, warehouse, model):
    everything = reader.unfiltered("v1.records")
    result = reader.read(f"SELECT * FROM v1.records WHERE model = {literal(model)}")
    assert result.rows == everything.rows_where("model", model) and result.rows
    own = folders_of(warehouse, model)
    # The model's own data files, and those of the shortened folders (whose model only
    # their manifest names): no other model's. (Every manifest is read, as for a filter on
    # run_id: they say which runs are committed, and the latest.)
    assert own <= run_folders(result.opened, tables=DATA_TABLES) <= own | shortened(warehouse)


@pytest.mark.parametrize("model", [wf.MODEL_A, ODD_MODEL, LONG_MODEL])  # MODEL_A: two runs, the raw lens
@pytest.mark.parametrize("view", VIEWS)
def test_a_filter_on_model_prunes_every_view(reader, warehouse, view, model):
    everything = reader.unfiltered(view)
    result = reader.read(f"SELECT * FROM {view} WHERE model = {literal(model)}")
    assert result.rows == everything.rows_where("model", model)
    others = set(committed(warehouse)) - folders_of(warehouse, model) - shortened(warehouse)
    tables = ("manifest",) if view in MANIFEST_VIEWS else DATA_TABLES
    assert run_folders(everything.opened, tables) & others  # without the filter, other models' files are read
    assert not run_folders(result.opened, tables) & others


@pytest.mark.parametrize("run_id", [wf.RUN_A1, "odd-1", "long-1"])
@pytest.mark.parametrize("view", ["v1.records", "v1.diagnostics", "v1.ablation_summary", "v1.raw_lens_check", "v1.last_layer_consistency"])
def test_a_filter_on_run_id_reads_only_that_runs_data_files(reader, warehouse, view, run_id):
    everything = reader.unfiltered(view)
    result = reader.read(f"SELECT * FROM {view} WHERE run_id = {literal(run_id)}")
    assert result.rows == everything.rows_where("run_id", run_id)
    (folder,) = [folder for folder in committed(warehouse) if folder.endswith(f"/run={run_id}")]
    assert run_folders(result.opened, tables=DATA_TABLES) == {folder}  # (every manifest is read: is_latest)


def test_latest_only_keeps_the_latest_run_in_spelled_and_shortened_folders(reader):
    for model, run_id in [(LONG_MODEL, "long-2"), (LONG_MODEL_2, "long-3"), (wf.MODEL_A, wf.RUN_A2)]:
        result = reader.read(f"SELECT DISTINCT run_id FROM v1.records WHERE model = {literal(model)}", latest_only=True)
        assert result.rows == [(run_id,)]
    latest = reader.read("SELECT DISTINCT run_id FROM v1.diagnostics", latest_only=True)
    assert latest.rows == reader.read("SELECT run_id FROM v1.latest_runs").rows
    assert ("long-1",) not in latest.rows and ("long-2",) in latest.rows


# ------------------------------------------------------------------------------------------
# The model from the folder name


@pytest.fixture(scope="module")
def con(warehouse):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedRunsWarning)  # the fixture's crashed run
        connection = lensdb.connect(warehouse)
    yield connection
    connection.close()


def model_of(con, key: str):
    return con.execute("SELECT v1_base.model_of(?)", [f"/w/runs/model={key}/run=r-1/records/part-00000.parquet"]).fetchone()[0]


MODEL_IDS = st.text(st.characters(codec="utf-8", exclude_categories=["Cc", "Cs"]), min_size=1, max_size=120)


@settings(max_examples=300, deadline=None)
@given(model=MODEL_IDS.filter(str.strip))
def test_the_views_decode_exactly_what_model_key_encodes(con, model):
    key = layout.model_key(layout.check_model_name(model))
    assert model_of(con, key) == (None if layout.SHORTENED_MARK in key else model)


@pytest.mark.parametrize("key, model", [
    ("a%2Bb", "a+b"),  # "%2B" is '+'
    ("a+b", "a+b"),  # and '+' is no space
    ("a%20b", "a b"),
    ("%C3%BCn%C3%AF%2F%E6%97%A5", "ünï/日"),
    ("100%25%2F..", "100%/.."),
    ("%FF", None),  # no UTF-8: no model (health reports the folder)
    ("org%2F" + "x" * 200 + "@0123456789abcdef", None),  # shortened: only the manifest has the id
])
def test_the_model_of_a_folder_name(con, key, model):
    assert model_of(con, key) == model


MOVES = {  # a run moved by hand: from (model, run id) to a folder name
    "another model": (wf.MODEL_B, wf.RUN_B1, "model=model-c"),
    "the same model, spelled otherwise": (wf.MODEL_A, wf.RUN_A1, "model=org%2fmodel-a"),  # lower-case escape
    "another shortened name": (LONG_MODEL, "long-1", "model=org%2Fxxx@" + "0" * 16),
}


@pytest.mark.parametrize("move", sorted(MOVES))
def test_a_run_in_another_folder_than_its_models_is_reported_and_left_out(warehouse, tmp_path, move):
    """The views take the model from the folder name, so a run moved by hand out of its
    model's folder is damaged (as one whose manifest names another run), not shown in part."""
    model, run_id, folder = MOVES[move]
    copy = Path(shutil.copytree(warehouse, tmp_path / "warehouse", symlinks=True))
    (copy / "runs" / folder).mkdir()
    (copy / layout.run_dir(copy, model, run_id).relative_to(copy)).rename(copy / "runs" / folder / f"run={run_id}")
    found = {run.run_id: run for run in health.damaged_runs(copy)}
    assert found[run_id].reason == f"manifest names model {model!r}, whose folder is model={layout.model_key(model)}"
    with pytest.warns(DamagedRunsWarning, match="manifest names model"):
        runs = lensdb.query("SELECT list(run_id) AS runs FROM v1.runs", warehouse=copy).to_pylist()[0]["runs"]
    assert run_id not in runs and wf.RUN_A2 in runs
    # Without lensdb's list of damaged runs (an outside client of an older catalog), every
    # view leaves it out as well, rather than showing its rows in part or under another model.
    bare = Reader(copy, damaged=[])
    try:
        for view in ("v1.runs", "v1.records", "v1.prompts", "v1.diagnostics"):
            assert bare.read(f"SELECT DISTINCT run_id FROM {view} WHERE run_id = {literal(run_id)}").rows == [], view
    finally:
        bare.close()


@settings(max_examples=300, deadline=None)
@given(model=MODEL_IDS)
def test_duckdb_url_encode_is_quote(con, model):
    """committed_spelled compares url_encode(model) with the folder's key (layout.model_key)."""
    assert con.execute("SELECT url_encode(?)", [model]).fetchone()[0] == quote(model, safe="-_.")

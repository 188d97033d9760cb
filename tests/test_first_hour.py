"""The first hour with lensdb: extract's summary on stdout (and --json, --quiet), query --describe
and --list, tables that fit the terminal, lensdb.query(format=...), the prompt-set README."""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from rich.cells import cell_len

import lensdb
from lensdb import catalog
from lensdb.errors import MissingDependency
from lensdb.output import render_table
from lensdb.prompts import Prompt, load_prompt_set
from tests import warehouse_fixtures as wf
from tests.cli_helpers import assert_one_line_error, run_cli

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def fixture_warehouse(tmp_path_factory) -> Path:
    return wf.build_warehouse(tmp_path_factory.mktemp("first-hour") / "warehouse")


# ---------------------------------------------------------------- extract's output


def test_extract_summary_goes_to_stdout_and_json_matches_the_views(tiny_llama, tiny_prompts, tmp_path):
    warehouse = tmp_path / "warehouse"
    args = ("extract", tiny_llama, "--prompts", tiny_prompts, "--warehouse", warehouse, "--device", "cpu")
    plain = run_cli(*args)
    assert plain.exit_code == 0, plain.stderr
    assert plain.stdout.startswith("run        ") and "records    " in plain.stdout
    assert "run        " not in plain.stderr  # progress and logs only

    as_json = run_cli(*args, "--json")
    assert as_json.exit_code == 0, as_json.stderr
    summary = json.loads(as_json.stdout)
    run = lensdb.query(f"SELECT * FROM v1.runs WHERE run_id = '{summary['run_id']}'", warehouse=warehouse).to_pylist()[0]
    assert (summary["model"], summary["device"], summary["dtype"], summary["lenses"]) == (run["model"], run["device"], run["dtype"], run["lenses"])
    counts = lensdb.query(
        f"SELECT (SELECT count(*) FROM v1.records WHERE run_id = $1) AS records, (SELECT count(*) FROM v1.prompts WHERE run_id = $1) AS prompts".replace(
            "$1", f"'{summary['run_id']}'"
        ),
        warehouse=warehouse,
    ).to_pylist()[0]
    assert summary["rows"]["records"] == counts["records"] and summary["n_prompts"] == counts["prompts"]
    path = Path(summary["path"])
    assert path.is_dir() and summary["bytes_on_disk"] == sum(p.stat().st_size for p in path.rglob("*.parquet"))
    assert summary["last_layer_max_kl_bits"] == run["last_layer_max_kl_bits"]

    quiet = run_cli(*args, "--quiet")
    assert quiet.exit_code == 0, quiet.stderr
    run_id = quiet.stdout.strip()
    assert quiet.stdout == run_id + "\n" and re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{12}", run_id)
    assert lensdb.query(f"SELECT count(*) AS n FROM v1.runs WHERE run_id = '{run_id}'", warehouse=warehouse).to_pylist() == [{"n": 1}]


# ---------------------------------------------------------------- query --describe and --list


def public_definitions():
    return [(d, f) for f in catalog.sql_files() for d in f.definitions if d.public and d.kind != "macro"]


@pytest.mark.parametrize("name", [d.name for d, _f in public_definitions()])
def test_every_column_of_every_view_has_a_meaning(name, fixture_warehouse):
    description = catalog.describe(name)
    columns = [c.name for c in description.columns]
    actual = lensdb.query(f"SELECT * FROM {name}{'()' if description.definition.kind == 'table macro' else ''} LIMIT 0", warehouse=fixture_warehouse)
    assert columns == actual.column_names  # the same columns as a real warehouse gives
    undocumented = [c.name for c in description.columns if not c.meaning]
    assert not undocumented, f"{name}: add these to the `-- columns:` block above it: {undocumented}"
    definition = description.definition
    documented = catalog.definitions()[definition.columns_as][0].columns if definition.columns_as else definition.columns
    assert set(documented) <= set(columns), f"{name}: documented but not in the view: {set(documented) - set(columns)}"


def test_describe_on_the_command_line():
    result = run_cli("query", "--describe", "v1.diagnostics")
    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("v1.diagnostics: view, sql/v1/30_diagnostics.sql")
    assert re.match(r"^L_semantic\s+INTEGER\s+first layer with is_answer$", next(line for line in lines if line.startswith("L_semantic ")))
    short = run_cli("query", "--describe", "vocab", "--format", "json")
    assert short.exit_code == 0, short.stderr
    assert [row["column"] for row in json.loads(short.stdout)] == ["run_id", "model", "token_id", "piece", "text"]
    macro = run_cli("query", "--describe", "v1.diagnostics_with", "--format", "csv")
    assert macro.exit_code == 0 and macro.stdout.splitlines()[0] == '"column","type","meaning"'
    assert_one_line_error(run_cli("query", "--describe", "v1.nope"), "no view 'v1.nope'", "v1.diagnostics")
    assert_one_line_error(run_cli("query", "--describe", "v1.strip"), "scalar macro")


def test_list_keeps_the_headers_as_written_and_hides_helper_macros():
    result = run_cli("query", "--list")
    assert result.exit_code == 0, result.stderr
    text = result.stdout
    # 20_next_token.sql's header lists its flags one per line, indented: still so.
    assert re.search(r"^      copy_collapse     the top-1 ids", text, re.MULTILINE)
    assert re.search(r"^      entropy_collapse  entropy_bits <= 1.0$", text, re.MULTILINE)
    assert "v1.diagnostics_with(threshold := 0.95, margin := 0.10, k := 1)" in text
    helpers = [d.name for f in catalog.sql_files() for d in f.definitions if d.public and d.kind == "macro"]
    assert helpers and not any(name in text for name in helpers)
    assert f"({len(helpers)} helper macros not shown: --list --all)" in text
    every = run_cli("query", "--list", "--all").stdout
    assert all(name in every for name in helpers)
    assert max(len(line) for line in text.splitlines()) <= 100


# ---------------------------------------------------------------- tables


def test_query_tables_fit_the_terminal(fixture_warehouse, monkeypatch):
    sql = "SELECT run_id, model, prompt_id, lens, layer, topk_tokens, topk_probs, entropy_bits FROM v1.pure_next_token ORDER BY ALL"
    expected = lensdb.query(sql, warehouse=fixture_warehouse)
    for width in (50, 80, 130, 250):
        monkeypatch.setenv("COLUMNS", str(width))
        result = run_cli("query", sql, "--warehouse", fixture_warehouse)
        assert result.exit_code == 0, result.stderr
        lines = result.stdout.splitlines()
        assert max(cell_len(line) for line in lines) <= width, width
        body = [line for line in lines if line.startswith("│")][2:]  # after the two header lines
        assert len(body) == min(expected.num_rows, 100)
        for line, run_id in zip(body, expected.column("run_id").to_pylist()):
            assert line.startswith(f"│ {run_id} "), (width, line)  # never cut, never wrapped
    assert f"{expected.num_rows:,} rows; the first 100 shown" in result.stdout


def test_table_cells_stay_on_one_line_and_numbers_stay_whole():
    table = pa.table(
        {
            "run_id": ["20261122T200726Z-0af295", "r2"],
            "token": ["a\nb\tc", " Berlin"],
            "tokens": pa.array([["\n", " x"], None], pa.list_(pa.string())),
            "p": pa.array([0.30000001192092896, None], pa.float32()),
            "kl": [0.7000000104308128, float("nan")],
            "long_text": ["word " * 40, "short"],
        }
    )
    text = render_table(table, width=200)
    lines = text.splitlines()
    assert len([line for line in lines if line.startswith("│")]) == 2 + 2  # header (name, type) + one line per row
    assert "a\\nb\\tc" in text and '["\\n", " x"]' in text
    assert " 0.3 " in text and "0.7000000104308128" in text and " nan " in text and "null" in text
    assert "word word" in text and "…" in text  # long text cut, with a mark
    narrow = render_table(table, width=40)
    assert max(cell_len(line) for line in narrow.splitlines()) <= 40
    assert "20261122T200726Z-0af295" in narrow and "more columns" in narrow


def test_a_table_with_one_column_wider_than_the_terminal_is_never_wrapped():
    run_id = "r" * 100
    text = render_table(pa.table({"run_id": [run_id]}), width=40)
    assert f"│ {run_id} │" in text


# ---------------------------------------------------------------- lensdb.query(format=...)


def test_query_format_is_checked_and_pandas_is_supported(fixture_warehouse, monkeypatch):
    sql = "SELECT run_id, n_layers FROM v1.runs ORDER BY run_id"
    with pytest.raises(ValueError, match="format must be one of 'arrow', 'polars', 'pandas', got 'panda'"):
        lensdb.query(sql, warehouse=fixture_warehouse, format="panda")
    arrow = lensdb.query(sql, warehouse=fixture_warehouse)
    frame = lensdb.query(sql, warehouse=fixture_warehouse, format="pandas")
    assert type(frame).__module__.startswith("pandas")
    assert frame.to_dict("records") == arrow.to_pylist()
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if pandas were not installed
    with pytest.raises(MissingDependency, match="format='pandas' needs pandas, which is not installed: pip install pandas"):
        lensdb.query(sql, warehouse=fixture_warehouse, format="pandas")
    with pytest.raises(ImportError):  # MissingDependency is an ImportError too
        lensdb.query(sql, warehouse=fixture_warehouse, format="pandas")


# ---------------------------------------------------------------- prompts/README.md


def test_prompt_readme_documents_every_key_and_default(tmp_path):
    readme = (REPO / "prompts" / "README.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| ([^|]+) \|", readme, re.MULTILINE))
    assert set(rows) == {"id", "text", "variant", "role", "gold", "control_of", "temperatures"}
    assert "required" in rows["id"] and "required" in rows["text"]
    defaults = Prompt(id="x", text="y")
    assert f"`{defaults.variant}`" in rows["variant"] and f"`{defaults.role}`" in rows["role"]
    assert "`ctl`" in rows["role"]  # with control_of
    for key in ("gold", "control_of"):
        assert getattr(defaults, key) is None and "none" in rows[key]
    example = REPO / "prompts" / "example.jsonl"
    loaded = load_prompt_set(example)
    assert len(loaded.prompts) >= 3 and {p.role for p in loaded.prompts} >= {"pos", "ctl", "test"}
    assert any(p.control_of for p in loaded.prompts) and any(p.variant != "orig" for p in loaded.prompts)
    shown = re.search(r"```json\n(.*?)```", readme, re.DOTALL).group(1)
    assert shown == example.read_text(encoding="utf-8")  # the README shows the file as it is
    copy = shutil.copy(example, tmp_path / "mine.jsonl")
    assert load_prompt_set(copy).prompts == loaded.prompts
    yaml_example = tmp_path / "mini.yaml"
    yaml_example.write_text(re.search(r"```yaml\n(.*?)```", readme, re.DOTALL).group(1), encoding="utf-8")
    mini = load_prompt_set(yaml_example)
    assert mini.name == "capitals-mini" and [p.role for p in mini.prompts] == ["pos", "ctl"]

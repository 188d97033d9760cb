"""Every public v1 view (and table macro) on the fixture warehouse, against a reviewed golden file.

The golden files are tests/golden/<view>.json: the view's columns and DuckDB types, then
one JSON array per row (floats written with repr, so exact). After a deliberate change:

    .venv/bin/pytest tests/test_views_golden.py --update-golden

then review `git diff tests/golden` row by row against the rules in sql/v1/*.sql and the
edge cases listed at the top of tests/warehouse_fixtures.py.
"""

from __future__ import annotations

import difflib
import json
from datetime import date, datetime
from pathlib import Path

import pytest

import lensdb
from tests import warehouse_fixtures

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"

# Custom copy-rule parameters for the table macros: a lower threshold and margin, k = 2.
CUSTOM = "threshold := 0.5, margin := 0.05, k := 2"

# view -> SELECT, ordered by every key column.
QUERIES = {
    "v1.runs": "SELECT * FROM v1.runs ORDER BY run_id",
    "v1.latest_runs": "SELECT * FROM v1.latest_runs ORDER BY run_id",
    "v1.vocab": "SELECT * FROM v1.vocab ORDER BY run_id, token_id",
    "v1.lenses": "SELECT * FROM v1.lenses ORDER BY lens, layer",
    "v1.prompts": "SELECT * FROM v1.prompts ORDER BY run_id, prompt_id, prompt_variant",
    "v1.records": "SELECT * FROM v1.records ORDER BY run_id, prompt_id, prompt_variant, lens, layer, pos",
    "v1.residuals": "SELECT * FROM v1.residuals ORDER BY run_id, prompt_id, prompt_variant, layer, pos",
    "v1.final_predictions": "SELECT * FROM v1.final_predictions ORDER BY run_id, prompt_id, prompt_variant, temperature",
    "v1.pure_next_token": "SELECT * FROM v1.pure_next_token ORDER BY run_id, prompt_id, prompt_variant, lens, layer",
    "v1.pure_next_token_with": f"SELECT * FROM v1.pure_next_token_with({CUSTOM}) "
    "ORDER BY run_id, prompt_id, prompt_variant, lens, layer",
    "v1.diagnostics": "SELECT * FROM v1.diagnostics ORDER BY run_id, prompt_id, prompt_variant, lens",
    "v1.diagnostics_with": f"SELECT * FROM v1.diagnostics_with({CUSTOM}) ORDER BY run_id, prompt_id, prompt_variant, lens",
    "v1.control_summary": "SELECT * FROM v1.control_summary ORDER BY run_id, prompt_id, prompt_variant, lens",
    "v1.ablation_summary": "SELECT * FROM v1.ablation_summary ORDER BY run_id, prompt_id, ablation_variant, lens",
    "v1.raw_lens_check": "SELECT * FROM v1.raw_lens_check ORDER BY run_id, prompt_id, prompt_variant, layer",
    "v1.raw_lens_summary": "SELECT * FROM v1.raw_lens_summary ORDER BY run_id, prompt_id, prompt_variant",
    "v1.last_layer_consistency": "SELECT * FROM v1.last_layer_consistency "
    "ORDER BY run_id, prompt_id, prompt_variant, lens",
    "v1.damaged_runs": "SELECT * FROM v1.damaged_runs ORDER BY folder",
    "v1.group_tokens": "SELECT * FROM v1.group_tokens ORDER BY run_id, group_name, word, variant",
    "v1.token_groups": "SELECT * FROM v1.token_groups ORDER BY run_id, prompt_id, prompt_variant, lens, layer, site, pos, group_name",
    "v1.answer_tokens": "SELECT * FROM v1.answer_tokens ORDER BY run_id, prompt_id, prompt_variant, answer, variant",
    "v1.answer_mass": "SELECT * FROM v1.answer_mass ORDER BY run_id, prompt_id, prompt_variant, lens, layer, site, pos",
    "v1.attributions": "SELECT * FROM v1.attributions ORDER BY run_id, prompt_id, prompt_variant, pos, target, token_id, layer, component",
    "v1.attribution_by_layer": "SELECT * FROM v1.attribution_by_layer ORDER BY run_id, prompt_id, prompt_variant, target, token_id, layer",
}


@pytest.fixture(scope="session")
def fixture_warehouse(tmp_path_factory) -> Path:
    return warehouse_fixtures.build_warehouse(tmp_path_factory.mktemp("golden") / "warehouse")


def _plain(value):
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def render(view: str, sql: str, table) -> str:
    """A stable, diff-friendly JSON document: one line per row, floats exact (repr)."""
    rows = [json.dumps([_plain(v) for v in row.values()], ensure_ascii=False) for row in table.to_pylist()]
    head = [
        "{",
        f'"view": {json.dumps(view)},',
        f'"sql": {json.dumps(sql)},',
        f'"columns": {json.dumps(table.column_names)},',
        f'"types": {json.dumps([str(t) for t in table.schema.types])},',
        f'"row_count": {table.num_rows},',
        '"rows": [',
    ]
    body = [row + ("," if i < len(rows) - 1 else "") for i, row in enumerate(rows)]
    return "\n".join(head + body + ["]", "}"]) + "\n"


@pytest.mark.parametrize("view", sorted(QUERIES))
def test_view_matches_golden(view, fixture_warehouse, request):
    sql = QUERIES[view]
    text = render(view, sql, lensdb.query(sql, warehouse=fixture_warehouse))
    path = GOLDEN_DIR / f"{view}.json"
    if request.config.getoption("--update-golden"):
        GOLDEN_DIR.mkdir(exist_ok=True)
        path.write_text(text, encoding="utf-8")
        return
    assert path.is_file(), f"no golden file {path.name}: run pytest {__file__} --update-golden and review it"
    expected = path.read_text(encoding="utf-8")
    json.loads(text)  # stays valid JSON
    if text != expected:
        diff = difflib.unified_diff(expected.splitlines(), text.splitlines(), "golden", "now", lineterm="", n=0)
        shown = list(diff)[:60]
        pytest.fail(f"{view} differs from {path.name} (columns: {', '.join(json.loads(text)['columns'])}):\n" + "\n".join(shown))


def test_every_public_view_and_table_macro_has_a_golden_file(fixture_warehouse):
    con = lensdb.connect(fixture_warehouse, read_only=True)
    try:
        views = {f"v1.{name}" for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'v1'").fetchall()}
        macros = {
            f"v1.{name}"
            for (name,) in con.execute(
                "SELECT DISTINCT function_name FROM duckdb_functions() WHERE schema_name = 'v1' AND function_type = 'table_macro'"
            ).fetchall()
        }
    finally:
        con.close()
    assert views, "no v1 views installed"
    assert (views | macros) <= set(QUERIES), f"without a golden query: {sorted((views | macros) - set(QUERIES))}"


def test_hidden_runs_never_show(fixture_warehouse):
    """The crashed runs (in _staging/, or in runs/ without a manifest) are in no view of data;
    the one in runs/ is reported as damaged (v1.damaged_runs, its golden file)."""
    assert any((fixture_warehouse / "_staging").iterdir())
    assert (fixture_warehouse / "runs" / "model=model-b" / f"run={warehouse_fixtures.RUN_NO_MANIFEST}" / "records").is_dir()
    for view in QUERIES:
        if view in ("v1.damaged_runs", "v1.lenses"):  # no run's rows (stored lenses: checked below)
            continue
        source = QUERIES[view].split(" ORDER BY")[0]
        runs = lensdb.query(f"SELECT DISTINCT run_id FROM ({source})", warehouse=fixture_warehouse).column("run_id").to_pylist()
        assert set(runs) <= set(warehouse_fixtures.COMMITTED_RUNS), view
    shown = lensdb.query("SELECT run_id FROM v1.runs ORDER BY run_id", warehouse=fixture_warehouse).column("run_id").to_pylist()
    assert shown == sorted(warehouse_fixtures.COMMITTED_RUNS)
    # A lens staged under _lens_training/ or a lens.parquet outside lenses/ is in no view.
    lenses = lensdb.query("SELECT DISTINCT lens FROM v1.lenses ORDER BY lens", warehouse=fixture_warehouse).column("lens").to_pylist()
    assert lenses == ["story-lens", "tiny-lens"]
    assert (fixture_warehouse / "notes" / "stray" / "lens.parquet").is_file()

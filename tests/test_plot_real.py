"""Figures and the report on real data: the stories260K model (extracted here) and the legacy
run of three 8-9B models (imported), from ../shared/fixtures; skipped when absent."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lensdb.plot import data, interactive, static
from lensdb.report import build
from tests.cli_helpers import run_cli
from tests.conftest import LEGACY_RUN, STORIES
from tests.plot_helpers import hand_marks, raw
from tests.test_plot import METRIC_SQL, expected_grid, mpl_heatmap, plotly_heatmap
from tests.test_report import BROWSER, Page, browse, console

pytestmark = pytest.mark.skipif(not LEGACY_RUN.is_dir(), reason="../shared/fixtures/legacy-run-2025-08-30 is not available")

LEGACY_MODELS = ("Qwen/Qwen3-8B", "google/gemma-2-9b", "meta-llama/Meta-Llama-3-8B")


@pytest.fixture(scope="module")
def real_warehouse(tmp_path_factory):
    warehouse = tmp_path_factory.mktemp("real") / "warehouse"
    result = run_cli("extract", STORIES, "--prompts", "stories", "--warehouse", warehouse, "--quiet")
    assert result.exit_code == 0, result.output
    result = run_cli("import-legacy", LEGACY_RUN, "--warehouse", warehouse)
    assert result.exit_code == 0, result.output
    return warehouse


@pytest.fixture(scope="module")
def db(real_warehouse):
    with data.Warehouse(real_warehouse) as connection:
        yield connection


def test_stories_heatmaps_of_every_lens(real_warehouse, db):
    run = db.latest_run("stories260K", "lily")
    grids = data.lens_grids(db, run, "lily")
    assert [g.lens for g in grids.grids] == ["norm", "final_ln", "raw"]
    mpl, fig = static.lenses_figure(grids), interactive.lenses_figure(grids)
    tokens = raw(real_warehouse, run.run_id, "prompts", "tokens", "prompt_id = 'lily'")[0]["tokens"]
    for index, grid in enumerate(grids.grids):
        expected = expected_grid(real_warehouse, run.run_id, "lily", "orig", grid.lens, "p_top1")
        for shown in (mpl_heatmap(mpl, index), plotly_heatmap(fig, index)):
            assert all(math.isclose(shown["values"][key], value, rel_tol=1e-6) for key, value in expected.items())
            assert shown["ticks"] == [t if t else '""' for t in tokens]  # '<s>', 'Once', 'upon', ...
            marks = hand_marks(real_warehouse, run.run_id, "lily", "orig", grid.lens)
            assert shown["marks"] == {name: (len(tokens) - 1, layer) for name, layer in marks.items() if layer is not None}
    assert grids.grids[1].marks["L_semantic"] == 4  # final_ln finds 'Lily' at layer 4 of 5


@pytest.mark.parametrize("model", LEGACY_MODELS)
def test_legacy_heatmaps(real_warehouse, db, model):
    run = db.latest_run(model, "pos")
    grid = data.grid(db, run, "pos", metric_name="entropy_bits")
    shown = plotly_heatmap(interactive.heatmap_figure(grid))
    for key, value in expected_grid(real_warehouse, run.run_id, "pos", "orig", "norm", "entropy_bits").items():
        assert math.isclose(shown["values"][key], value, rel_tol=1e-6)
    semantic = hand_marks(real_warehouse, run.run_id, "pos", "orig", "norm")["L_semantic"]
    assert grid.marks["L_semantic"] == semantic == {"Qwen/Qwen3-8B": 31, "google/gemma-2-9b": 42, "meta-llama/Meta-Llama-3-8B": 25}[model]
    assert mpl_heatmap(static.heatmap_figure(grid))["marks"]["L_semantic"] == (len(grid.positions) - 1, semantic)


def test_curves_across_four_models(real_warehouse, db):
    runs = db.select_runs(lens="norm")
    assert sorted(r.model for r in runs) == sorted((*LEGACY_MODELS, "stories260K"))
    curves = data.curves(db, runs, metric_name="answer_rank", depth="relative")
    for curve in curves.curves:
        rows = raw(real_warehouse, curve.run.run_id, "records", f"layer, {METRIC_SQL['answer_rank']}::DOUBLE AS v",
                   "lens = 'norm' AND prompt_variant = 'orig' AND is_last_pos AND answer_rank IS NOT NULL")
        by_layer = {}
        for row in rows:
            by_layer.setdefault(row["layer"], []).append(row["v"])
        assert curve.layers == sorted(by_layer)
        assert curve.median == pytest.approx([float(np.median(by_layer[layer])) for layer in curve.layers])
        assert curve.depth("relative")[-1] == 1.0
    fig = static.curves_figure(curves)
    assert len([ln for ln in fig.axes[0].lines if (ln.get_gid() or "").startswith("median:")]) == 4


def test_report_of_four_models(real_warehouse, tmp_path):
    page = Page(build(warehouse=real_warehouse))
    assert len(page.sections) == 5
    rows = {r["model"]: r for r in page.table("cross-model", "L_semantic / n_layers (norm lens, variant orig)")}
    assert rows["meta-llama/Meta-Llama-3-8B"]["L_semantic / n_layers"] == f"{25 / 32:.4g}"
    assert rows["google/gemma-2-9b"]["L_semantic / n_layers"] == "1"
    if BROWSER is None:
        pytest.skip("no headless browser (apt-get install chromium)")
    out = tmp_path / "report.html"
    out.write_text(page.text, encoding="utf-8")
    result = browse(out, tmp_path, "--dump-dom")
    assert console(result) == []
    assert result.stdout.count('class="plot-container plotly"') == len(page.figures)

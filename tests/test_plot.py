"""lensdb.plot: the numbers in every figure equal a direct computation on the fixture warehouse.

The expected values are read straight from the runs' Parquet files with DuckDB's
read_parquet (not through the v1 views the figures use), and the marks (L_copy,
L_semantic) are recomputed here in Python from the copy and answer rules.
"""

from __future__ import annotations

import html
import math
from datetime import datetime

import duckdb
import numpy as np
import pytest

from lensdb.plot import data, interactive, static
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.plot_helpers import hand_marks, raw
from tests.warehouse_fixtures import (
    MODEL_A,
    RUN_A1,
    RUN_A2,
    RUN_B1,
    RUN_LEGACY,
    L,
    Prompt,
    Run,
    build_warehouse,
    write_run,
)

METRIC_SQL = {  # the same quantities, over the raw Parquet columns
    "p_top1": "topk_probs[1]",
    "entropy_bits": "entropy_bits",
    "kl_to_final_bits": "kl_to_final_bits",
    "p_answer": "p_answer",
    "answer_rank": "answer_rank",
}


@pytest.fixture(scope="module")
def fixture_warehouse(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("plot") / "warehouse")


@pytest.fixture(scope="module")
def db(fixture_warehouse):
    with data.Warehouse(fixture_warehouse) as connection:
        yield connection


def expected_grid(warehouse, run_id, prompt, variant, lens, metric) -> dict[tuple[int, int], float | None]:
    rows = raw(warehouse, run_id, "records", f"layer, pos, {METRIC_SQL[metric]} AS v",
               f"prompt_id = '{prompt}' AND prompt_variant = '{variant}' AND lens = '{lens}'")
    return {(row["layer"], row["pos"]): row["v"] for row in rows}


# ---------------------------------------------------------------------------- figure readers


def mpl_heatmap(fig, index: int = 0) -> dict:
    """What a matplotlib heatmap shows: cell values by (layer, column), cell texts, axis labels, marks."""
    axes = [ax for ax in fig.axes if any(im.get_gid() == "heatmap" for im in ax.images)]
    ax = axes[index]
    image = next(im for im in ax.images if im.get_gid() == "heatmap")
    array = image.get_array()
    left, right, bottom, top = image.get_extent()
    first_layer = round(bottom + 0.5)
    values = {
        (first_layer + i, j): (None if np.ma.is_masked(array[i, j]) else float(array[i, j]))
        for i in range(array.shape[0])
        for j in range(array.shape[1])
    }
    texts = {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in ax.texts}
    marks = {p.get_gid().split(":", 1)[1]: (p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches if (p.get_gid() or "").startswith("mark:")}
    return {"values": values, "texts": texts, "ticks": [t.get_text() for t in ax.get_xticklabels()], "marks": marks,
            "norm": image.norm, "n_columns": array.shape[1]}


def plotly_heatmap(fig, index: int = 0) -> dict:
    traces = [trace for trace in fig.data if trace.type == "heatmap"]
    trace = traces[index]
    axis_name = "xaxis" if index == 0 else f"xaxis{index + 1}"
    values = {(layer, j): value for layer, row in zip(trace.y, trace.z) for j, value in enumerate(row)}
    texts = {(layer, j): html.unescape(t) for layer, row in zip(trace.y, trace.text) for j, t in enumerate(row)}
    hover = {(layer, j): h for layer, row in zip(trace.y, trace.hovertext) for j, h in enumerate(row)}
    xref = "x" if index == 0 else f"x{index + 1}"
    marks = {s.name.split(":", 1)[1]: ((s.x0 + s.x1) / 2, (s.y0 + s.y1) / 2)
             for s in fig.layout.shapes if (s.name or "").startswith("mark:") and (s.xref or "x") == xref}
    ticks = [html.unescape(t) for t in fig.layout[axis_name].ticktext]
    return {"values": values, "texts": texts, "hover": hover, "ticks": ticks, "marks": marks, "lens": trace.meta["lens"]}


def close_enough(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)


# ---------------------------------------------------------------------------- heatmap


@pytest.mark.parametrize("metric", list(METRIC_SQL))
def test_heatmap_cells_equal_the_records(fixture_warehouse, db, metric):
    run = db.run(RUN_A1)
    grid = data.grid(db, run, "copy0", lens="norm", metric_name=metric)
    expected = expected_grid(fixture_warehouse, RUN_A1, "copy0", "orig", "norm", metric)
    positions = sorted({pos for _layer, pos in expected})
    assert grid.layers == list(range(run.n_layers + 1)) and grid.positions == positions

    shown = mpl_heatmap(static.heatmap_figure(grid))
    assert shown["n_columns"] == len(positions)
    for (layer, pos), value in expected.items():
        assert close_enough(shown["values"][layer, positions.index(pos)], value), (layer, pos)

    shown = plotly_heatmap(interactive.heatmap_figure(grid))
    for (layer, pos), value in expected.items():
        plotted = shown["values"][layer, positions.index(pos)]
        assert close_enough(plotted, math.log10(value) if metric == "answer_rank" else value), (layer, pos)


def test_rank_is_on_a_log_scale(db):
    from matplotlib.colors import LogNorm

    grid = data.grid(db, db.run(RUN_A1), "blank", metric_name="answer_rank")
    assert isinstance(mpl_heatmap(static.heatmap_figure(grid))["norm"], LogNorm)
    colorbar = interactive.heatmap_figure(grid).layout.coloraxis.colorbar
    assert list(colorbar.ticktext) == ["1", "10", "100"] and list(colorbar.tickvals) == [0, 1, 2]  # ranks 1..100


def test_heatmap_text_is_the_escaped_top1_token(fixture_warehouse, db):
    """The 'blank' prompt: its tokens are <s>, ' the', ' ', ',', '\\n'; its top-1 tokens at the
    last position are ' ', ',', '\\n', ' the', ' Rome' at layers 0-4. Blank tokens show their
    vocabulary piece (the run's vocab table), other tokens their escaped text."""
    grid = data.grid(db, db.run(RUN_A1), "blank")
    top1 = {(row["layer"], row["pos"]): (row["t"], row["i"]) for row in
            raw(fixture_warehouse, RUN_A1, "records", "layer, pos, topk_tokens[1] AS t, topk_ids[1] AS i", "prompt_id = 'blank' AND lens = 'norm'")}
    pieces = {row["token_id"]: row["piece"] for row in raw(fixture_warehouse, RUN_A1, "vocab", "token_id, piece")}
    escaped = {" ": "␣", "\n": "\\n"}

    def expected(token, token_id):
        if token.strip() == "" and pieces.get(token_id) not in (None, token):
            return pieces[token_id]
        return escaped.get(token, token)

    tokens = raw(fixture_warehouse, RUN_A1, "prompts", "tokens, token_ids", "prompt_id = 'blank'")[0]
    for shown in (mpl_heatmap(static.heatmap_figure(grid)), plotly_heatmap(interactive.heatmap_figure(grid))):
        assert shown["ticks"] == [expected(t, i) for t, i in zip(tokens["tokens"], tokens["token_ids"])]
        assert [shown["texts"][layer, 4] for layer in range(5)] == [expected(*top1[(layer, 4)]) for layer in range(5)]
        for (layer, pos), (token, token_id) in top1.items():
            assert shown["texts"][layer, pos] == expected(token, token_id)


def test_token_labels():
    from lensdb.plot import text

    assert text.truncate("abcdefghij", 7) == "abcdef…" and text.truncate("abc", 7) == "abc"
    assert text.escape("a\tb\x00c\u200b") == "a\\tb\\x00c\\u200b"
    assert text.escape("") == '""' and text.escape("  ") == "␣␣" and text.escape("\u00a0") == "␣"
    assert text.label("", "▁") == "▁" and text.label(" the", "▁the") == " the" and text.label(" ", None) == "␣"


def test_dollar_signs_and_odd_characters_are_drawn_as_text(tmp_path):
    """'$' would start matplotlib's mathtext (an unbalanced one fails to draw); a token is plain text."""
    import lensdb.plot
    from lensdb.plot.metrics import METRICS

    tokens = ["$", "$x", "$\\frac{$", "$x^$", "<b>", "&amp;", "中文", "^_"]  # the 3rd and 4th are broken math
    n = len(tokens)
    grid = data.Grid(
        run=data.RunInfo("r", "m", 1, ("norm",), "extract", None, None), prompt_id="p", variant="orig", lens="norm",
        metric=METRICS["p_top1"], layers=[0, 1], positions=list(range(n)), position_labels=tokens,
        values=[[0.5] * n, [0.9] * n], top1=[tokens, tokens[::-1]], topk=[[[(t, 0.5)] for t in tokens]] * 2,
        marks={"L_copy": None, "L_semantic": 1},
    )
    fig = static.heatmap_figure(grid)
    assert mpl_heatmap(fig)["ticks"] == [t if len(t) <= 12 else t[:11] + "…" for t in tokens]
    assert lensdb.plot.save(fig, tmp_path / "odd.png").stat().st_size > 1000
    shown = plotly_heatmap(interactive.heatmap_figure(grid))
    assert shown["ticks"] == tokens
    assert [shown["texts"][0, j] for j in range(n)] == [t if len(t) <= 7 else t[:6] + "…" for t in tokens]


def test_marks_are_where_the_rules_fire(fixture_warehouse, db):
    run = db.run(RUN_A1)
    prompts = raw(fixture_warehouse, RUN_A1, "prompts", "prompt_id, prompt_variant")
    grids = {}
    for prompt in prompts:
        for lens in ("norm", "raw"):
            key = (prompt["prompt_id"], prompt["prompt_variant"], lens)
            grids[key] = data.grid(db, run, key[0], variant=key[1], lens=lens, require_values=False)
            assert grids[key].marks == hand_marks(fixture_warehouse, RUN_A1, *key), key
    assert sum(layer is not None for g in grids.values() for layer in g.marks.values()) >= 20
    # the documented fixture case (tests/warehouse_fixtures.py, case 1)
    assert grids["copy0", "orig", "norm"].marks == {"L_copy": 0, "L_semantic": 2}
    # in the figures: a box around the last position's cell at that layer
    for key in (("copy0", "orig", "norm"), ("window", "orig", "norm"), ("blank", "orig", "raw"), ("nogold", "orig", "norm")):
        grid = grids[key]
        want = {name: (len(grid.positions) - 1, layer) for name, layer in grid.marks.items() if layer is not None}
        assert mpl_heatmap(static.heatmap_figure(grid))["marks"] == want
        assert plotly_heatmap(interactive.heatmap_figure(grid))["marks"] == want


def test_hover_lists_the_cell_top_k(fixture_warehouse, db):
    grid = data.grid(db, db.run(RUN_A1), "ties")
    shown = plotly_heatmap(interactive.heatmap_figure(grid))
    for row in raw(fixture_warehouse, RUN_A1, "records", "layer, pos, topk_tokens, topk_probs", "prompt_id = 'ties' AND lens = 'norm'"):
        hover = shown["hover"][row["layer"], row["pos"]]
        lines = hover.split("<br>")
        listed = lines[lines.index("top-k:") + 1:]
        assert len(listed) == len(row["topk_tokens"]) == 5
        for rank, (line, token, p) in enumerate(zip(listed, row["topk_tokens"], row["topk_probs"]), 1):
            assert line == f"{rank}. {html.escape(token, quote=False)}  {p:.4f}"


def test_model_means_its_latest_run_that_has_the_prompt(db):
    assert db.select_run(None, "org/model-a", "copy0").run_id == RUN_A2  # the newer run
    assert db.select_run(None, "model-a", "blank").run_id == RUN_A1  # only run 1 has 'blank'
    assert db.select_run(None, "llama-mini", "pos").run_id == RUN_LEGACY


def test_vocabulary_pieces_where_decoded_text_is_blank(tmp_path):
    """Blank tokens show their piece from the run's vocab table; without one, a visible escape."""
    import shutil

    warehouse = build_warehouse(tmp_path / "warehouse")
    prompt = raw(warehouse, RUN_A1, "prompts", "tokens, token_ids", "prompt_id = 'blank'")[0]
    pieces = {row["token_id"]: row["piece"] for row in raw(warehouse, RUN_A1, "vocab", "token_id, piece")}
    assert pieces, "the fixture run has a vocab table"
    with data.Warehouse(warehouse) as db:
        assert db.has_vocab
        grid = data.grid(db, db.run(RUN_A1), "blank")
    expected = [pieces[i] if t.strip() == "" and pieces.get(i) not in (None, t) else t for t, i in zip(prompt["tokens"], prompt["token_ids"])]
    assert grid.position_labels == expected and grid.position_labels[1] == " the"  # ' the' is not blank: its text stays
    assert mpl_heatmap(static.heatmap_figure(grid))["ticks"] == grid.position_labels
    for folder in warehouse.glob(f"runs/*/run={RUN_A1}/vocab"):
        shutil.rmtree(folder)
    with data.Warehouse(warehouse) as db:
        assert data.grid(db, db.run(RUN_A1), "blank").position_labels == ["<s>", " the", "␣", ",", "\\n"]


def test_lenses_figure_shows_every_lens_whatever_its_name(tmp_path):
    warehouse = tmp_path / "warehouse"
    warehouse.mkdir()
    layers = [L([4, 5], [0.5 + i / 10, 0.1], 1.0 + i, 4.0 - i, p_answer=0.01, rank=3, kl_vs_norm=0.1 * i) for i in range(3)]
    prompt = Prompt("p", [4, 5, 11], gold="Berlin", gold_first_id=6, gold_alignment="ok",
                    last={"norm": layers, "tuned": layers[::-1], "raw": layers[1:] + layers[:1]},
                    finals={1.0: ([6], [0.8], 1.2)})
    write_run(warehouse, Run("t-run1", "org/model-t", 2, ["norm", "tuned", "raw"], 5, [prompt], datetime(2025, 5, 1)))
    with data.Warehouse(warehouse) as db:
        grids = data.lens_grids(db, db.run("t-run1"), "p")
    assert [g.lens for g in grids.grids] == ["norm", "tuned", "raw"]
    mpl = static.lenses_figure(grids)
    fig = interactive.lenses_figure(grids)
    for index, lens in enumerate(["norm", "tuned", "raw"]):
        expected = expected_grid(warehouse, "t-run1", "p", "orig", lens, "p_top1")
        for shown in (mpl_heatmap(mpl, index), plotly_heatmap(fig, index)):
            for (layer, pos), value in expected.items():
                assert close_enough(shown["values"][layer, pos], value)
        assert plotly_heatmap(fig, index)["lens"] == lens
        last = [expected[layer, 3] for layer in range(3)]
        (line,) = [ln for ax in mpl.axes for ln in ax.lines if ln.get_gid() == f"lens:{lens}"]
        assert list(line.get_ydata()) == pytest.approx(last)
        (trace,) = [t for t in fig.data if t.type == "scatter" and t.meta["lens"] == lens]
        assert list(trace.y) == pytest.approx(last)


# ---------------------------------------------------------------------------- curves


def expected_curves(warehouse, run_id, lens, metric, prompts=None, variant="orig"):
    where = f"lens = '{lens}' AND prompt_variant = '{variant}' AND is_last_pos"
    if prompts:
        where += " AND prompt_id IN (" + ", ".join(f"'{p}'" for p in prompts) + ")"
    rows = raw(warehouse, run_id, "records", f"prompt_id, layer, {METRIC_SQL[metric]}::DOUBLE AS v", where)
    by_layer: dict[int, list[float]] = {}
    for row in rows:
        if row["v"] is not None:
            by_layer.setdefault(row["layer"], []).append(row["v"])
    layers = sorted(by_layer)
    quantiles = {q: [float(np.quantile(by_layer[layer], q)) for layer in layers] for q in (0.1, 0.5, 0.9)}
    return layers, quantiles, max(len(v) for v in by_layer.values())


@pytest.mark.parametrize("metric,depth", [("kl_to_final_bits", "layer"), ("answer_rank", "relative"), ("p_top1", "layer"),
                                          ("entropy_bits", "relative"), ("p_answer", "layer")])
def test_curves_are_quantiles_of_the_last_positions(fixture_warehouse, db, metric, depth):
    run = db.run(RUN_A1)
    curves = data.curves(db, [run], metric_name=metric, lens="norm", depth=depth)
    layers, quantiles, n = expected_curves(fixture_warehouse, RUN_A1, "norm", metric)
    x = [layer / run.n_layers if depth == "relative" else layer for layer in layers]
    (curve,) = curves.curves
    assert curve.n_prompts == n and n > 1

    mpl = static.curves_figure(curves)
    ax = mpl.axes[0]
    (line,) = [ln for ln in ax.lines if ln.get_gid() == f"median:{RUN_A1}"]
    assert list(line.get_xdata()) == pytest.approx(x)
    assert list(line.get_ydata()) == pytest.approx(quantiles[0.5])
    (band,) = [c for c in ax.collections if c.get_gid() == f"band:{RUN_A1}"]
    vertices = band.get_paths()[0].vertices
    for layer_x, low, high in zip(x, quantiles[0.1], quantiles[0.9]):
        at_x = vertices[np.isclose(vertices[:, 0], layer_x)][:, 1]
        assert min(at_x) == pytest.approx(low) and max(at_x) == pytest.approx(high)
    assert (ax.get_yscale() == "log") == (metric == "answer_rank")

    fig = interactive.curves_figure(curves)
    by_role = {t.meta["role"]: t for t in fig.data}
    assert list(by_role["median"].x) == pytest.approx(x) and list(by_role["median"].y) == pytest.approx(quantiles[0.5])
    assert list(by_role["band_low"].y) == pytest.approx(quantiles[0.1])
    assert list(by_role["band_high"].y) == pytest.approx(quantiles[0.9])


def test_curve_marks_the_median_l_semantic(fixture_warehouse, db):
    run = db.run(RUN_A1)
    prompts = [p["prompt_id"] for p in raw(fixture_warehouse, RUN_A1, "prompts", "prompt_id", "prompt_variant = 'orig'")]
    semantic = [hand_marks(fixture_warehouse, RUN_A1, p, "orig", "norm")["L_semantic"] for p in prompts]
    expected = float(np.median([s for s in semantic if s is not None]))
    for depth, x in (("layer", expected), ("relative", expected / run.n_layers)):
        curves = data.curves(db, [run], lens="norm", depth=depth)
        assert curves.curves[0].l_semantic == expected
        assert curves.curves[0].l_semantic_prompts == sum(s is not None for s in semantic)
        (vline,) = [ln for ln in static.curves_figure(curves).axes[0].lines if ln.get_gid() == f"L_semantic:{RUN_A1}"]
        assert list(vline.get_xdata()) == pytest.approx([x, x])
        (shape,) = [s for s in interactive.curves_figure(curves).layout.shapes if s.name == f"L_semantic:{RUN_A1}"]
        assert shape.x0 == pytest.approx(x) and shape.x1 == pytest.approx(x)


def test_one_prompt_is_a_line_without_band(fixture_warehouse, db):
    runs = [db.run(RUN_A1), db.run(RUN_B1)]
    with pytest.raises(Exception, match="no prompt 'copy0'"):
        data.curves(db, runs, prompts=["copy0"])
    curves = data.curves(db, [runs[0]], prompts=["copy0"], metric_name="entropy_bits")
    layers, quantiles, n = expected_curves(fixture_warehouse, RUN_A1, "norm", "entropy_bits", prompts=["copy0"])
    assert n == 1 and curves.curves[0].median == pytest.approx(quantiles[0.5])
    assert not any(c.get_gid() for c in static.curves_figure(curves).axes[0].collections)
    assert [t.meta["role"] for t in interactive.curves_figure(curves).data] == ["median"]
    assert curves.curves[0].l_semantic == 2  # copy0's L_semantic


def test_curves_default_to_each_model_latest_run_with_the_lens(db):
    assert [r.run_id for r in db.select_runs(lens="norm")] == [RUN_LEGACY, RUN_B1, RUN_A2]  # ordered by model id
    assert [r.run_id for r in db.select_runs(lens="raw")] == [RUN_A1]  # run 2 of model A has no raw lens
    assert [r.run_id for r in db.select_runs(models=[MODEL_A], run_ids=[RUN_B1])] == [RUN_B1, RUN_A2]


def test_curve_labels_name_the_run_when_a_model_has_several(db):
    curves = data.curves(db, [db.run(RUN_A1), db.run(RUN_A2), db.run(RUN_B1)])
    assert [c.label for c in curves.curves] == [f"{MODEL_A} ({RUN_A1})", f"{MODEL_A} ({RUN_A2})", "model-b"]


# ---------------------------------------------------------------------------- files and the CLI


def test_cli_writes_every_format(fixture_warehouse, tmp_path):
    from matplotlib.image import imread

    written = []
    for kind, args, extensions in (("heatmap", ["--run", RUN_A1, "--prompt", "copy0"], (".png", ".html")),
                                   ("lenses", ["--model", "model-a", "--prompt", "blank"], (".png",)),
                                   ("curves", ["--depth", "relative"], (".svg", ".pdf", ".html"))):
        for extension in extensions:
            written.append(f"{kind}{extension}")
            out = tmp_path / "figures" / f"{kind}{extension}"
            result = run_cli("plot", kind, *args, "--out", out, "--warehouse", fixture_warehouse)
            assert result.exit_code == 0, result.output
            assert result.stdout.strip() == str(out)
            content = out.read_bytes()
            if extension == ".png":
                pixels = imread(out)
                assert pixels.shape[0] > 200 and pixels[..., :3].std() > 0.05
            elif extension == ".svg":
                assert b"<svg" in content[:2000]
            elif extension == ".pdf":
                assert content.startswith(b"%PDF")
            else:
                text = content.decode("utf-8")
                assert "Plotly.newPlot" in text and "<script src" not in text and len(text) > 1_000_000  # plotly.js inside
    assert sorted(p.name for p in (tmp_path / "figures").iterdir()) == sorted(written)  # no partial files left


@pytest.mark.parametrize(
    "args,fragments",
    [
        (["heatmap", "--run", "nope", "--prompt", "copy0"], ["no committed run 'nope'"]),
        (["heatmap", "--run", RUN_A1, "--prompt", "nope"], ["has no prompt 'nope'", "copy0"]),
        (["heatmap", "--run", RUN_A1, "--prompt", "copy0", "--variant", "x"], ["no variant 'x'", "no_filler, orig"]),
        (["heatmap", "--run", RUN_A1, "--prompt", "copy0", "--lens", "tuned"], ["no 'tuned' lens", "norm, raw"]),
        (["heatmap", "--run", RUN_A1, "--prompt", "nogold", "--metric", "p_answer"], ["p_answer is NULL", "--metric"]),
        (["heatmap", "--model", "nobody", "--prompt", "copy0"], ["no committed run of model 'nobody'"]),
        (["heatmap", "--model", "model-b", "--prompt", "copy0"], ["model 'model-b' has a prompt 'copy0'", "base"]),
        (["heatmap", "--prompt", "copy0"], ["--run RUN or --model MODEL"]),
        (["lenses", "--run", RUN_A1, "--prompt", "nope"], ["has no prompt 'nope'"]),
        (["curves", "--run", RUN_B1, "--prompt", "copy0"], ["has no prompt 'copy0'"]),
        (["curves", "--lens", "tuned"], ["no committed run has a 'tuned' lens"]),
        (["curves", "--run", RUN_A1, "--metric", "p_answer", "--prompt", "nogold"], ["p_answer is NULL at every last position"]),
    ],
)
def test_bad_selections_are_one_line_errors(fixture_warehouse, tmp_path, args, fragments):
    out = tmp_path / "figure.png"
    result = run_cli("plot", *args, "--out", out, "--warehouse", fixture_warehouse)
    assert_one_line_error(result, *fragments)
    assert list(tmp_path.iterdir()) == []


def test_bad_files_are_one_line_errors(fixture_warehouse, tmp_path):
    result = run_cli("plot", "heatmap", "--run", RUN_A1, "--prompt", "copy0", "--out", tmp_path / "x.jpg", "--warehouse", fixture_warehouse)
    assert_one_line_error(result, "use a .png, .svg, .pdf or .html file")
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run_cli("plot", "heatmap", "--run", RUN_A1, "--prompt", "copy0", "--out", blocker / "x.png", "--warehouse", fixture_warehouse)
    assert_one_line_error(result, "cannot write")
    result = run_cli("plot", "heatmap", "--run", RUN_A1, "--prompt", "copy0", "--out", tmp_path / "x.png", "--warehouse", tmp_path / "none")
    assert_one_line_error(result, "no warehouse at")


def test_library_returns_figure_objects(fixture_warehouse, tmp_path):
    import lensdb.plot
    from matplotlib.figure import Figure
    from plotly.graph_objects import Figure as PlotlyFigure

    assert isinstance(lensdb.plot.heatmap(RUN_A1, prompt="copy0", warehouse=fixture_warehouse), Figure)
    fig = lensdb.plot.curves(models=["model-a"], warehouse=fixture_warehouse, backend="plotly")
    assert isinstance(fig, PlotlyFigure)
    assert isinstance(lensdb.plot.lenses(model="model-a", prompt="copy0", warehouse=fixture_warehouse), Figure)
    with pytest.raises(Exception, match="written as .html"):
        lensdb.plot.save(fig, tmp_path / "x.png")
    assert lensdb.plot.save(fig, tmp_path / "x.html").is_file()


def test_help_and_import_load_no_plotting_library():
    from tests.test_cli_startup import modules_after

    heavy = {"torch", "matplotlib", "plotly"}
    assert not modules_after("import lensdb, lensdb.cli, lensdb.plot, lensdb.plot.metrics") & heavy
    loaded = modules_after(
        "from click.testing import CliRunner\n"
        "from lensdb.cli import main\n"
        "for args in (['--help'], ['plot', '--help'], ['plot', 'heatmap', '--help'], ['plot', 'curves', '--help'],\n"
        "             ['plot', 'lenses', '--help'], ['report', '--help']):\n"
        "    result = CliRunner().invoke(main, args)\n"
        "    assert result.exit_code == 0, result.output"
    )
    assert not loaded & heavy


def test_runs_without_the_metric_are_an_error_or_left_out(tmp_path):
    """A run without gold answers has no answer rank: `curves` says so, or leaves it out (the report's
    cross-model curves do), and the report still has every section."""
    from lensdb.report import build

    warehouse = build_warehouse(tmp_path / "warehouse")
    layers = [L([19, 20], [0.5, 0.2], 2.0, 1.0 - i / 2) for i in range(3)]
    prompt = Prompt("free", [19, 20], role="test", last={"norm": layers}, finals={1.0: ([19], [0.5], 2.0)})
    write_run(warehouse, Run("n-run1", "model-n", 2, ["norm"], 5, [prompt], datetime(2025, 6, 1)))
    with data.Warehouse(warehouse) as db:
        runs = [db.run(RUN_B1), db.run("n-run1")]
        with pytest.raises(Exception, match="answer_rank is NULL at every last position of run n-run1"):
            data.curves(db, runs, metric_name="answer_rank")
        assert [c.run.run_id for c in data.curves(db, runs, metric_name="answer_rank", skip_empty=True).curves] == [RUN_B1]
        with pytest.raises(Exception, match="NULL at every last position of the selected runs"):
            data.curves(db, runs[1:], metric_name="answer_rank", skip_empty=True)
    page = build(warehouse=warehouse)
    assert 'id="run-n-run1"' in page and 'id="cross-model"' in page


def test_latest_switch_names_the_default_and_excludes_run(fixture_warehouse, tmp_path):
    """--latest draws what --model picks anyway (the latest run of the model); with --run it is a usage error."""
    with_flag, without = tmp_path / "latest.png", tmp_path / "default.png"
    for out, extra in ((with_flag, ["--latest"]), (without, [])):
        result = run_cli("plot", "heatmap", "--model", "org/model-a", "--prompt", "copy0", *extra, "--out", out, "--warehouse", fixture_warehouse)
        assert result.exit_code == 0, result.stderr
    assert with_flag.read_bytes() == without.read_bytes()
    clash = run_cli("plot", "heatmap", "--run", RUN_A1, "--latest", "--prompt", "copy0", "--out", tmp_path / "x.png", "--warehouse", fixture_warehouse)
    assert clash.exit_code != 0 and "--run or --latest" in clash.stderr
    assert not (tmp_path / "x.png").exists()

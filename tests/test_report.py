"""lensdb report: the page's tables and flags equal direct computations on the fixture
warehouse, the page is self-contained, and it renders in a real headless browser
(Chromium from the system packages; those tests skip when no browser is installed)."""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest

from lensdb.report import build
from tests.cli_helpers import assert_one_line_error, run_cli
from tests.plot_helpers import hand_marks, raw
from tests.warehouse_fixtures import MODEL_A, MODEL_B, MODEL_LEGACY, RUN_A1, RUN_A2, RUN_B1, RUN_LEGACY, build_warehouse

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
needs_browser = pytest.mark.skipif(BROWSER is None, reason="no headless browser (apt-get install chromium)")


@pytest.fixture(scope="module")
def fixture_warehouse(tmp_path_factory):
    return build_warehouse(tmp_path_factory.mktemp("report") / "warehouse")


@pytest.fixture(scope="module")
def page_all(fixture_warehouse, tmp_path_factory):
    """The report of every model's latest run (3 models), written by the CLI."""
    out = tmp_path_factory.mktemp("pages") / "report.html"
    result = run_cli("report", "--out", out, "--warehouse", fixture_warehouse)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    return out


@pytest.fixture(scope="module")
def page_a1(fixture_warehouse):
    return Page(build(runs=[RUN_A1], warehouse=fixture_warehouse))


class Page(HTMLParser):
    """The parts of a report page the tests read: sections, their tables (rows with class and
    cells), figures, scripts and every external reference."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.text = text
        self.sections: dict[str, dict] = {}
        self.scripts: list[dict] = []
        self.references: list[str] = []
        self.figures: list[str] = []
        self._section = None
        self._title = None
        self._row = None
        self._cell = None
        self._capture = None
        self._script = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("src", "href"):
            if name in attrs:
                self.references.append(attrs[name])
        if tag == "section":
            self._section = self.sections.setdefault(attrs["id"], {"tables": {}, "order": []})
        elif tag == "h3":
            self._capture = []
        elif tag == "tr" and self._section is not None:
            self._row = {"class": attrs.get("class"), "cells": []}
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "script":
            self._script = {"attrs": attrs, "text": []}
        elif tag == "div" and (attrs.get("id") or "").startswith("figure-"):
            self.figures.append(attrs["id"])

    def handle_endtag(self, tag):
        if tag == "h3" and self._capture is not None:
            self._title = "".join(self._capture)
            self._section["tables"][self._title] = []
            self._section["order"].append(self._title)
            self._capture = None
        elif tag in ("td", "th") and self._cell is not None:
            self._row["cells"].append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._section["tables"].setdefault(self._title, []).append(self._row)
            self._row = None
        elif tag == "script" and self._script is not None:
            self.scripts.append({"attrs": self._script["attrs"], "text": "".join(self._script["text"])})
            self._script = None
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        for sink in (self._capture, self._cell, self._script and self._script["text"]):
            if sink is not None and sink is not False:
                sink.append(data)

    def table(self, section: str, title: str) -> list[dict]:
        """Rows of a table as dicts (header -> cell text), each with its row class under '_class'."""
        rows = self.sections[section]["tables"][title]
        header, body = rows[0]["cells"], rows[1:]
        return [dict(zip(header, row["cells"])) | {"_class": row["class"]} for row in body]

    def manifest(self, section: str) -> dict:
        return {row["cells"][0]: (row["cells"][1], row["class"]) for row in self.sections[section]["tables"]["Manifest"]}


def run_section(page: Page, run_id: str) -> str:
    return f"run-{run_id}"


# ---------------------------------------------------------------------------- the HTML, without a browser


def test_page_is_self_contained(page_all):
    page = Page(page_all.read_text(encoding="utf-8"))
    assert page.references and all(ref.startswith("#") for ref in page.references), page.references  # in-page links only
    assert "<link" not in page.text and "<iframe" not in page.text and "@import" not in page.text
    plotly_js = [s for s in page.scripts if "plotly.js" in s["text"][:2000].lower() or len(s["text"]) > 1_000_000]
    assert len(plotly_js) == 1 and len(plotly_js[0]["text"]) > 1_000_000  # embedded once
    assert not any("src" in s["attrs"] for s in page.scripts)
    # one Plotly.newPlot per figure div, ids numbered in page order
    assert page.figures == [f"figure-{i}" for i in range(1, len(page.figures) + 1)]
    assert len(re.findall(r"Plotly\.newPlot\(\s*\"figure-\d+\"", page.text)) == len(page.figures)


def test_sections_and_figures(page_all):
    page = Page(page_all.read_text(encoding="utf-8"))
    assert list(page.sections) == ["cross-model", f"run-{RUN_LEGACY}", f"run-{RUN_B1}", f"run-{RUN_A2}"]  # by model id
    # cross-model: KL and rank curves; a-run2: heatmap, lenses (norm + final_ln), KL curve; b-run1 and the
    # legacy run (one lens each): heatmap and KL curve
    assert len(page.figures) == 2 + 2 + 2 + 3
    for section in list(page.sections)[1:]:
        titles = page.sections[section]["order"]
        assert titles[:2] == ["Manifest", "Last-layer check"] and "Raw lens vs norm lens" in titles and titles[-1] == "Figures"


def test_manifest_shows_the_run(page_all, fixture_warehouse):
    page = Page(page_all.read_text(encoding="utf-8"))
    for run_id in (RUN_A2, RUN_B1, RUN_LEGACY):
        (manifest,) = raw(fixture_warehouse, run_id, "manifest")
        shown = page.manifest(run_section(page, run_id))
        for name in ("model", "run_id", "source", "model_revision", "dtype", "device", "n_layers", "top_k",
                     "lensdb_version", "torch_version", "transformers_version"):
            expected = manifest[name]
            assert shown[name][0] == ("–" if expected is None else str(expected)), name
        assert shown["lenses"][0] == ", ".join(manifest["lenses"])
        assert (shown["last_layer_flagged"][1] == "flag") == bool(manifest["last_layer_flagged"])
    assert page.manifest(f"run-{RUN_A2}")["last_layer_flagged"] == ("true", "flag")  # 0.2 bits > 1e-3


def test_last_layer_rows_flagged_where_kl_is_above_half_a_bit(page_a1, fixture_warehouse):
    rows = page_a1.table(f"run-{RUN_A1}", "Last-layer check")
    records = raw(fixture_warehouse, RUN_A1, "records", "prompt_id, prompt_variant, lens, kl_to_final_bits",
                  "is_last_pos AND layer = 4")
    expected = {(r["prompt_id"], r["prompt_variant"], r["lens"]): r["kl_to_final_bits"] > 0.5 for r in records}
    shown = {(r["prompt_id"], r["prompt_variant"], r["lens"]): r["_class"] == "flag" for r in rows}
    assert shown == expected
    assert shown["nogold", "orig", "norm"] and sum(shown.values()) == 2  # nogold: 1.5 and 1.6 bits


def test_diagnostics_table_has_the_rules_layers(page_a1, fixture_warehouse):
    rows = page_a1.table(f"run-{RUN_A1}", "Diagnostics (norm lens)")
    assert len(rows) == 9
    for row in rows:
        expected = hand_marks(fixture_warehouse, RUN_A1, row["prompt_id"], row["prompt_variant"], "norm")
        for name, layer in expected.items():
            assert row[name] == ("–" if layer is None else str(layer)), (row, name)


def test_control_and_ablation_tables(page_a1, fixture_warehouse):
    (control,) = page_a1.table(f"run-{RUN_A1}", "Control margins (norm lens)")
    margins = [r["p_answer"] - r["p_paired_answer"] for r in raw(
        fixture_warehouse, RUN_A1, "records", "layer, p_answer::DOUBLE AS p_answer, p_paired_answer::DOUBLE AS p_paired_answer",
        "prompt_id = 'ctl' AND lens = 'norm' AND is_last_pos", order="layer")]
    assert control["first_control_margin_pos"] == str(next(layer for layer, m in enumerate(margins) if m > 0)) == "2"
    assert control["max_control_margin"] == f"{max(margins):.4g}" == "0.7"
    assert control["_class"] is None
    (ablation,) = page_a1.table(f"run-{RUN_A1}", "Ablation deltas (norm lens)")
    orig = hand_marks(fixture_warehouse, RUN_A1, "copy0", "orig", "norm")
    variant = hand_marks(fixture_warehouse, RUN_A1, "copy0", "no_filler", "norm")
    assert (ablation["L_copy_orig"], ablation["L_copy_variant"], ablation["delta_L_copy"]) == (
        str(orig["L_copy"]), str(variant["L_copy"]), str(variant["L_copy"] - orig["L_copy"]))
    assert ablation["delta_L_sem"] == str(variant["L_semantic"] - orig["L_semantic"]) == "1"


def test_raw_lens_risks_are_highlighted(page_a1):
    rows = {(r["prompt_id"], r["prompt_variant"]): r for r in page_a1.table(f"run-{RUN_A1}", "Raw lens vs norm lens")}
    colour = {"high": "flag", "medium": "warn", "low": None}
    assert all(row["_class"] == colour[row["lens_artifact_risk"]] for row in rows.values())
    # tests/warehouse_fixtures.py, case 10
    assert rows["blank", "orig"]["_class"] == "flag" and rows["blank", "orig"]["max_kl_norm_vs_raw_bits"] == "1"
    assert rows["copy0", "orig"]["_class"] == "warn" and rows["copy0", "orig"]["max_kl_norm_vs_raw_bits"] == "0.7"
    assert rows["nogold", "orig"]["_class"] is None
    assert rows["ties", "orig"]["first_norm_only_semantic_layer"] == "3"


def test_cross_model_l_semantic_over_depth(page_all, fixture_warehouse):
    page = Page(page_all.read_text(encoding="utf-8"))
    rows = {r["model"]: r for r in page.table("cross-model", "L_semantic / n_layers (norm lens, variant orig)")}
    assert set(rows) == {MODEL_A, MODEL_B, MODEL_LEGACY}
    for model, run_id, prompt, n_layers in ((MODEL_A, RUN_A2, "copy0", 4), (MODEL_B, RUN_B1, "base", 2), (MODEL_LEGACY, RUN_LEGACY, "pos", 4)):
        semantic = hand_marks(fixture_warehouse, run_id, prompt, "orig", "norm")["L_semantic"]
        assert rows[model]["main_prompt"] == prompt and rows[model]["L_semantic"] == str(semantic)
        assert rows[model]["L_semantic / n_layers"] == f"{semantic / n_layers:.4g}"
    assert [rows[m]["L_semantic / n_layers"] for m in (MODEL_A, MODEL_B, MODEL_LEGACY)] == ["0.5", "0.5", "0.75"]
    assert rows[MODEL_B]["prompts with L_semantic"] == "2 of 2"


def test_one_model_has_no_cross_model_section(page_a1):
    assert list(page_a1.sections) == [f"run-{RUN_A1}"]


def test_report_errors(fixture_warehouse, tmp_path):
    result = run_cli("report", "--run", "nope", "--out", tmp_path / "r.html", "--warehouse", fixture_warehouse)
    assert_one_line_error(result, "no committed run 'nope'")
    result = run_cli("report", "--out", tmp_path / "r.txt", "--warehouse", fixture_warehouse)
    assert_one_line_error(result, "an .html file")
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- in a real browser


def browse(page, tmp_path, *args) -> subprocess.CompletedProcess:
    """Open `page` in headless Chromium with no network; its console goes to stderr."""
    command = [
        BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-extensions",
        f"--user-data-dir={tmp_path / 'profile'}", "--host-resolver-rules=MAP * ~NOTFOUND",
        "--enable-logging=stderr", "--v=0", "--virtual-time-budget=15000", *args, page.as_uri(),
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)


def console(result: subprocess.CompletedProcess) -> list[str]:
    """Every message the page wrote to the console, uncaught errors included."""
    return [line for line in result.stderr.splitlines() if ":CONSOLE" in line]


def coloured_fraction(png) -> float:
    """The share of strongly coloured pixels (the figures' viridis cells and lines; the page's
    text, tables and highlights are grey or pale)."""
    from matplotlib.image import imread

    pixels = imread(png)[..., :3]
    spread = pixels.max(axis=-1) - pixels.min(axis=-1)
    return float((spread > 0.35).mean())


@needs_browser
def test_browser_check_sees_console_errors_and_missing_figures(tmp_path):
    """The checks below can fail: a page that throws is caught, a page without scripts has no colour."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><p>text</p><script>console.error("bad"); throw new Error("boom");</script></body></html>')
    messages = console(browse(bad, tmp_path, "--dump-dom"))
    assert any("bad" in m for m in messages) and any("Uncaught Error: boom" in m for m in messages)
    shot = tmp_path / "blank.png"
    browse(bad, tmp_path, f"--screenshot={shot}", "--window-size=800,600")
    assert coloured_fraction(shot) < 0.001


@needs_browser
def test_report_renders_offline_without_console_errors(page_all, tmp_path):
    page = Page(page_all.read_text(encoding="utf-8"))
    result = browse(page_all, tmp_path, "--dump-dom")
    assert console(result) == []
    dom = result.stdout
    assert dom.count('class="plot-container plotly"') == len(page.figures) == 9  # every figure drawn by plotly.js
    assert dom.count('class="hm"') >= 3  # heatmap traces rendered (one per heatmap panel)
    assert dom.count('class="main-svg"') >= len(page.figures)

    shot = tmp_path / "report.png"
    browse(page_all, tmp_path, f"--screenshot={shot}", "--window-size=1280,6000", "--hide-scrollbars")
    assert coloured_fraction(shot) > 0.01
    without_scripts = tmp_path / "report-no-js.html"
    without_scripts.write_text(re.sub(r"<script\b.*?</script>", "", page.text, flags=re.S), encoding="utf-8")
    shot = tmp_path / "report-no-js.png"
    browse(without_scripts, tmp_path, f"--screenshot={shot}", "--window-size=1280,6000", "--hide-scrollbars")
    assert coloured_fraction(shot) < 0.001  # the colour above is the figures'


@needs_browser
def test_plot_html_renders_offline(fixture_warehouse, tmp_path):
    out = tmp_path / "heatmap.html"
    assert run_cli("plot", "heatmap", "--run", RUN_A1, "--prompt", "blank", "--out", out, "--warehouse", fixture_warehouse).exit_code == 0
    result = browse(out, tmp_path, "--dump-dom")
    assert console(result) == []
    assert result.stdout.count('class="plot-container plotly"') == 1 and 'class="hm"' in result.stdout

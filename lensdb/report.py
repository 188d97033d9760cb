"""`lensdb report`: one self-contained HTML page about some runs, read from the v1 views.

Per run: the manifest (model, revision, dtype, device, versions), the last-layer check,
the diagnostics table, control margins, ablation deltas, the raw-lens check (flags
highlighted), and the figures of lensdb.plot (a heatmap and the lenses of the run's main
prompt, the KL curve over its prompts). For several models, a cross-model section first:
L_semantic / n_layers and the KL and answer-rank curves at relative depth. plotly.js is
embedded once, so the page needs no network. The tables' SQL is in lensdb/queries/report/.
"""

from __future__ import annotations

import html
import itertools
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lensdb import __version__, queries
from lensdb.errors import LensdbError
from lensdb.output import write_whole
from lensdb.plot import as_tuple, data
from lensdb.plot.data import RunInfo, Warehouse
from lensdb.plot.metrics import DEFAULT_LENS

TABLE_ROWS = 60  # rows shown per table; the rest is one `lensdb query` away

MANIFEST_FIELDS = (
    "model", "run_id", "source", "status", "created_at", "finished_at", "model_revision", "model_path", "model_class",
    "architecture", "n_layers", "d_model", "n_heads", "d_vocab", "n_ctx", "dtype", "device", "unembed_dtype", "lenses",
    "top_k", "prompt_set", "prompt_set_sha256", "seed", "lensdb_version", "torch_version", "transformers_version",
    "transformer_lens_version", "last_layer_max_kl_bits", "last_layer_top1_agreement", "last_layer_flagged",
)


@dataclass
class Table:
    """A titled table: rows of the named columns, and which rows to highlight."""

    title: str
    sql: str  # what the reader runs for the whole table (shown under a capped table)
    columns: list[str]
    rows: list[dict]
    flags: list[str | None] = field(default_factory=list)  # per row: None, "warn" or "flag"
    note: str = ""


def report(out, *, runs=(), models=(), lens: str = DEFAULT_LENS, warehouse=None) -> Path:
    """Write the report of `runs`, the latest runs of `models`, or the latest run of every model."""
    page = build(runs=runs, models=models, lens=lens, warehouse=warehouse)
    path = Path(out)
    if path.suffix.lower() not in (".html", ".htm"):
        raise LensdbError(f"cannot write {path.name}: the report is an .html file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise LensdbError(f"cannot write {path}: {exc.strerror or exc}") from None
    write_whole(path, lambda temporary: Path(temporary).write_text(page, encoding="utf-8"))
    return path


def build(*, runs=(), models=(), lens: str = DEFAULT_LENS, warehouse=None) -> str:
    """The report page as a string."""
    runs, models = as_tuple(runs), as_tuple(models)
    with Warehouse(warehouse) as db:
        chosen = db.select_runs(runs, models)
        ids = itertools.count(1)
        sections = []
        if len({run.model for run in chosen}) > 1:
            sections.append(_cross_model(db, chosen, lens, ids))
        sections += [_run_section(db, run, lens, ids) for run in chosen]
        return _page(db, chosen, lens, sections)


# ---------------------------------------------------------------------- sections


def _run_section(db: Warehouse, run: RunInfo, lens: str, ids) -> str:
    manifest = db.rows("plot/run", run=run.run_id)[0]
    parts = [f'<section class="run" id="{_anchor(run)}">',
             f"<h2>{_e(run.model)} <small>run {_e(run.run_id)}</small></h2>",
             _manifest_table(manifest)]
    parts.append(_render(_last_layer(db, run, manifest)))
    has_lens = lens in db.lenses(run)
    if has_lens:
        parts.append(_render(_table(db, f"Diagnostics ({lens} lens)", "report/diagnostics", run, lens,
                                    note="L_* and first_*: the first layer at which the rule fires at the prompt's last position; – : never.")))
        parts.append(_render(_table(db, f"Control margins ({lens} lens)", "report/control_margins", run, lens,
                                    flag=lambda row: "warn" if row["first_control_margin_pos"] is None else None,
                                    note="control_margin = p(answer) - p(paired prompt's answer); highlighted: never positive.")))
        parts.append(_render(_table(db, f"Ablation deltas ({lens} lens)", "report/ablation", run, lens,
                                    note="variant - orig; – where either side never fires.")))
    else:
        parts.append(f'<p class="note">This run has no {_e(lens)} lens (it has {_e(", ".join(db.lenses(run)))}): '
                     "no diagnostics, control or ablation tables.</p>")
    parts.append(_render(_table(db, "Raw lens vs norm lens", "report/raw_lens", run, lens,
                                flag=lambda row: {"high": "flag", "medium": "warn"}.get(row["lens_artifact_risk"]),
                                note="over the sampled layers; lens_artifact_risk high: the norm lens alone finds the answer, "
                                     "or KL(norm || raw) >= 1 bit; medium: >= 0.5 bit.",
                                empty="No raw-lens comparison in this run (it has no raw lens records or legacy samples).")))
    parts.append(_figures(db, run, lens if has_lens else db.lenses(run)[0], ids))
    parts.append("</section>")
    return "\n".join(parts)


def _manifest_table(manifest: dict) -> str:
    rows = []
    for name in MANIFEST_FIELDS:
        if name not in manifest:
            continue
        value = manifest[name]
        flagged = name == "last_layer_flagged" and value
        rows.append(f"<tr{_row_class('flag' if flagged else None)}><th>{_e(name)}</th><td>{_cell(value)}</td></tr>")
    return '<h3>Manifest</h3>\n<table class="manifest">' + "".join(rows) + "</table>"


def _last_layer(db: Warehouse, run: RunInfo, manifest: dict) -> Table:
    max_kl = manifest.get("last_layer_max_kl_bits")
    if max_kl is None:
        summary = "The final_ln lens vs the model head was not measured in this run (an imported legacy run). "
    else:
        verdict = "FLAGGED (above 1e-3 bits)" if manifest.get("last_layer_flagged") else "ok"
        summary = f"The final_ln lens vs the model head over all prompts: max KL {_number(max_kl)} bits, {verdict}. "
    summary += "Highlighted rows: the last layer's KL to the model's own distribution > 0.5 bit (warn_high_last_layer_kl)."
    return _table(db, "Last-layer check", "report/last_layer", run, None,
                  flag=lambda row: "flag" if row["warn_high_last_layer_kl"] else None, note=summary,
                  empty="No last-layer comparison in this run.")


def _table(db: Warehouse, title: str, query: str, run: RunInfo, lens: str | None, *, flag=None, note: str = "",
           empty: str = "No rows.") -> Table:
    """The named query `query` (lensdb/queries/QUERY.sql) of `run`, and of `lens` where it takes one."""
    params = {"run": run.run_id} | ({"lens": lens} if "lens" in queries.query(query).params else {})
    rows = db.rows(query, **params)
    return Table(title=title, sql=_inline(queries.query(query).sql, params), columns=list(rows[0]) if rows else [], rows=rows,
                 flags=[flag(row) if flag else None for row in rows], note=note if rows else empty)


def _inline(sql: str, params: dict) -> str:
    for key, value in params.items():
        sql = sql.replace(f"${key}", "'" + str(value).replace("'", "''") + "'")
    return " ".join(sql.split())


def _figures(db: Warehouse, run: RunInfo, lens: str, ids) -> str:
    from lensdb.plot import interactive

    parts = ["<h3>Figures</h3>"]
    prompt = db.main_prompt(run, lens)
    if prompt is None:
        parts.append('<p class="note">No prompt of this run has records at more than one position: no heatmap.</p>')
    else:
        grid = data.grid(db, run, prompt, lens=lens, metric_name="p_top1")
        parts.append(_figure(interactive.heatmap_figure(grid), f"Heatmap of prompt {prompt}: p(top-1) and the top-1 token per layer and position.", ids))
        if len(db.lenses(run)) > 1:
            grids = data.lens_grids(db, run, prompt, metric_name="p_top1")
            parts.append(_figure(interactive.lenses_figure(grids), f"Every lens of prompt {prompt}.", ids))
    try:
        kl = data.curves(db, [run], metric_name="kl_to_final_bits", lens=lens)
    except LensdbError as exc:
        parts.append(f'<p class="note">No KL curve: {_e(str(exc))}</p>')
    else:
        parts.append(_figure(interactive.curves_figure(kl), "KL to the final distribution at the last position, over the run's prompts.", ids))
    return "\n".join(parts)


def _cross_model(db: Warehouse, runs: list[RunInfo], lens: str, ids) -> str:
    from lensdb.plot import interactive

    with_lens = [run for run in runs if lens in db.lenses(run)]
    rows = []
    for run in with_lens:
        prompt = db.main_prompt(run, lens)
        marks = db.marks(run, prompt, "orig", lens) if prompt else {"L_semantic": None}
        overall = db.rows("report/l_semantic", run=run.run_id, lens=lens)[0]
        rows.append({
            "model": run.model, "run_id": run.run_id, "n_layers": run.n_layers, "main_prompt": prompt,
            "L_semantic": marks["L_semantic"],
            "L_semantic / n_layers": _ratio(marks["L_semantic"], run.n_layers),
            "median L_semantic / n_layers": _ratio(overall["median_L_semantic"], run.n_layers),
            "prompts with L_semantic": f"{overall['prompts_with_L_semantic']} of {overall['prompts']}",
        })
    table = Table(title=f"L_semantic / n_layers ({lens} lens, variant orig)", sql="", columns=list(rows[0]) if rows else [],
                  rows=rows, flags=[None] * len(rows),
                  note="main_prompt: the run's first 'pos' prompt; the median is over every 'orig' prompt that has an L_semantic.")
    parts = ['<section class="cross" id="cross-model">', "<h2>Across models</h2>", _render(table)]
    if with_lens:
        for metric_name, what in (("kl_to_final_bits", "KL to the final distribution"), ("answer_rank", "The gold answer's rank")):
            try:
                lines = data.curves(db, with_lens, metric_name=metric_name, lens=lens, depth="relative", skip_empty=True)
            except LensdbError as exc:  # e.g. no gold answer in any run: no rank curve
                parts.append(f'<p class="note">{_e(str(exc))}</p>')
                continue
            parts.append(_figure(interactive.curves_figure(lines), f"{what} at the last position, by relative depth (layer / n_layers).", ids))
    parts.append("</section>")
    return "\n".join(parts)


# ---------------------------------------------------------------------- HTML

STYLE = """
body { font-family: system-ui, 'DejaVu Sans', sans-serif; margin: 1.5em 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ccc; margin-top: 2em; } h2 small { color: #777; font-weight: normal; }
table { border-collapse: collapse; margin: 0.4em 0 0.6em; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 2px 7px; text-align: left; font-variant-numeric: tabular-nums; }
thead th { background: #f1f1f1; position: sticky; top: 0; }
table.manifest th { background: #f7f7f7; font-weight: normal; color: #555; }
tr.flag td, tr.flag th { background: #fbd3d0; } tr.warn td, tr.warn th { background: #fdf0c4; }
.note { color: #555; font-size: 0.85em; margin: 0.2em 0 0.8em; }
.figure { overflow-x: auto; margin: 0.5em 0 1.5em; } .figure p { color: #555; font-size: 0.85em; margin: 0.2em 0; }
code { font-size: 0.85em; background: #f4f4f4; padding: 0 3px; }
nav li { margin: 0.1em 0; } .wide { overflow-x: auto; }
"""


def _page(db: Warehouse, runs: list[RunInfo], lens: str, sections: list[str]) -> str:
    import plotly.offline

    created = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    toc = "".join(f'<li><a href="#{_anchor(run)}">{_e(run.model)}</a> <small>run {_e(run.run_id)}</small></li>' for run in runs)
    if len({run.model for run in runs}) > 1:
        toc = '<li><a href="#cross-model">Across models</a></li>' + toc
    return "\n".join([
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>lensdb report: {_e(', '.join(sorted({run.model for run in runs})))}</title>",
        f"<style>{STYLE}</style>",
        f'<script type="text/javascript">{plotly.offline.get_plotlyjs()}</script>',
        "</head><body>",
        "<h1>lensdb report</h1>",
        f'<p class="note">{len(runs)} run{"s" if len(runs) != 1 else ""}, {_e(lens)} lens; made {created} by lensdb {__version__} '
        f"from the warehouse {_e(str(db.path))}. Every number comes from the v1 views.</p>",
        f"<nav><ul>{toc}</ul></nav>",
        *sections,
        "</body></html>",
    ])


def _render(table: Table) -> str:
    parts = [f"<h3>{_e(table.title)}</h3>"]
    if table.rows:
        head = "".join(f"<th>{_e(column)}</th>" for column in table.columns)
        body = []
        for row, flag in zip(table.rows[:TABLE_ROWS], table.flags[:TABLE_ROWS]):
            cells = "".join(f"<td>{_cell(row[column])}</td>" for column in table.columns)
            body.append(f"<tr{_row_class(flag)}>{cells}</tr>")
        parts.append(f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>')
        if len(table.rows) > TABLE_ROWS:
            parts.append(f'<p class="note">The first {TABLE_ROWS} of {len(table.rows):,} rows; all of them: '
                         f"<code>lensdb query \"{_e(table.sql)}\"</code></p>")
    if table.note:
        parts.append(f'<p class="note">{_e(table.note)}</p>')
    return "\n".join(parts)


def _figure(fig, caption: str, ids) -> str:
    """A plotly figure without plotly.js (the page embeds it once); `ids` numbers the figures in page order."""
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=f"figure-{next(ids)}",
                      config={"displaylogo": False, "responsive": False})
    return f'<div class="figure">{div}<p>{_e(caption)}</p></div>'


def _row_class(flag: str | None) -> str:
    return f' class="{flag}"' if flag else ""


def _cell(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, (list, tuple)):
        return _e(", ".join(str(v) for v in value))
    if isinstance(value, datetime):
        return _e(value.strftime("%Y-%m-%d %H:%M:%S"))
    return _e(str(value))


def _number(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.4g}"


def _ratio(numerator, denominator) -> float | None:
    return None if numerator is None or not denominator else numerator / denominator


def _anchor(run: RunInfo) -> str:
    return "run-" + "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in run.run_id)


def _e(value: str) -> str:
    return html.escape(value, quote=True)



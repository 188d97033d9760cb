"""Random small runs, written with the real writer, against a plain-Python reading of the
rules in sql/v1/*.sql (their header comments). The reference below never looks at SQL: it
reads the rows that were written (as Python values) and applies the rules itself.
"""

from __future__ import annotations

import itertools
import shutil
import string

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import lensdb
from tests import warehouse_fixtures as wf

# Token ids the random runs draw from: words, a whitespace-only and a punctuation-only token,
# ' Berlin' / ' Rome' (golds). Contexts use the same ids, so copies are frequent.
IDS = [4, 5, 6, 9, 10, 11, 14, 16, 18]
EXTRA_IDS = [19, 20, 21, 22]  # never in a context
GOLD_IDS = [6, 18, 5, 9]
PROBS = st.one_of(
    st.sampled_from([0.0, 0.05, 0.1, 0.3, 0.5, 0.85, 0.9, 0.95, 0.951, 0.96, 0.99, 1.0]),
    st.floats(0.0, 1.0, width=32),
)
SMALL = st.one_of(st.sampled_from([0.0, 0.5, 1.0, 1.5]), st.floats(0.0, 4.0, width=32))
_run_ids = itertools.count()


# ------------------------------------------------------------------------------------------
# Random runs


@st.composite
def layer_records(draw, context, top_k, gold_ok, paired_ok, lens):
    if context and draw(st.booleans()):
        top1 = draw(st.sampled_from(context))
    else:
        top1 = draw(st.sampled_from(IDS + EXTRA_IDS))
    rest = draw(st.permutations([i for i in IDS + EXTRA_IDS if i != top1]))
    probs = sorted((draw(PROBS) for _ in range(top_k)), reverse=True)
    if draw(st.integers(0, 3)) == 0 and top_k > 1:
        probs[1] = probs[0]  # a tie at the top
    return wf.Layer(
        ids=[top1, *rest[: top_k - 1]],
        probs=probs,
        entropy=draw(SMALL),
        kl=draw(SMALL),
        cos=0.5,
        p_answer=draw(PROBS) if gold_ok else None,
        rank=draw(st.sampled_from([1, 1, 2, 5, 6, 10, 11])) if gold_ok else None,
        p_paired=draw(PROBS) if paired_ok else None,
        paired_rank=draw(st.integers(1, 12)) if paired_ok else None,
        kl_vs_norm=draw(st.sampled_from([0.0, 0.3, 0.49, 0.5, 0.7, 0.999, 1.0])) if lens != "norm" else None,
        legacy_copy=draw(st.booleans()),
    )


@st.composite
def random_runs(draw) -> wf.Run:
    legacy = draw(st.integers(0, 4)) == 0
    n_layers = draw(st.integers(1, 5))
    top_k = draw(st.integers(1, 6))
    lenses = ["norm"] if legacy else draw(st.sampled_from([["norm"], ["norm", "raw"], ["norm", "raw", "final_ln"]]))
    n_prompts = draw(st.integers(1, 3))
    specs = []
    for i in range(n_prompts):
        kind = draw(st.sampled_from(["ok", "ok", "unresolved", None]))
        gold_id = draw(st.sampled_from(GOLD_IDS)) if kind == "ok" else None
        gold = wf.VOCAB[gold_id].strip() if kind == "ok" else (draw(st.sampled_from(["Rome", "Berlin", "is"])) if kind else None)
        variants = ["orig"] + (["no_filler"] if draw(st.booleans()) else [])
        control = i > 0 and draw(st.booleans())
        for variant in variants:
            specs.append((f"p{i}", variant, kind, gold_id, gold, control))
    gold_of = {(pid, variant): gold_id for pid, variant, _, gold_id, _, _ in specs}
    prompts = []
    for pid, variant, kind, gold_id, gold, control in specs:
        context = draw(st.lists(st.sampled_from(IDS), min_size=1, max_size=5))
        paired_gold = gold_of[("p0", "orig")] if control else None
        last = {
            lens: [draw(layer_records(context, top_k, kind == "ok", paired_gold is not None, lens)) for _ in range(n_layers + 1)]
            for lens in lenses
        }
        prompts.append(
            wf.Prompt(
                pid, context, gold=gold, gold_first_id=gold_id, gold_alignment=kind, variant=variant,
                role="control" if control else "main", control_of="p0" if control else None,
                paired_variant="orig" if control else None, paired_gold_first_id=paired_gold,
                last=last, finals={1.0: ([5], [0.5], 1.0)},
            )
        )
    return wf.Run(
        f"prop-{next(_run_ids)}", "org/model-a" if legacy else draw(st.sampled_from(["org/model-a", "model-b"])),
        n_layers, lenses, top_k, prompts, wf.datetime(2025, 1, 1), source="legacy" if legacy else "extract",
    )


# ------------------------------------------------------------------------------------------
# The rules, in plain Python


def is_blank_or_punct(token) -> bool:
    return all(ch.isspace() or ch in string.punctuation for ch in (token or ""))


def occurs_in(window, ids) -> bool:
    return bool(window) and ids is not None and any(ids[i : i + len(window)] == window for i in range(len(ids) - len(window) + 1))


def p_top5(probs):
    p = [np.float32(x) for x in probs]
    if len(p) >= 5:
        total = (((p[0] + p[4]) + p[1]) + p[2]) + p[3]
    else:
        total = p[0]
        for x in p[1:]:
            total = total + x
    return float(np.float32(total))


def first(layers):
    return min(layers) if layers else None


def reference(run: wf.Run, threshold=0.95, margin=0.10, k=1):
    """Per (prompt_id, variant, lens, layer): the pure-next-token flags, from the rows as written."""
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in wf._prompts(run).to_pylist()}
    last = sorted(
        (r for r in wf._records(run).to_pylist() if r["is_last_pos"]),
        key=lambda r: (r["prompt_id"], r["prompt_variant"], r["lens"], r["layer"]),
    )
    rows = {}
    history = {}
    for r in last:
        p = prompts[(r["prompt_id"], r["prompt_variant"])]
        key = (r["prompt_id"], r["prompt_variant"], r["lens"])
        probs, tokens = r["topk_probs"], r["topk_tokens"]
        if r["topk_ids"] is None:
            copy = r["legacy_copy_collapse"]
        else:
            history.setdefault(key, []).append(r["topk_ids"][0])
            p1, p2 = probs[0], (probs[1] if len(probs) > 1 else 0.0)
            copy = (
                p1 > threshold
                and p1 - p2 > margin
                and not is_blank_or_punct(tokens[0])
                and occurs_in(history[key][-k:], p["context_ids"])
            )
        if r["answer_rank"] is not None:
            is_answer = r["answer_rank"] == 1
        elif p["gold"] is not None:
            is_answer = tokens[0].strip() == p["gold"]
        else:
            is_answer = None
        margin_value = None
        if p["control_of"] is not None and r["p_answer"] is not None and r["p_paired_answer"] is not None:
            margin_value = r["p_answer"] - r["p_paired_answer"]
        rows[(*key, r["layer"])] = {
            "copy_collapse": bool(copy),
            "entropy_collapse": r["entropy_bits"] <= 1.0,
            "is_answer": is_answer,
            "p_top1": probs[0],
            "p_top5": p_top5(probs),
            "control_margin": margin_value,
            "kl": r["kl_to_final_bits"],
            "rank": r["answer_rank"],
            "kl_vs_norm": r["kl_vs_norm_bits"],
            "gold_alignment": p["gold_alignment"],
        }
    return rows


def reference_diagnostics(rows):
    groups = {}
    for (pid, variant, lens, layer), row in rows.items():
        groups.setdefault((pid, variant, lens), []).append((layer, row))
    out = {}
    for key, layers in groups.items():
        def first_where(test, layers=layers):
            return first([layer for layer, row in layers if test(row)])

        l_copy = first_where(lambda r: r["copy_collapse"])
        l_sem = first_where(lambda r: r["is_answer"] is True)
        out[key] = {
            "L_copy": l_copy,
            "L_copy_H": first_where(lambda r: r["entropy_collapse"]),
            "L_semantic": l_sem,
            "delta_layers": None if l_copy is None or l_sem is None else l_sem - l_copy,
            "first_kl_below_0_5": first_where(lambda r: r["kl"] <= 0.5),
            "first_kl_below_1_0": first_where(lambda r: r["kl"] <= 1.0),
            "first_rank_le_1": first_where(lambda r: r["rank"] is not None and r["rank"] <= 1),
            "first_rank_le_5": first_where(lambda r: r["rank"] is not None and r["rank"] <= 5),
            "first_rank_le_10": first_where(lambda r: r["rank"] is not None and r["rank"] <= 10),
            "gold_alignment": layers[0][1]["gold_alignment"],
        }
    return out


def reference_control_summary(run, rows):
    controls = {(p.prompt_id, p.variant) for p in run.prompts if p.control_of is not None}
    out = {}
    for (pid, variant, lens, layer), row in rows.items():
        if (pid, variant) in controls:
            out.setdefault((pid, variant, lens), []).append((layer, row["control_margin"]))
    summary = {}
    for key, margins in out.items():
        values = [m for _, m in margins if m is not None]
        summary[key] = {
            "first_control_margin_pos": first([layer for layer, m in margins if m is not None and m > 0]),
            "max_control_margin": max(values) if values else None,
        }
    return summary


def reference_ablation(diagnostics):
    out = {}
    for (pid, variant, lens), orig in diagnostics.items():
        if variant != "orig":
            continue
        for (pid2, variant2, lens2), other in diagnostics.items():
            if pid2 == pid and lens2 == lens and variant2 != "orig":
                out[(pid, variant2, lens)] = {
                    "L_copy_orig": orig["L_copy"],
                    "L_sem_orig": orig["L_semantic"],
                    "L_copy_nf": other["L_copy"],
                    "L_sem_nf": other["L_semantic"],
                    "delta_L_copy": None if orig["L_copy"] is None or other["L_copy"] is None else other["L_copy"] - orig["L_copy"],
                    "delta_L_sem": None
                    if orig["L_semantic"] is None or other["L_semantic"] is None
                    else other["L_semantic"] - orig["L_semantic"],
                }
    return out


def reference_raw_lens_summary(run, rows):
    n = run.n_layers
    sampled = {0, 1 + n // 4, 1 + n // 2, 1 + (3 * n) // 4}
    out = {}
    for p in run.prompts:
        if "norm" not in run.lenses or "raw" not in run.lenses:
            continue
        norm_only, kls = [], []
        for layer in sorted(sampled):
            norm = rows[(p.prompt_id, p.variant, "norm", layer)]
            raw = rows[(p.prompt_id, p.variant, "raw", layer)]
            if norm["is_answer"] is True and raw["is_answer"] is False:
                norm_only.append(layer)
            if raw["kl_vs_norm"] is not None:
                kls.append(raw["kl_vs_norm"])
        first_layer, max_kl = first(norm_only), (max(kls) if kls else None)
        if first_layer is not None or (max_kl is not None and max_kl >= 1.0):
            risk = "high"
        elif max_kl is not None and max_kl >= 0.5:
            risk = "medium"
        else:
            risk = "low"
        out[(p.prompt_id, p.variant)] = {
            "first_norm_only_semantic_layer": first_layer,
            "max_kl_norm_vs_raw_bits": max_kl,
            "lens_artifact_risk": risk,
        }
    return out


# ------------------------------------------------------------------------------------------
# The test


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One warehouse and one open catalog connection for every example (a run each)."""
    warehouse = tmp_path_factory.mktemp("property") / "warehouse"
    warehouse.mkdir()
    con = lensdb.connect(warehouse)
    yield warehouse, con
    con.close()


def fetch(con, sql, params, keys):
    cursor = con.execute(sql, params)
    names = [d[0] for d in cursor.description]
    result = {}
    for values in cursor.fetchall():
        row = dict(zip(names, values))
        result[tuple(row.pop(k) for k in keys)] = row
    return result


def project(expected, columns):
    return {key: {c: row[c] for c in columns} for key, row in expected.items()}


DIAGNOSTIC_COLUMNS = [
    "L_copy", "L_copy_H", "L_semantic", "delta_layers", "first_kl_below_0_5", "first_kl_below_1_0",
    "first_rank_le_1", "first_rank_le_5", "first_rank_le_10", "gold_alignment",
]
PURE_COLUMNS = ["copy_collapse", "entropy_collapse", "is_answer", "p_top1", "p_top5", "control_margin"]


def top_two(run):
    """(p1, p2) of every last-position record as written (float32 values, p2 = 0 when top-1 only)."""
    return sorted(
        {
            (float(np.float32(layer.probs[0])), float(np.float32(layer.probs[1])) if len(layer.probs) > 1 else 0.0)
            for p in run.prompts
            for layers in p.last.values()
            for layer in layers
        }
    )


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(run=random_runs(), data=st.data())
def test_views_follow_the_rules(shared, run, data):
    # Custom copy-rule parameters: often exactly a written p1, or exactly a written p1 - p2,
    # so that the strict comparisons (p1 > threshold, p1 - p2 > margin) are tested at equality.
    pairs = top_two(run)
    threshold = data.draw(st.one_of(st.sampled_from([0.0, 0.5, 0.95]), st.sampled_from([p1 for p1, _ in pairs])), "threshold")
    margin = data.draw(st.one_of(st.sampled_from([0.0, 0.1]), st.sampled_from([p1 - p2 for p1, p2 in pairs])), "margin")
    k = data.draw(st.integers(1, 3), "k")
    warehouse, con = shared
    path = wf.write_run(warehouse, run)  # the catalog connection stays open while a run is committed
    try:
        check_run(con, run, threshold, margin, k)
    finally:
        shutil.rmtree(path)  # keep the warehouse small: one run at a time


def check_run(con, run, threshold, margin, k):
    params = [run.run_id]

    expected = reference(run)
    got = fetch(con, f"SELECT prompt_id, prompt_variant, lens, layer, {', '.join(PURE_COLUMNS)} "
                "FROM v1.pure_next_token WHERE run_id = ?", params, ["prompt_id", "prompt_variant", "lens", "layer"])
    assert got == project(expected, PURE_COLUMNS)

    diagnostics = reference_diagnostics(expected)
    keys = ["prompt_id", "prompt_variant", "lens"]
    got = fetch(con, f"SELECT prompt_id, prompt_variant, lens, {', '.join(DIAGNOSTIC_COLUMNS)} FROM v1.diagnostics WHERE run_id = ?", params, keys)
    assert got == diagnostics

    custom = reference_diagnostics(reference(run, threshold, margin, k))
    got = fetch(
        con,
        f"SELECT prompt_id, prompt_variant, lens, {', '.join(DIAGNOSTIC_COLUMNS)}, copy_thresh, copy_margin, copy_window_k "
        "FROM v1.diagnostics_with(threshold := ?, margin := ?, k := ?) WHERE run_id = ?",
        [threshold, margin, k, run.run_id],
        keys,
    )
    assert got == {key: {**row, "copy_thresh": threshold, "copy_margin": margin, "copy_window_k": k} for key, row in custom.items()}

    got = fetch(con, "SELECT prompt_id, prompt_variant, lens, first_control_margin_pos, max_control_margin "
                "FROM v1.control_summary WHERE run_id = ?", params, keys)
    assert got == reference_control_summary(run, expected)

    got = fetch(con, "SELECT prompt_id, ablation_variant, lens, L_copy_orig, L_sem_orig, L_copy_nf, L_sem_nf, delta_L_copy, delta_L_sem "
                "FROM v1.ablation_summary WHERE run_id = ?", params, ["prompt_id", "ablation_variant", "lens"])
    assert got == reference_ablation(diagnostics)

    got = fetch(con, "SELECT prompt_id, prompt_variant, first_norm_only_semantic_layer, max_kl_norm_vs_raw_bits, lens_artifact_risk "
                "FROM v1.raw_lens_summary WHERE run_id = ?", params, ["prompt_id", "prompt_variant"])
    assert got == reference_raw_lens_summary(run, expected)


def test_blank_and_strip_macros_match_python(shared):
    """v1.is_blank_or_punct and v1.strip agree with str.isspace / string.punctuation / str.strip
    on every character of the Basic Multilingual Plane (and a few beyond)."""
    _, con = shared
    chars = [chr(c) for c in list(range(0x3100)) + [0xFEFF, 0xFF0C, 0x1F600] if not 0xD800 <= c < 0xE000]
    import pyarrow as pa

    characters = pa.table({"c": chars})  # noqa: F841 - read by DuckDB's replacement scan
    got = con.execute("SELECT c, v1.is_blank_or_punct(c), v1.is_blank_or_punct(c || 'a'), v1.strip(c || 'x' || c) FROM characters").fetchall()
    for c, blank, blank_with_letter, stripped in got:
        assert blank == (c.isspace() or c in string.punctuation), hex(ord(c))
        assert blank_with_letter is False, hex(ord(c))
        assert stripped == (c + "x" + c).strip(), hex(ord(c))
    assert con.execute("SELECT v1.is_blank_or_punct(''), v1.is_blank_or_punct(NULL)").fetchone() == (True, True)

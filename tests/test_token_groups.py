"""--track token groups and answer sets, checked against an independent lens (tests/reference.py)
and the tokenizer itself; the views against the stored rows."""

from __future__ import annotations

import numpy as np
import pytest

from lensdb.errors import LensdbError, PromptError
from lensdb.prompts import load_prompt_set
from lensdb.token_groups import parse_track, parse_track_specs
from tests.conftest import TINY_PROMPTS, write_jsonl
from tests.reference import rank_bounds, reference_lens
from tests.test_extract_correctness import read_table, run_extract

PROB_TOL = 1e-5
GROUPS = {"cities": ["Berlin", "Paris", "Rome", "Madrid"], "people": ["Lily", "Tom", "mom"], "unknown": ["Zanzibar"]}


def _prompts():
    prompts = [dict(p) for p in TINY_PROMPTS]
    prompts[0]["gold"] = ["Berlin", "Germany", "Berlin"[:3]]  # several accepted answers
    return prompts


def expected_first_token(tokenizer, text):
    """The first token of `text` (no special tokens) that decodes to more than whitespace (a
    bare space piece names no word); None for the unknown token."""
    for token in tokenizer(text, add_special_tokens=False)["input_ids"]:
        if token == tokenizer.unk_token_id:
            return None
        if tokenizer.decode([token]).strip():
            return token
    return None


@pytest.fixture(scope="module", params=["tiny_gpt2", "tiny_llama"])
def tracked(request, tmp_path_factory):
    model_dir = request.getfixturevalue(request.param)
    tmp = tmp_path_factory.mktemp("groups")
    words = tmp / "people.txt"
    words.write_text("# people of the stories\n\nLily\nTom\n  mom  \n", encoding="utf-8")
    prompts = write_jsonl(tmp / "p.jsonl", _prompts())
    track = ["cities=" + ",".join(GROUPS["cities"]), f"people=@{words}", "unknown=Zanzibar"]
    summary = run_extract(model_dir, prompts, tmp / "warehouse", dtype="float32", lenses=("norm", "raw"), track=track)
    return model_dir, summary


def _tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(model_dir))


def test_words_resolve_to_their_first_tokens(tracked):
    model_dir, summary = tracked
    tokenizer = _tokenizer(model_dir)
    rows = read_table(summary.path, "group_tokens")
    assert {(r["group_name"], r["word"], r["variant"]) for r in rows} == {
        (g, w, v) for g, ws in GROUPS.items() for w in ws for v in ("no_space", "with_space")
    }
    for r in rows:
        text = r["word"] if r["variant"] == "no_space" else " " + r["word"]
        assert r["token_id"] == expected_first_token(tokenizer, text), r
        assert r["tokenized"] == (r["token_id"] is not None)
        if r["token_id"] is not None:
            assert r["token"] == tokenizer.decode([r["token_id"]])
    assert {r["source"].endswith("people.txt") for r in rows if r["group_name"] == "people"} == {True}
    assert {r["source"] for r in rows if r["group_name"] != "people"} == {"inline"}


def test_group_mass_rank_and_best_token_match_the_reference(tracked):
    model_dir, summary = tracked
    tokenizer = _tokenizer(model_dir)
    sets = {
        g: {t for w in ws for t in (expected_first_token(tokenizer, w), expected_first_token(tokenizer, " " + w)) if t is not None}
        for g, ws in GROUPS.items()
    }
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    rows = read_table(summary.path, "token_groups")
    n_layers = read_table(summary.path, "manifest")[0]["n_layers"]
    assert len(rows) == len(GROUPS) * 2 * sum((n_layers + 1) * p["n_tokens"] for p in prompts.values())
    refs = {key: reference_lens(str(model_dir), p["token_ids"], lenses=("norm", "raw")) for key, p in prompts.items()}
    checked_empty = 0
    for r in rows:
        probs = refs[(r["prompt_id"], r["prompt_variant"])].probs[r["lens"]][r["layer"], r["pos"]]
        ids = sorted(sets[r["group_name"]])
        assert r["site"] == "post"
        if not ids:  # no word of the group tokenizes
            assert r["mass"] == 0.0 and r["best_token_id"] is None and r["best_rank"] is None
            checked_empty += 1
            continue
        assert r["mass"] == pytest.approx(probs[ids].sum(), abs=PROB_TOL)
        assert r["best_token_id"] in ids
        assert probs[r["best_token_id"]] == pytest.approx(probs[ids].max(), abs=PROB_TOL)
        low, high = rank_bounds(probs, r["best_token_id"])
        assert low <= r["best_rank"] <= high
        assert r["best_token"] == tokenizer.decode([r["best_token_id"]])
    # the word-level tokenizer has no token for Zanzibar; byte-level BPE tokenizes anything
    assert (checked_empty > 0) == (tokenizer.unk_token_id is not None and tokenizer.unk_token_id != tokenizer.eos_token_id)


def test_answer_mass_sums_every_accepted_answer(tracked):
    model_dir, summary = tracked
    tokenizer = _tokenizer(model_dir)
    prompts = {(p["prompt_id"], p["prompt_variant"]): p for p in read_table(summary.path, "prompts")}
    answers = {(p["id"], p.get("variant", "orig")): p["gold"] if isinstance(p.get("gold"), list) else [p["gold"]] for p in _prompts() if p.get("gold")}
    assert prompts[("pos", "orig")]["gold"] == "Berlin"  # the records' gold stays the first answer
    rows = read_table(summary.path, "answer_mass")
    seen = set()
    for r in rows:
        key = (r["prompt_id"], r["prompt_variant"])
        ids = sorted({t for a in answers[key] for t in (expected_first_token(tokenizer, a), expected_first_token(tokenizer, " " + a)) if t is not None})
        assert ids, "prompts whose answers do not tokenize have no rows"
        probs = reference_lens(str(model_dir), prompts[key]["token_ids"], lenses=("norm", "raw")).probs[r["lens"]][r["layer"], r["pos"]]
        assert r["mass"] == pytest.approx(probs[ids].sum(), abs=PROB_TOL)
        seen.add(key)
    assert ("pos", "orig") in seen and ("short", "orig") not in seen


def test_views_hold_the_stored_rows(tracked):
    import lensdb

    _, summary = tracked
    with lensdb.connect(summary.path.parent.parent.parent) as con:
        stored = len(read_table(summary.path, "token_groups"))
        run = summary.run_id
        assert con.execute("SELECT count(*) FROM v1.token_groups WHERE run_id = ?", [run]).fetchone()[0] == stored
        mean = con.execute(
            "SELECT avg(mass) FROM v1.token_groups WHERE run_id = ? AND group_name = 'cities' AND lens = 'norm' AND is_last_pos", [run]
        ).fetchone()[0]
        masses = [r["mass"] for r in read_table(summary.path, "token_groups") if r["group_name"] == "cities" and r["lens"] == "norm" and r["is_last_pos"]]
        assert mean == pytest.approx(np.mean(masses), rel=1e-6)
        assert con.execute("SELECT count(*) FROM v1.answer_mass WHERE run_id = ?", [run]).fetchone()[0] == len(read_table(summary.path, "answer_mass"))
        assert con.execute("SELECT count(*) FROM v1.group_tokens WHERE run_id = ?", [run]).fetchone()[0] == 2 * sum(map(len, GROUPS.values()))


def test_a_run_without_groups_writes_no_group_tables(tiny_gpt2, tiny_prompts, tmp_path):
    summary = run_extract(tiny_gpt2, tiny_prompts, tmp_path / "warehouse", lenses=("norm",))
    assert not {"group_tokens", "token_groups", "answer_tokens", "answer_mass"} & set(summary.rows)


def test_settings_hash_keeps_earlier_runs_and_tells_tracked_runs_apart():
    from lensdb.run_settings import RecordSettings

    base = dict(lenses=(), reference_lens=None, top_k=20, dtype="auto", revision=None, unembed="auto", keep_residuals=False)
    # the hash of the same settings before --track existed (settings_version 1)
    import hashlib
    import json

    old = json.dumps({"settings_version": 1, **base, "lenses": []}, sort_keys=True, separators=(",", ":"))
    assert RecordSettings(**base).sha256() == hashlib.sha256(old.encode()).hexdigest()
    assert RecordSettings(**base, track=(("a", ("x",)),)).sha256() != RecordSettings(**base).sha256()


@pytest.mark.parametrize(
    "value, message",
    [
        ("=a,b", "empty group name"),
        ("cities", "expected NAME=WORD"),
        ("cities=", "no word given"),
        ("cities= , ,", "no word given"),
        ("cit ies=a", "a group name holds only"),
        ("cities=@/nonexistent/words.txt", "cannot read"),
    ],
)
def test_bad_track_is_one_line(value, message):
    with pytest.raises(LensdbError, match=message) as info:
        parse_track(value)
    assert "\n" not in str(info.value)


def test_track_files_and_duplicates(tmp_path):
    words = tmp_path / "fr.txt"
    words.write_text("\ufeff# French\nchat\n\nchien\nchat\n", encoding="utf-8")
    spec = parse_track(f"fr=@{words}")
    assert spec.words == ("chat", "chien") and spec.source == str(words)
    (tmp_path / "empty.txt").write_text("# nothing\n\n", encoding="utf-8")
    with pytest.raises(LensdbError, match="no word given"):
        parse_track(f"e=@{tmp_path / 'empty.txt'}")
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9\n")
    with pytest.raises(LensdbError, match="not UTF-8"):
        parse_track(f"b=@{tmp_path / 'bad.txt'}")
    with pytest.raises(LensdbError, match="given twice"):
        parse_track_specs(["a=x", "a=y"])


def test_gold_lists(tmp_path):
    good = load_prompt_set(str(write_jsonl(tmp_path / "g.jsonl", [{"id": "a", "text": "x", "gold": ["Paris", "paris"]}, {"id": "b", "text": "y", "gold": "Rome"}])))
    a, b = good.prompts
    assert (a.gold, a.answers) == ("Paris", ("Paris", "paris")) and (b.gold, b.answers) == ("Rome", ("Rome",))
    single = load_prompt_set(str(write_jsonl(tmp_path / "s.jsonl", [{"id": "a", "text": "x", "gold": ["Paris"]}])))
    plain = load_prompt_set(str(write_jsonl(tmp_path / "t.jsonl", [{"id": "a", "text": "x", "gold": "Paris"}])))
    assert single.sha256 == plain.sha256  # a one-answer list is the same set as the string
    for bad in ([], ["Paris", ""], ["Paris", 3], ["Paris", "Paris"]):
        with pytest.raises(PromptError, match="'gold'"):
            load_prompt_set(str(write_jsonl(tmp_path / "b.jsonl", [{"id": "a", "text": "x", "gold": bad}])))


def test_shipped_translation_set_loads():
    prompt_set = load_prompt_set("translation")
    assert len(prompt_set.prompts) >= 10
    assert all(len(p.answers) >= 2 for p in prompt_set.prompts)


def test_plot_groups_draws_the_mean_mass_of_the_stored_rows(tracked, tmp_path):
    import lensdb.plot
    from lensdb.plot import data, group_data

    _, summary = tracked
    warehouse = summary.path.parent.parent.parent
    rows = [r for r in read_table(summary.path, "token_groups") if r["lens"] == "norm" and r["is_last_pos"] and r["prompt_variant"] == "orig"]
    with data.Warehouse(warehouse) as db:
        curves = group_data.group_curves(db, db.run(summary.run_id))
    by_label = {c.label: c for c in curves.curves}
    assert list(by_label) == [*GROUPS, "answer"]
    for name in GROUPS:
        curve = by_label[name]
        for layer, mean, low, high in zip(curve.layers, curve.mean, curve.low, curve.high):
            masses = np.array([r["mass"] for r in rows if r["group_name"] == name and r["layer"] == layer])
            assert mean == pytest.approx(masses.mean(), abs=1e-7)
            spread = 1.959964 * masses.std(ddof=1) / np.sqrt(len(masses))
            assert low == pytest.approx(max(0.0, masses.mean() - spread), abs=1e-7)
            assert high == pytest.approx(min(1.0, masses.mean() + spread), abs=1e-7)
        assert curve.n_prompts == len({(r["prompt_id"]) for r in rows})
    png = lensdb.plot.write("groups", tmp_path / "g.png", run=summary.run_id, warehouse=warehouse)
    assert png.stat().st_size > 0
    fig = lensdb.plot.groups(run=summary.run_id, warehouse=warehouse, groups=["cities"])
    assert {a.get_gid() for a in fig.axes[0].get_children() if a.get_gid()} == {"mass:cities", "band:cities"}
    html = lensdb.plot.groups(run=summary.run_id, warehouse=warehouse, backend="plotly")
    assert [t.meta["group"] for t in html.data if t.meta["role"] == "mass"] == [*GROUPS, "answer"]
    with pytest.raises(LensdbError, match="tracks no group 'nope'"):
        lensdb.plot.groups(run=summary.run_id, warehouse=warehouse, groups=["nope"])

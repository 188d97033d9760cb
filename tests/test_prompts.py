"""Prompt sets: the shipped ones, and validation of user files."""

from __future__ import annotations

import pytest

from lensdb.errors import PromptError
from lensdb.prompts import available_prompt_sets, load_prompt_set
from tests.conftest import write_jsonl


def test_seed_reproduces_the_original_experiment():
    seed = load_prompt_set()  # the default
    assert seed.name == "seed"
    pos, no_filler, ctl = seed.prompts[:3]
    assert (pos.key, pos.gold, pos.temperatures) == (("pos", "orig"), "Berlin", (0.1, 2.0))
    assert pos.text == "Give the city name only, plain text. The capital of Germany is called simply"
    assert (no_filler.key, no_filler.text) == (("pos", "no_filler"), pos.text.removesuffix(" simply"))
    assert (ctl.key, ctl.role, ctl.gold, ctl.control_of) == (("ctl", "orig"), "ctl", "Paris", "pos")
    assert seed.paired_prompt(ctl) is pos and seed.primary() is pos
    tests = [p for p in seed.prompts if p.role == "test"]
    assert len(tests) == 14 and tests[0].text == "Berlin is the capital of"


def test_capitals_battery_pairs_every_positive_prompt_with_a_control():
    capitals = load_prompt_set("capitals")
    positives = [p for p in capitals.prompts if p.role == "pos"]
    controls = [p for p in capitals.prompts if p.role == "ctl"]
    assert len({p.id for p in positives}) >= 100 and len(capitals.prompts) >= 1000
    assert all(p.gold for p in capitals.prompts)
    paired = {capitals.paired_prompt(c).key for c in controls}
    assert paired == {p.key for p in positives}
    for control in controls:
        partner = capitals.paired_prompt(control)
        assert partner.variant == control.variant and partner.gold != control.gold
    assert set(available_prompt_sets()) >= {"seed", "capitals"}


def test_jsonl_defaults_and_hash(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"id": "a", "text": "x", "gold": "y"}, {"id": "b", "text": "z", "control_of": "a"}])
    prompts = load_prompt_set(str(path))
    a, b = prompts.prompts
    assert (a.variant, a.role, b.role) == ("orig", "pos", "ctl")
    assert prompts.name == "p" and len(prompts.sha256) == 64
    again = load_prompt_set(str(write_jsonl(tmp_path / "q.jsonl", [{"id": "a", "text": "x", "gold": "y"}, {"id": "b", "text": "z", "control_of": "a"}])))
    assert again.sha256 == prompts.sha256


@pytest.mark.parametrize(
    "entry, message",
    [
        ({"text": "x"}, "missing 'id'"),
        ({"id": "a b", "text": "x"}, "without whitespace"),
        ({"id": "a", "text": "x", "temperatures": [0]}, "positive numbers"),
        ({"id": "a", "text": "x", "gold": ""}, "'gold' must be a non-empty string"),
        ({"id": "a", "text": "x", "control_of": "a"}, "its own control"),
    ],
)
def test_invalid_prompts(tmp_path, entry, message):
    with pytest.raises(PromptError, match=message):
        load_prompt_set(str(write_jsonl(tmp_path / "bad.jsonl", [entry])))

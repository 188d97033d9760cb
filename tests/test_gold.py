"""Gold alignment: with-space, no-space and unresolved outcomes."""

from __future__ import annotations

from lensdb.extract.gold import align_gold


class CharacterTokenizer:
    """A deterministic toy tokenizer: one id per character, except that ' X' pairs merge
    when listed, and a trailing '=' swallows a following space (so with-space fails)."""

    def __init__(self, merges=()):
        self.merges = set(merges)

    def encode(self, text, add_special_tokens=False):
        pieces, i = [], 0
        while i < len(text):
            two = text[i : i + 2]
            if two in self.merges or two == "= ":
                pieces.append(two)
                i += 2
            else:
                pieces.append(text[i])
                i += 1
        return [hash(p) % 10_000 for p in pieces]

    def convert_ids_to_tokens(self, ids):
        return [f"<{i}>" for i in ids]


def test_with_space_is_preferred():
    tokenizer = CharacterTokenizer(merges={" B"})
    gold = align_gold(tokenizer, "capital is", "Berlin")
    assert (gold.status, gold.variant) == ("ok", "with_space")
    assert gold.answer_ids == tuple(tokenizer.encode(" Berlin")) and gold.first_id == tokenizer.encode(" B")[0]
    assert len(gold.pieces) == 4


def test_no_space_when_the_space_changes_the_prompt_tokens():
    tokenizer = CharacterTokenizer()
    gold = align_gold(tokenizer, "x =", "Paris")
    assert (gold.status, gold.variant) == ("ok", "no_space")
    assert gold.answer_ids == tuple(tokenizer.encode("Paris"))


def test_unresolved_when_nothing_extends_the_prompt():
    class Dropping(CharacterTokenizer):
        def encode(self, text, add_special_tokens=False):
            return super().encode(text.replace("@", "").rstrip())

    gold = align_gold(Dropping(), "a b", "@@")
    assert (gold.status, gold.variant, gold.first_id, gold.answer_ids, gold.pieces) == ("unresolved", "unknown", None, (), ())

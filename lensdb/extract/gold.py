"""Gold-answer alignment: which token ids continue a prompt with its answer.

Encode `prompt + " " + answer` and `prompt + answer` without special tokens; the answer's
ids are what strictly extends the prompt's own encoding. The with-space variant is
preferred, then the no-space one; if neither extends the prompt, the gold is unresolved.
"""

from __future__ import annotations

from dataclasses import dataclass, field

PIECES_SHOWN = 4


@dataclass(frozen=True)
class GoldAlignment:
    status: str  # "ok" or "unresolved"
    variant: str  # "with_space", "no_space" or "unknown"
    answer_ids: tuple[int, ...] = ()
    pieces: tuple[str, ...] = field(default_factory=tuple)

    @property
    def first_id(self) -> int | None:
        return self.answer_ids[0] if self.answer_ids else None


UNRESOLVED = GoldAlignment(status="unresolved", variant="unknown")


def align_gold(tokenizer, prompt: str, answer: str) -> GoldAlignment:
    context = encode(tokenizer, prompt)
    for variant, text in (("with_space", f"{prompt} {answer}"), ("no_space", f"{prompt}{answer}")):
        ids = encode(tokenizer, text)
        if len(ids) > len(context) and ids[: len(context)] == context:
            answer_ids = tuple(ids[len(context) :])
            pieces = tuple(tokenizer.convert_ids_to_tokens(list(answer_ids[:PIECES_SHOWN])))
            return GoldAlignment(status="ok", variant=variant, answer_ids=answer_ids, pieces=pieces)
    return UNRESOLVED


def encode(tokenizer, text: str) -> list[int]:
    return list(tokenizer.encode(text, add_special_tokens=False))

"""Stage 1, batches: prompts -> token ids, gold alignments and batches of rows.

Everything here runs once per run on the host, before the model sees a token: every
prompt is tokenized (BOS as transformer-lens prepends it), gold answers are aligned,
every vocabulary id is decoded once, and prompts are grouped into batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from lensdb.errors import PromptError
from lensdb.extract.gold import GoldAlignment, align_gold, encode
from lensdb.extract.records import RowIndex
from lensdb.extract.stats import NO_TOKEN
from lensdb.prompts import Prompt, PromptSet


@dataclass
class PreparedPrompt:
    index: int
    prompt: Prompt
    input_ids: list[int]
    context_ids: list[int]
    gold: GoldAlignment | None
    paired: Prompt | None
    paired_gold: GoldAlignment | None

    @property
    def answer_id(self) -> int:
        return _token_or_none(self.gold)

    @property
    def paired_answer_id(self) -> int:
        return _token_or_none(self.paired_gold)


@dataclass
class Batch:
    """Prompts that go through the model together, and what each of their real-token rows is."""

    prompts: list[PreparedPrompt]
    rows: RowIndex
    answer_ids: np.ndarray  # int64 (rows,): the gold first token of each row's prompt, or NO_TOKEN
    paired_ids: np.ndarray  # int64 (rows,): the same for the prompt it is paired with

    @property
    def sequences(self) -> list[list[int]]:
        return [p.input_ids for p in self.prompts]

    @property
    def last_rows(self) -> np.ndarray:
        """The row of each prompt's last position."""
        return np.cumsum([len(p.input_ids) for p in self.prompts]) - 1


def prepare_prompts(model, prompt_set: PromptSet) -> list[PreparedPrompt]:
    """Tokenize every prompt and align gold answers; a prompt too long or empty stops the run."""
    alignments: dict[tuple[str, str], GoldAlignment | None] = {}
    for prompt in prompt_set.prompts:
        alignments[prompt.key] = align_gold(model.tokenizer, prompt.text, prompt.gold) if prompt.gold else None
    prepared = []
    for index, prompt in enumerate(prompt_set.prompts):
        input_ids = model.bridge.to_tokens(prompt.text, truncate=False)[0].tolist()
        if not input_ids:
            raise PromptError(f"prompt {prompt.id!r} ({prompt.variant}) has no tokens")
        if len(input_ids) > model.n_ctx:
            raise PromptError(
                f"prompt {prompt.id!r} ({prompt.variant}) has {len(input_ids)} tokens, more than the model's context of {model.n_ctx}"
            )
        paired = prompt_set.paired_prompt(prompt)
        prepared.append(
            PreparedPrompt(
                index=index,
                prompt=prompt,
                input_ids=input_ids,
                context_ids=encode(model.tokenizer, prompt.text),
                gold=alignments[prompt.key],
                paired=paired,
                paired_gold=alignments[paired.key] if paired is not None else None,
            )
        )
    return prepared


def vocabulary_strings(tokenizer, d_vocab: int) -> pa.Array:
    """Each vocabulary id decoded once, as the tokenizer decodes that single id."""
    known = min(d_vocab, len(tokenizer))
    strings = tokenizer.batch_decode([[i] for i in range(known)])
    strings.extend([""] * (d_vocab - known))
    return pa.array(strings, pa.string())


def make_batches(prepared: list[PreparedPrompt], batch_size: int) -> list[Batch]:
    """Longest prompts first, so that padding stays small and memory peaks early."""
    order = sorted(prepared, key=lambda p: -len(p.input_ids))
    return [_batch(order[start : start + batch_size]) for start in range(0, len(order), batch_size)]


def _batch(prompts: list[PreparedPrompt]) -> Batch:
    lengths = [len(p.input_ids) for p in prompts]
    pos = np.concatenate([np.arange(n, dtype=np.int32) for n in lengths])
    rows = RowIndex(
        prompt=np.repeat(np.array([p.index for p in prompts], dtype=np.int64), lengths),
        pos=pos,
        token_id=np.concatenate([np.array(p.input_ids, dtype=np.int32) for p in prompts]),
        is_last=pos == np.repeat(np.array(lengths, dtype=np.int32) - 1, lengths),
    )
    return Batch(
        prompts=prompts,
        rows=rows,
        answer_ids=np.repeat(np.array([p.answer_id for p in prompts], dtype=np.int64), lengths),
        paired_ids=np.repeat(np.array([p.paired_answer_id for p in prompts], dtype=np.int64), lengths),
    )


def _token_or_none(gold: GoldAlignment | None) -> int:
    if gold is None or gold.first_id is None:
        return NO_TOKEN
    return gold.first_id

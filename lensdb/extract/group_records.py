"""Token groups in a run: resolved once per run, tracked per chunk, written as Arrow tables.

    prepare_groups(...)   --track specs and the prompts' answer sets -> RunGroups (host, once)
    RunGroups.tracker()   the chunk's GroupTracker (stats.chunk_statistics fills it on the device)
    RunGroups.batches()   a chunk's GroupStats (on the host) -> token_groups / answer_mass batches
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import torch

from lensdb.extract import groups as group_math
from lensdb.extract.records import RowIndex
from lensdb.warehouse import schema


@dataclass
class RunGroups:
    names: list[str]  # tracked groups, in --track order
    words: pa.Table  # group_tokens
    answers: pa.Table  # answer_tokens
    index: torch.Tensor | None  # (G, K) on the lens device
    mask: torch.Tensor | None
    prompt_answer_index: np.ndarray | None  # (prompts, A) int64: each prompt's answer-set ids
    prompt_answer_mask: np.ndarray | None

    @property
    def active(self) -> bool:
        return self.index is not None or self.prompt_answer_index is not None

    def tracker(self, rows: RowIndex, device: torch.device) -> group_math.GroupTracker | None:
        if not self.active:
            return None
        answer_index = answer_mask = has_answers = None
        if self.prompt_answer_index is not None:
            mask = self.prompt_answer_mask[rows.prompt]
            answer_index = torch.from_numpy(self.prompt_answer_index[rows.prompt]).to(device)
            answer_mask = torch.from_numpy(mask).to(device)
            has_answers = torch.from_numpy(mask.any(axis=1)).to(device)
        return group_math.GroupTracker(self.index, self.mask, answer_index, answer_mask, has_answers)

    def batches(self, stats: group_math.GroupStats, *, lens: str, layers: np.ndarray, rows: RowIndex, prompt_ids, prompt_variants, vocab,
                sites=None):
        """(table, batch, schema) for the chunk: token_groups rows, then answer_mass rows.
        `sites` gives each of the chunk's slots its site (None: all post)."""
        n_layers, n_rows = len(layers), len(rows.prompt)
        slot_sites = np.full(n_layers, "post", dtype=object) if sites is None else np.asarray(sites, dtype=object)
        base = {
            "prompt": np.tile(rows.prompt, n_layers),
            "layer": np.repeat(layers.astype(np.int32), n_rows),
            "site": np.repeat(slot_sites, n_rows),
            "pos": np.tile(rows.pos, n_layers),
            "is_last": np.tile(rows.is_last, n_layers),
        }
        if self.names:
            yield "token_groups", self._group_batch(stats, base, lens, prompt_ids, prompt_variants, vocab), schema.TOKEN_GROUPS
        if stats.answer_mass is not None:
            mass = stats.answer_mass.numpy().reshape(-1)
            keep = ~np.isnan(mass)
            if keep.any():
                yield "answer_mass", _answer_batch(mass[keep], {k: v[keep] for k, v in base.items()}, lens, prompt_ids, prompt_variants), schema.ANSWER_MASS

    def _group_batch(self, stats, base, lens, prompt_ids, prompt_variants, vocab) -> pa.RecordBatch:
        g = len(self.names)
        n = len(base["prompt"]) * g
        best_id = stats.best_id.numpy().reshape(-1).astype(np.int32)
        missing = best_id == group_math.NO_TOKEN
        prompt = np.repeat(base["prompt"], g)
        return pa.RecordBatch.from_pydict(
            {
                "prompt_id": prompt_ids.take(prompt),
                "prompt_variant": prompt_variants.take(prompt),
                "lens": pa.array([lens]).take(np.zeros(n, dtype=np.int64)),
                "layer": pa.array(np.repeat(base["layer"], g)),
                "site": pa.array(np.repeat(base["site"], g), pa.string()),
                "pos": pa.array(np.repeat(base["pos"], g)),
                "is_last_pos": pa.array(np.repeat(base["is_last"], g)),
                "group_name": pa.array(self.names).take(np.tile(np.arange(g), len(base["prompt"]))),
                "mass": pa.array(stats.mass.numpy().reshape(-1)),
                "best_rank": pa.array(stats.best_rank.numpy().reshape(-1), mask=missing),
                "best_token_id": pa.array(best_id, mask=missing),
                "best_token": vocab.take(pa.array(np.where(missing, 0, best_id), mask=missing)),
            },
            schema=schema.TOKEN_GROUPS,
        )


def _answer_batch(mass, base, lens, prompt_ids, prompt_variants) -> pa.RecordBatch:
    n = len(mass)
    return pa.RecordBatch.from_pydict(
        {
            "prompt_id": prompt_ids.take(base["prompt"]),
            "prompt_variant": prompt_variants.take(base["prompt"]),
            "lens": pa.array([lens]).take(np.zeros(n, dtype=np.int64)),
            "layer": pa.array(base["layer"]),
            "site": pa.array(base["site"], pa.string()),
            "pos": pa.array(base["pos"]),
            "is_last_pos": pa.array(base["is_last"]),
            "mass": pa.array(mass),
        },
        schema=schema.ANSWER_MASS,
    )


def prepare_groups(tokenizer, specs, prepared, vocab: pa.Array, device: torch.device) -> RunGroups:
    """Resolve --track groups and, when a run tracks groups or a prompt lists several answers,
    every prompt's answer set."""
    texts = vocab.to_pylist()
    names = [spec.name for spec in specs]
    words = group_math.resolve_words(tokenizer, {spec.name: spec.words for spec in specs}, texts)
    source = {spec.name: spec.source for spec in specs}
    index = mask = None
    if specs:
        index_np, mask_np = group_math.group_index(group_math.token_sets(words, names))
        index, mask = torch.from_numpy(index_np).to(device), torch.from_numpy(mask_np).to(device)
    words_table = _token_table(schema.GROUP_TOKENS, [({"group_name": w.group, "word": w.word, "source": source[w.group]}, w) for w in words], texts)
    with_answers = bool(specs) or any(len(p.prompt.answers) > 1 for p in prepared)
    answer_words, answer_sets = [], []
    for item in prepared if with_answers else ():
        resolved = group_math.resolve_words(tokenizer, {"": item.prompt.answers}, texts)
        keys = {"prompt_id": item.prompt.id, "prompt_variant": item.prompt.variant}
        answer_words.extend((keys | {"answer": w.word}, w) for w in resolved)
        answer_sets.append(group_math.token_sets(resolved, [""])[0])
    answers_table = _token_table(schema.ANSWER_TOKENS, answer_words, texts)
    answer_index = answer_mask = None
    if with_answers:
        answer_index, answer_mask = group_math.group_index(answer_sets)
    return RunGroups(names, words_table, answers_table, index, mask, answer_index, answer_mask)


def _token_table(table_schema: pa.Schema, words, texts: list[str]) -> pa.Table:
    """`words` as (identifying columns, WordToken) pairs -> one row each."""
    rows = [
        keys
        | {
            "variant": word.variant,
            "token_id": word.token_id,
            "token": None if word.token_id is None else texts[word.token_id],
            "tokenized": word.token_id is not None,
        }
        for keys, word in words
    ]
    return pa.Table.from_pylist(rows, schema=table_schema)

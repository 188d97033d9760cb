"""Token groups: the probability a lens gives a whole set of tokens, on the device.

A group (`--track NAME=...`) and a prompt's answer set (every accepted gold answer) are
words; each word counts with its first token in both spacing variants ("word", " word").
The maths is pure tensor functions over full next-token distributions (not the top-k):

| function           | does                                                                       |
| ------------------ | -------------------------------------------------------------------------- |
| `resolve_words`    | words -> first token id per spacing variant (host, once per run)           |
| `group_index`      | resolved words -> a padded (groups, width) id matrix and its mask          |
| `group_probs`      | probs (..., V) -> each group's token probabilities (..., G, K)             |
| `best_probs`       | those -> each group's best probability (..., G), the threshold of its rank  |
| `group_summary`    | those -> per group: mass and best token id                                 |
| `set_mass`         | probs (..., B, V) and a per-row padded id matrix (B, A) -> mass (..., B)    |

Ranks count as the records' answer_rank does: 1 + the number of tokens with strictly
larger probability (stats.count_above). A group none of whose words tokenize has mass 0
and no best token. The statistics stage works on cache-sized blocks of rows: per block only
the group probabilities and the rank counts, which need the block's full distributions;
masses and best tokens once per chunk (GroupTracker), in few large kernels.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lensdb.extract.gold import encode
from lensdb.extract.stats import count_above

VARIANTS = (("no_space", "{}"), ("with_space", " {}"))
NO_TOKEN = -1


@dataclass(frozen=True)
class WordToken:
    """One word in one spacing variant and its first token (None: the word does not tokenize)."""

    group: str
    word: str
    variant: str  # "no_space" or "with_space"
    token_id: int | None


def first_token(tokenizer, text: str, vocab_texts: list[str]) -> int | None:
    """The first token of `text` that decodes to more than whitespace (SentencePiece may start
    " word" with a bare "▁"); None if there is none or it is the unknown token."""
    unknown = tokenizer.unk_token_id
    for token in encode(tokenizer, text):
        if token == unknown and unknown is not None:
            return None
        if token < len(vocab_texts) and vocab_texts[token].strip():
            return int(token)
    return None


def resolve_words(tokenizer, groups: dict[str, tuple[str, ...]], vocab_texts: list[str]) -> list[WordToken]:
    """Every (group, word, variant) with its first token; `vocab_texts` is each id decoded once."""
    return [
        WordToken(group, word, variant, first_token(tokenizer, template.format(word), vocab_texts))
        for group, words in groups.items()
        for word in words
        for variant, template in VARIANTS
    ]


def token_sets(words: list[WordToken], names: list[str]) -> list[list[int]]:
    """The distinct token ids of each named group, in first-seen order."""
    sets: dict[str, dict[int, None]] = {name: {} for name in names}
    for word in words:
        if word.token_id is not None:
            sets[word.group][word.token_id] = None
    return [list(sets[name]) for name in names]


def group_index(sets: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    """Padded (len(sets), width) int64 ids (padding 0) and the bool mask of real entries."""
    width = max(1, max((len(s) for s in sets), default=1))
    index = np.zeros((len(sets), width), dtype=np.int64)
    mask = np.zeros((len(sets), width), dtype=bool)
    for row, ids in enumerate(sets):
        index[row, : len(ids)] = ids
        mask[row, : len(ids)] = True
    return index, mask


@dataclass
class GroupStats:
    """Per (layers, positions, groups): mass, best rank and best token id; answer_mass per (layers, positions)."""

    mass: torch.Tensor  # float32
    best_rank: torch.Tensor  # int32, NO_TOKEN where the group has no token
    best_id: torch.Tensor  # int64, NO_TOKEN where the group has no token
    answer_mass: torch.Tensor | None  # float32, nan where the prompt has no answer set
    gathered: torch.Tensor | None = None  # (layers, positions, G, K) while the chunk is filled; None after finish


def group_probs(probs: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """probs (..., V); index (G, K) -> the probabilities of each group's tokens (..., G, K)."""
    return probs[..., index]


def best_probs(gathered: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., G, K) group probabilities -> each group's largest (..., G); -1 for a group without tokens."""
    return gathered.masked_fill(~mask, -1.0).amax(dim=-1)


def group_summary(gathered: torch.Tensor, index: torch.Tensor, mask: torch.Tensor):
    """(..., G, K) group probabilities -> mass and best token id (..., G); a group without
    tokens has mass 0 and best id NO_TOKEN."""
    mass = gathered.masked_fill(~mask, 0.0).sum(dim=-1)
    best_k = gathered.masked_fill(~mask, -1.0).argmax(dim=-1)
    best_id = index.expand(*best_k.shape[:-1], *index.shape).gather(-1, best_k.unsqueeze(-1)).squeeze(-1)
    return mass, best_id.masked_fill(~mask.any(dim=-1), NO_TOKEN)


def set_mass(probs: torch.Tensor, index: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """probs (..., B, V); index / mask (B, A): each row's own token set -> mass (..., B)."""
    gathered = probs.gather(-1, index.expand(*probs.shape[:-2], *index.shape))
    return torch.where(mask, gathered, torch.zeros((), dtype=probs.dtype, device=probs.device)).sum(dim=-1)


@dataclass
class GroupTracker:
    """What one chunk needs to fill GroupStats: the groups' ids, and each chunk row's answer set.

    `fill` is the statistics stage's hook (stats.chunk_statistics), called for every block
    of rows with that block's probabilities."""

    index: torch.Tensor | None  # (G, K) int64, None without tracked groups
    mask: torch.Tensor | None
    answer_index: torch.Tensor | None  # (P, A) int64 for the chunk's rows, None without answer sets
    answer_mask: torch.Tensor | None
    has_answers: torch.Tensor | None = None  # (P,) bool

    def empty(self, layers: int, positions: int, device) -> GroupStats:
        groups = 0 if self.index is None else self.index.shape[0]
        return GroupStats(
            mass=torch.empty(layers, positions, groups, device=device),
            best_rank=torch.empty(layers, positions, groups, dtype=torch.int32, device=device),
            best_id=torch.empty(layers, positions, groups, dtype=torch.long, device=device),
            answer_mass=None if self.answer_index is None else torch.empty(layers, positions, device=device),
            gathered=None if self.index is None else torch.empty(layers, positions, *self.index.shape, device=device),
        )

    def fill(self, out: GroupStats, at, rows: slice, probs: torch.Tensor) -> None:
        """One block: what needs its full distributions (group probabilities, rank counts)."""
        if self.index is not None:
            gathered = group_probs(probs, self.index)
            out.gathered[at] = gathered
            out.best_rank[at] = count_above(probs, best_probs(gathered, self.mask))
        if self.answer_index is not None:
            out.answer_mass[at] = set_mass(probs, self.answer_index[rows], self.answer_mask[rows])

    def finish(self, out: GroupStats) -> None:
        """The whole chunk at once: masses, best tokens, ranks from counts."""
        if self.index is not None:
            out.mass, out.best_id = group_summary(out.gathered, self.index, self.mask)
            out.best_rank.add_(1).masked_fill_(~self.mask.any(dim=-1), NO_TOKEN)
            out.gathered = None
        if out.answer_mass is not None:
            out.answer_mass.masked_fill_(~self.has_answers.expand_as(out.answer_mass), float("nan"))

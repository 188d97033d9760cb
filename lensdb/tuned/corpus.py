"""The training text of train-lens: a corpus file -> token windows, and the held-out split.

Documents are joined by the EOS token and cut into windows of seq_len tokens, each starting
with BOS where the model's inputs do; the last windows (EVAL_FRACTION) are held out.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

import torch

from lensdb.errors import LensdbError
from lensdb.extract.gold import encode
from lensdb.extract.model import LoadedModel

MAX_EVAL_TOKENS = 2**17


@dataclass(frozen=True)
class Corpus:
    path: Path
    sha256: str
    documents: list[str]


def read_corpus(path: str | Path) -> Corpus:
    """A .txt file (one document) or a .jsonl file (one document per line, key `text`)."""
    path = Path(path).expanduser()
    if path.suffix not in (".txt", ".jsonl"):
        raise LensdbError(f"--text {path}: give a .txt or a .jsonl file (one {{\"text\": ...}} object per line)")
    try:
        data = path.read_bytes()
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise LensdbError(f"--text {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise LensdbError(f"--text {path}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    if path.suffix == ".txt":
        documents = [text] if text.strip() else []
    else:
        documents = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LensdbError(f"--text {path}, line {number}: not JSON ({exc.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("text"), str):
                raise LensdbError(f"--text {path}, line {number}: needs a string `text`")
            if item["text"].strip():
                documents.append(item["text"])
    if not documents:
        raise LensdbError(f"--text {path} holds no text")
    return Corpus(path=path.resolve(), sha256=sha256(data).hexdigest(), documents=documents)


def token_windows(model: LoadedModel, corpus: Corpus, seq_len: int) -> torch.Tensor:
    """(n_windows, seq_len) token ids: the documents joined by EOS, cut into windows, each
    starting with BOS where the model's inputs do; the incomplete last window is dropped."""
    tokenizer = model.tokenizer
    bos = tokenizer.bos_token_id if getattr(model.bridge.cfg, "default_prepend_bos", True) else None
    eos = tokenizer.eos_token_id
    stream: list[int] = []
    for document in corpus.documents:
        stream.extend(encode(tokenizer, document))
        if eos is not None:
            stream.append(eos)
    body = seq_len - 1 if bos is not None else seq_len
    n_windows = len(stream) // body
    if n_windows == 0:
        raise LensdbError(f"--text {corpus.path} has {len(stream)} tokens, fewer than one window of {seq_len} (lower --seq-len)")
    windows = torch.tensor(stream[: n_windows * body], dtype=torch.long).view(n_windows, body)
    if bos is not None:
        windows = torch.cat([torch.full((n_windows, 1), bos, dtype=torch.long), windows], dim=1)
    return windows


def split_windows(windows: torch.Tensor, eval_fraction: float, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Training windows and held-out windows (the corpus's last ones, at most MAX_EVAL_TOKENS)."""
    n = windows.shape[0]
    if eval_fraction <= 0 or n < 2:
        return windows, windows[:0]
    n_eval = min(max(1, round(n * eval_fraction)), max(1, MAX_EVAL_TOKENS // seq_len), n - 1)
    return windows[: n - n_eval], windows[n - n_eval :]

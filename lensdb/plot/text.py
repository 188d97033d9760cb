"""Token strings as figure labels: escaped, visible when blank, truncated."""

from __future__ import annotations

import unicodedata

_NAMED_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
_INVISIBLE = ("Cc", "Cf", "Cs", "Co", "Cn")  # control, format, surrogate, private use, unassigned
EMPTY = '""'
SPACE = "␣"
ELLIPSIS = "…"


def is_blank(text: str | None) -> bool:
    """Decoded text that shows nothing: empty or whitespace only."""
    return text is None or text.strip() == ""


def escape(text: str | None) -> str:
    """`text` with newlines, tabs and other invisible characters written as escapes; an
    empty string as "" and a whitespace-only one with a visible space sign."""
    if text is None:
        return EMPTY
    shown = "".join(_escape_char(ch) for ch in text)
    if shown == "":
        return EMPTY
    if shown.isspace():
        return SPACE * len(shown)
    return shown


def _escape_char(ch: str) -> str:
    if ch in _NAMED_ESCAPES:
        return _NAMED_ESCAPES[ch]
    if unicodedata.category(ch) in _INVISIBLE:
        code = ord(ch)
        return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    return ch


def label(text: str | None, piece: str | None = None) -> str:
    """The label of a token: its vocabulary piece where the decoded text is blank and the
    piece is known (SentencePiece's '▁' decodes to ""), else the escaped text."""
    if piece is not None and is_blank(text) and piece != text:
        return escape(piece)
    return escape(text)


def truncate(text: str, max_chars: int) -> str:
    return text if len(text) <= max_chars else text[: max(1, max_chars - 1)] + ELLIPSIS

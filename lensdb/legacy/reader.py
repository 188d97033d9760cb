"""The legacy output files of a folder -> parsed, checked rows (errors name the file and line).

A model's three files: output-<model>.json (the JSON blocks), output-<model>-records.csv
(every position of the 'pos' prompt) and output-<model>-pure-next-token.csv (the last
position of every prompt, with its metrics). lensdb.legacy.tables makes the warehouse
tables of them; lensdb.legacy.importer writes those.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from lensdb.errors import LegacyFormatError
from lensdb.legacy import format as fmt

# Without a prompt_variant column, the pure CSV's blocks of one prompt id (each starting
# again at layer 0) are these variants, in this order.
VARIANTS_BY_BLOCK = {fmt.POS_ID: (fmt.ORIG_VARIANT, fmt.NO_FILLER_VARIANT), fmt.CTL_ID: (fmt.ORIG_VARIANT,)}

PRIMARY = (fmt.POS_ID, fmt.ORIG_VARIANT)  # the prompt the records CSV and the JSON describe

_PURE_NUMBERS = {
    "p_top1": float,
    "p_top5": float,
    "p_answer": float,
    "kl_to_final_bits": float,
    "answer_rank": int,
    "cos_to_final": float,
    "control_margin": float,
}
_PURE_FLAGS = ("copy_collapse", "entropy_collapse", "is_answer")


@dataclass(frozen=True)
class LegacyFiles:
    stem: str
    json: Path
    records: Path
    pure: Path


@dataclass
class LensRow:
    """One row of either CSV; `metrics` (the parsed metric columns) only on pure rows."""

    line: int
    prompt_id: str
    prompt_variant: str | None
    layer: int
    pos: int
    token: str
    entropy: float | None
    top_tokens: list[str]
    top_probs: list[float]
    metrics: dict = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, int, int]:
        return (self.prompt_id, self.prompt_variant, self.layer, self.pos)


@dataclass
class LegacyModel:
    files: LegacyFiles
    doc: dict
    records: list[LensRow]
    pure: list[LensRow]

    @property
    def model(self) -> str:
        return self.doc["diagnostics"]["model"]


def find_legacy_files(folder: Path) -> list[LegacyFiles]:
    if not folder.is_dir():
        raise LegacyFormatError(f"{folder}: no such folder")
    found: dict[str, dict[str, Path]] = {}
    for path in sorted(folder.iterdir()):
        named = fmt.legacy_file(path.name)
        if named is not None and path.is_file():
            stem, kind = named
            found.setdefault(stem, {})[kind] = path
    if not found:
        raise LegacyFormatError(
            f"{folder}: no legacy files ({fmt.json_name('<model>')}, {fmt.records_name('<model>')}, {fmt.pure_name('<model>')})"
        )
    return [_complete(folder, stem, paths) for stem, paths in found.items()]


def _complete(folder: Path, stem: str, paths: dict[str, Path]) -> LegacyFiles:
    names = {"json": fmt.json_name(stem), "records": fmt.records_name(stem), "pure": fmt.pure_name(stem)}
    missing = [name for kind, name in names.items() if kind not in paths]
    if missing:
        found = " and ".join(path.name for path in paths.values())
        raise LegacyFormatError(f"{folder}: {found} without {' and '.join(missing)}")
    return LegacyFiles(stem=stem, **paths)


def read_model(files: LegacyFiles) -> LegacyModel:
    doc = read_json(files.json)
    records = read_lens_csv(files.records, fmt.records_header, with_metrics=False)
    pure = read_lens_csv(files.pure, fmt.pure_header, with_metrics=True)
    for row in records:
        row.prompt_variant = row.prompt_variant or fmt.ORIG_VARIANT
        if (row.prompt_id, row.prompt_variant) != PRIMARY:
            raise LegacyFormatError(f"{files.records}: line {row.line}: expected only rows of prompt 'pos' variant 'orig'")
    if any(row.prompt_variant is None for row in pure):
        _assign_variants(files.pure, pure)
    return LegacyModel(files=files, doc=doc, records=records, pure=pure)


def read_json(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LegacyFormatError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from None
    except UnicodeDecodeError:
        raise LegacyFormatError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(doc, dict):
        raise LegacyFormatError(f"{path}: line 1: expected a JSON object")
    for block in fmt.REQUIRED_JSON_BLOCKS:
        if not isinstance(doc.get(block), dict):
            raise LegacyFormatError(f"{path}: no {block!r} block")
    for key in ("context_prompt", "ground_truth"):
        required_value(path, doc, "prompt", key)
    if not isinstance(required_value(path, doc, "diagnostics", "model"), str):
        raise LegacyFormatError(f"{path}: diagnostics.model is not a string")
    for key, _column in fmt.MODEL_STATS:
        required_value(path, doc, "model_stats", key)
    return doc


def required_value(path: Path, doc: dict, *keys: str):
    value = doc
    for depth, key in enumerate(keys):
        if not isinstance(value, dict) or key not in value:
            raise LegacyFormatError(f"{path}: missing key {'.'.join(keys[: depth + 1])}")
        value = value[key]
    return value


def read_lens_csv(path: Path, header_of, *, with_metrics: bool) -> list[LensRow]:
    try:
        with open(path, encoding="utf-8", newline="") as handle:
            reader = csv.reader(handle, escapechar=fmt.CSV_ESCAPE)
            header = _check_header(path, next(reader, None), header_of)
            rows, start = [], reader.line_num + 1
            for values in reader:
                rows.append(_lens_row(path, start, header, values, with_metrics))
                start = reader.line_num + 1
    except UnicodeDecodeError:
        raise LegacyFormatError(f"{path}: not UTF-8 text") from None
    except OSError as exc:
        raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except csv.Error as exc:
        raise LegacyFormatError(f"{path}: line {reader.line_num}: {exc}") from None
    if not rows:
        raise LegacyFormatError(f"{path}: no rows")
    return rows


def _check_header(path: Path, header: list[str] | None, header_of) -> tuple[str, ...]:
    for with_variant in (True, False):
        if header is not None and tuple(header) == header_of(with_variant):
            return header_of(with_variant)
    expected = header_of(True)
    got = header or []
    column = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), min(len(got), len(expected)))
    shown = repr(got[column]) if column < len(got) else "missing"
    wanted = repr(expected[column]) if column < len(expected) else "nothing"
    raise LegacyFormatError(f"{path}: line 1: not a legacy header: column {column + 1} is {shown}, expected {wanted}")


class _Cells:
    """The fields of one CSV row by column name, parsed with errors naming file, line and column."""

    def __init__(self, path: Path, line: int, header: tuple[str, ...], values: list[str]):
        if len(values) != len(header):
            raise LegacyFormatError(f"{path}: line {line}: {len(values)} fields, expected {len(header)}")
        self.where = f"{path}: line {line}"
        self.cells = dict(zip(header, values))

    def text(self, column: str) -> str | None:
        return self.cells.get(column)

    def number(self, column: str, kind=float):
        text = self.cells[column]
        if text == "":
            return None
        try:
            return kind(text)
        except ValueError:
            raise LegacyFormatError(f"{self.where}: {column}: not a number: {text!r}") from None

    def required(self, column: str, kind=int):
        value = self.number(column, kind)
        if value is None:
            raise LegacyFormatError(f"{self.where}: {column} is empty")
        return value

    def flag(self, column: str) -> bool | None:
        text = self.cells[column]
        if text not in ("True", "False", ""):
            raise LegacyFormatError(f"{self.where}: {column}: expected True or False, got {text!r}")
        return None if text == "" else text == "True"


def _lens_row(path: Path, line: int, header: tuple[str, ...], values: list[str], with_metrics: bool) -> LensRow:
    cells = _Cells(path, line, header, values)
    tokens, probs = _top_tokens(cells)
    row = LensRow(
        line=line,
        prompt_id=cells.text("prompt_id"),
        prompt_variant=cells.text("prompt_variant"),
        layer=cells.required("layer"),
        pos=cells.required("pos"),
        token=cells.text("token"),
        entropy=cells.number("entropy"),
        top_tokens=tokens,
        top_probs=probs,
    )
    cells.number("rest_mass")  # derived (v1.rest_mass); checked only
    if with_metrics:
        row.metrics = {name: cells.number(name, kind) for name, kind in _PURE_NUMBERS.items()}
        row.metrics |= {name: cells.flag(name) for name in _PURE_FLAGS}
    return row


def _top_tokens(cells: _Cells) -> tuple[list[str], list[float]]:
    """The listed top tokens: a prefix of the 20 column pairs, the rest empty."""
    probs = [cells.number(f"prob{i}") for i in range(1, fmt.WIDE_TOP_K + 1)]
    listed = next((i for i, p in enumerate(probs) if p is None), len(probs))
    if any(p is not None for p in probs[listed:]):
        raise LegacyFormatError(f"{cells.where}: prob{listed + 1} is empty but a later prob is not")
    return [cells.text(f"top{i}") for i in range(1, listed + 1)], probs[:listed]


def _assign_variants(path: Path, rows: list[LensRow]) -> None:
    """Without a prompt_variant column: each prompt id's blocks (layer restarting) in VARIANTS_BY_BLOCK order."""
    blocks: dict[str, int] = {}
    previous = None
    for row in rows:
        if previous is None or row.prompt_id != previous.prompt_id or row.layer <= previous.layer:
            blocks[row.prompt_id] = blocks.get(row.prompt_id, -1) + 1
        variants = VARIANTS_BY_BLOCK.get(row.prompt_id, ())
        if blocks[row.prompt_id] >= len(variants):
            raise LegacyFormatError(f"{path}: line {row.line}: unexpected rows of prompt {row.prompt_id!r} (no prompt_variant column)")
        row.prompt_variant = variants[blocks[row.prompt_id]]
        previous = row


def files_sha256(files: LegacyFiles) -> str:
    """One hash of the three files' bytes (JSON, records CSV, pure CSV, in that order)."""
    digest = hashlib.sha256()
    for path in (files.json, files.records, files.pure):
        try:
            digest.update(hashlib.sha256(path.read_bytes()).digest())
        except OSError as exc:
            raise LegacyFormatError(f"{path}: cannot read ({exc.strerror or exc})") from None
    return digest.hexdigest()

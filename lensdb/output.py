"""Query results to the terminal or a file: table, csv, json (array of row objects), parquet;
and a run's details (`lensdb show`) as text or json.

Every output format is one `Renderer` in RENDERERS (the end of this file); a command's
--format choices are the formats of its kind of result (lensdb.cli_options.format_option),
so a new renderer is offered by every command that prints that kind.

Tables fit the terminal: no cell ever wraps. Numbers, dates, flags and run ids are shown
whole; text and list cells are cut with '…' when space is short; columns that still do not
fit are left out and named under the table.

Output files are written whole or not at all (a temporary file beside them, renamed into
place), and their folders are checked before any work: a missing folder, or a file where
a folder should be, is one line.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
import sys
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa

from lensdb.errors import LensdbError
from lensdb.files import replace_whole, temporary_beside

TABLE_ROWS = 100
DEFAULT_WIDTH = 120  # when stdout is not a terminal and $COLUMNS is unset
TEXT_MAX = 40  # widest a text or list column gets
TEXT_MIN = 20  # narrowest a text or list column is squeezed to before columns are left out
UNLIMITED = 10_000


def write_result(table: pa.Table, output_format: str, out: str | None, *, types: bool = True) -> None:
    """`table` in `output_format` to the file `out`, else to stdout. `types`: tables show each
    column's type under its name."""
    renderer = renderer_for(output_format, TABLE)
    if renderer.file is not None:
        write_whole(out, lambda temporary: renderer.file(table, temporary))
        return
    text = renderer.table(table, width=UNLIMITED if out else terminal_width(), types=types)
    if out:
        write_whole(out, lambda temporary: Path(temporary).write_bytes(text.encode("utf-8")))
    else:
        sys.stdout.write(text)


def write_whole(out: str | os.PathLike, write) -> None:
    """`write(temporary)` beside `out`, then one rename: `out` appears complete or not at all."""
    try:
        replace_whole(Path(out), write)
    except OSError as exc:
        raise LensdbError(f"cannot write {out}: {exc.strerror or exc}") from None


def write_files_whole(files: dict[Path, bytes]) -> None:
    """Every file written to a temporary file beside it, then renamed into place: a failure
    to write any of them (a full disk, a file-size limit) is one line naming that file, and
    leaves none of them changed and no temporary file."""
    temporaries: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            temporaries[path] = temporary_beside(path)
            try:
                temporaries[path].write_bytes(data)
            except OSError as exc:
                raise LensdbError(f"cannot write {path}: {exc.strerror or exc}") from None
        for path, temporary in temporaries.items():
            try:
                os.replace(temporary, path)
            except OSError as exc:
                raise LensdbError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        for temporary in temporaries.values():
            temporary.unlink(missing_ok=True)


def check_output_file(out: str | os.PathLike, option: str) -> None:
    """A file to be written: not a folder, in an existing folder."""
    path = Path(out)
    if path.is_dir():
        raise LensdbError(f"{option} {out} is a folder, not a file")
    _check_folder(path.parent if str(path.parent) else Path("."), option, out)


def check_output_folder(out: str | os.PathLike, option: str) -> None:
    """A folder to write into: an existing folder, or a new one in an existing folder."""
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise LensdbError(f"{option} {out} is a file, not a folder")
    if not path.exists():
        _check_folder(path.parent, option, out)


def _check_folder(folder: Path, option: str, out) -> None:
    if folder.is_dir():
        return
    blocking = next((p for p in (folder, *folder.parents) if p.exists()), None)
    if blocking is not None and not blocking.is_dir():
        raise LensdbError(f"{option} {out}: {blocking} is a file, not a folder")
    raise LensdbError(f"{option} {out}: the folder {folder} does not exist")


def terminal_width() -> int:
    return shutil.get_terminal_size((DEFAULT_WIDTH, 24)).columns


# ---------------------------------------------------------------- tables


@dataclass
class _Column:
    name: str
    kind: str  # short type name shown under the name
    cells: list[str]
    whole: bool  # never cut: numbers, flags, dates, run ids
    numeric: bool
    natural: int  # width that shows everything
    width: int = 0

    @property
    def least(self) -> int:
        return self.natural if self.whole else min(self.natural, TEXT_MIN)

    @property
    def most(self) -> int:
        return self.natural if self.whole else min(self.natural, TEXT_MAX)


def render_table(table: pa.Table, width: int | None = None, max_rows: int = TABLE_ROWS, *, types: bool = True) -> str:
    """`table` as a box table at most `width` characters wide (the terminal's by default)."""
    from rich import box
    from rich.cells import cell_len
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    width = width or terminal_width()
    shown = table.slice(0, max_rows)
    columns = []
    for field, column in zip(shown.schema, shown.columns):
        cells = [_cell(value, field.type) for value in column.to_pylist()]
        kind = _short_type(field.type)
        numeric = pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_decimal(field.type)
        whole = numeric or not (_is_nested(field.type) or pa.types.is_string(field.type) or pa.types.is_large_string(field.type)) or field.name.endswith("run_id")
        natural = max([cell_len(field.name), cell_len(kind) if types else 0] + [cell_len(c) for c in cells])
        columns.append(_Column(field.name, kind, cells, whole, numeric, natural))
    kept = _fit(columns, width)

    grid = Table(box=box.SQUARE, show_edge=True, pad_edge=True, highlight=False)
    for col in kept:
        grid.add_column(Text(f"{col.name}\n{col.kind}" if types else col.name), width=col.width, no_wrap=True, overflow="ellipsis", justify="right" if col.numeric else "left")
    for row in range(shown.num_rows):
        grid.add_row(*(Text(col.cells[row]) for col in kept))
    buffer = io.StringIO()
    console = Console(file=buffer, width=max(width, _table_width(kept)), color_system=None, force_terminal=False, legacy_windows=False, emoji=False, markup=False, highlight=False)
    console.print(grid, crop=False)

    lines = [buffer.getvalue().rstrip("\n")]
    count = f"{table.num_rows:,} row{'s' if table.num_rows != 1 else ''}"
    if table.num_rows > max_rows:
        count += f"; the first {max_rows} shown (use --format csv or --out for all)"
    lines += textwrap.wrap(count, width, break_long_words=False)
    left_out = [col.name for col in columns if col not in kept]
    if left_out:
        note = f"{len(left_out)} more column{'s' if len(left_out) != 1 else ''} (too wide for {width} characters): {', '.join(left_out)}"
        lines += textwrap.wrap(note, width, break_long_words=False, break_on_hyphens=False)
    return "\n".join(lines) + "\n"


def _fit(columns: list[_Column], width: int) -> list[_Column]:
    """The leading columns whose narrowest widths fit; spare room widens the text columns."""
    kept: list[_Column] = []
    for col in columns:
        col.width = col.least
        if kept and _table_width(kept + [col]) > width:
            break
        kept.append(col)
    spare = width - _table_width(kept)
    for col in kept:
        grow = min(spare, col.most - col.width)
        if grow > 0:
            col.width += grow
            spare -= grow
    return kept


def _table_width(columns: list[_Column]) -> int:
    return sum(col.width + 3 for col in columns) + 1  # a space either side and a border per column, one closing border


def _cell(value, kind: pa.DataType) -> str:
    if value is None:
        return "null"
    if _is_nested(kind):
        return _nested(value, kind)
    if pa.types.is_floating(kind):
        return _float(value, kind)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str):
        return _visible(value)
    return str(value)


def _float(value: float, kind: pa.DataType) -> str:
    if pa.types.is_float32(kind) or pa.types.is_float16(kind):
        import numpy as np

        return str(np.float32(value))  # the shortest text that reads back as the same float32
    return repr(float(value))


def _nested(value, kind: pa.DataType) -> str:
    if value is None:
        return "null"
    if pa.types.is_struct(kind):
        return "{" + ", ".join(f"{f.name}: {_nested(value.get(f.name), f.type)}" for f in kind) + "}"
    if pa.types.is_map(kind):
        return "{" + ", ".join(f"{_nested(k, kind.key_type)}: {_nested(v, kind.item_type)}" for k, v in value) + "}"
    if _is_nested(kind):
        return "[" + ", ".join(_nested(v, kind.value_type) for v in value) + "]"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # quoted, so ' Berlin' and '\n' show
    return _cell(value, kind)


def _visible(text: str) -> str:
    """Control and other invisible characters escaped, so a cell stays on one line."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_SHORT_TYPES = {
    pa.string(): "str",
    pa.large_string(): "str",
    pa.int8(): "i8",
    pa.int16(): "i16",
    pa.int32(): "i32",
    pa.int64(): "i64",
    pa.uint8(): "u8",
    pa.uint16(): "u16",
    pa.uint32(): "u32",
    pa.uint64(): "u64",
    pa.float16(): "f16",
    pa.float32(): "f32",
    pa.float64(): "f64",
    pa.bool_(): "bool",
    pa.date32(): "date",
}


def _short_type(kind: pa.DataType) -> str:
    if kind in _SHORT_TYPES:
        return _SHORT_TYPES[kind]
    if pa.types.is_timestamp(kind):
        return "datetime"
    if pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind):
        return f"list[{_short_type(kind.value_type)}]"
    if pa.types.is_struct(kind):
        return "struct"
    return str(kind)


# ---------------------------------------------------------------- csv, json


def _as_csv(table: pa.Table) -> str:
    import pyarrow.csv as pacsv

    flat = pa.table(
        {
            name: _nested_as_json(column) if _is_nested(column.type) else column
            for name, column in zip(table.column_names, table.columns)
        }
    )
    buffer = io.BytesIO()
    pacsv.write_csv(flat, buffer)
    return buffer.getvalue().decode("utf-8")


def _as_json(table: pa.Table) -> str:
    return json.dumps(_finite(table.to_pylist()), ensure_ascii=False, default=str) + "\n"


def _is_nested(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind) or pa.types.is_struct(kind) or pa.types.is_map(kind)


def _nested_as_json(column: pa.ChunkedArray) -> pa.Array:
    return pa.array([None if v is None else json.dumps(_finite(v), ensure_ascii=False, default=str) for v in column.to_pylist()], pa.string())


def _finite(value):
    """NaN and infinities are not JSON: they become null."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def _write_parquet(table: pa.Table, path: Path) -> None:
    import pyarrow.parquet as pq

    pq.write_table(table, path, compression="zstd")


# ---------------------------------------------------------------- the renderers

TABLE, DOCUMENT = "table", "document"  # the kinds of result: rows (pa.Table), one run's details


@dataclass(frozen=True)
class Document:
    """A result that is one object, not rows (`lensdb show`): its text and its JSON-able data,
    each made only when asked for."""

    text: Callable[[], str]
    data: Callable[[], object]


@dataclass(frozen=True)
class Renderer:
    """One output format and what it renders. `table(table, width=, types=)`: rows as text;
    `file(table, path)`: rows written to a file (binary: only with --out); `document(doc)`: a
    Document as text."""

    name: str
    table: Callable[..., str] | None = None
    file: Callable[[pa.Table, Path], None] | None = None
    document: Callable[[Document], str] | None = None

    def renders(self, kind: str) -> bool:
        return (self.document if kind == DOCUMENT else self.table or self.file) is not None

    @property
    def needs_file(self) -> bool:
        return self.file is not None


RENDERERS: dict[str, Renderer] = {
    renderer.name: renderer
    for renderer in (
        Renderer("table", table=lambda table, *, width, types: render_table(table, width=width, types=types)),
        Renderer("text", document=lambda doc: doc.text()),
        Renderer("csv", table=lambda table, **_layout: _as_csv(table)),
        Renderer(
            "json",
            table=lambda table, **_layout: _as_json(table),
            document=lambda doc: json.dumps(doc.data(), default=str, ensure_ascii=False) + "\n",
        ),
        Renderer("parquet", file=_write_parquet),
    )
}


def formats(kind: str, *, to_file: bool = True) -> list[str]:
    """The names of the formats that render `kind` (TABLE or DOCUMENT), in RENDERERS' order;
    to_file=False: only those that print (for a command without --out)."""
    return [name for name, renderer in RENDERERS.items() if renderer.renders(kind) and (to_file or not renderer.needs_file)]


def renderer_for(name: str, kind: str) -> Renderer:
    renderer = RENDERERS.get(name)
    if renderer is None or not renderer.renders(kind):
        raise LensdbError(f"unknown output format {name!r}; choose one of {', '.join(formats(kind))}")
    return renderer


def render_document(doc: Document, output_format: str) -> str:
    """`doc` as text in `output_format` (text, json)."""
    return renderer_for(output_format, DOCUMENT).document(doc)

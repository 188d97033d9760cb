"""Query results to the terminal or a file: table, csv, json (array of row objects), parquet.

Output files are written whole or not at all (a temporary file beside them, renamed into
place), and their folders are checked before any work: a missing folder, or a file where
a folder should be, is one line.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import sys
from pathlib import Path

import pyarrow as pa

from lensdb.errors import LensdbError

TABLE_ROWS = 100


def write_result(table: pa.Table, output_format: str, out: str | None) -> None:
    if output_format == "parquet":
        import pyarrow.parquet as pq

        _write_whole(out, lambda temporary: pq.write_table(table, temporary, compression="zstd"))
        return
    text = {"table": _as_table, "csv": _as_csv, "json": _as_json}[output_format](table)
    if out:
        _write_whole(out, lambda temporary: Path(temporary).write_bytes(text.encode("utf-8")))
    else:
        sys.stdout.write(text)


def _write_whole(out: str | os.PathLike, write) -> None:
    path = Path(out)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    except OSError as exc:
        raise LensdbError(f"cannot write {out}: {exc.strerror or exc}") from None
    finally:
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


def read_text_file(path: str | os.PathLike, option: str) -> str:
    """A UTF-8 text file (a BOM is dropped); errors name the file and, for bad bytes, the line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LensdbError(f"{option} {path}: cannot read ({exc.strerror or exc})") from None
    try:
        return data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise LensdbError(f"{option} {path}: line {line}: not UTF-8 text (byte 0x{data[exc.start]:02x})") from None


def _as_table(table: pa.Table) -> str:
    import polars as pl

    frame = pl.from_arrow(table) if table.num_columns else pl.DataFrame()
    with pl.Config(tbl_rows=TABLE_ROWS, tbl_cols=-1, fmt_str_lengths=48, fmt_table_cell_list_len=5, tbl_width_chars=160):
        text = str(frame)
    if table.num_rows > TABLE_ROWS:
        text += f"\n{table.num_rows:,} rows; the first {TABLE_ROWS} shown (use --format csv or --out for all)"
    return text + "\n"


def _as_csv(table: pa.Table) -> str:
    import io

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

"""Query results to the terminal or a file: table, csv, json (array of row objects), parquet."""

from __future__ import annotations

import json
import math
import sys

import pyarrow as pa

TABLE_ROWS = 100


def write_result(table: pa.Table, output_format: str, out: str | None) -> None:
    if output_format == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, out, compression="zstd")
        return
    text = {"table": _as_table, "csv": _as_csv, "json": _as_json}[output_format](table)
    if out:
        with open(out, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
    else:
        sys.stdout.write(text)


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

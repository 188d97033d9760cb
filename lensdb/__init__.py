"""lensdb: logit-lens records of causal language models in a Parquet warehouse,
analysed with versioned DuckDB SQL views.

Importing lensdb is cheap: torch and the model libraries load only when an
extraction runs (`from lensdb.extract import extract`).
"""

__version__ = "0.1.0"

__all__ = ["__version__", "connect", "query"]


def connect(warehouse=None, *, read_only=True):
    """A DuckDB connection to `warehouse` with the `v1` views installed.

    By default it holds no lock on the catalog file (read_only=False opens that file for
    writing your own tables).
    """
    from lensdb.catalog import connect as _connect

    return _connect(warehouse, read_only=read_only)


def query(sql, warehouse=None, *, format="arrow", latest=False, allow_files=False):
    """Run `sql` against the warehouse views: an Arrow table, or a DataFrame with format="polars"
    or format="pandas" (pandas must be installed). latest=True: every view shows only the latest
    committed run of each model and prompt set (v1.latest_runs).

    The SQL may only read (SELECT, DESCRIBE, SHOW, ...) and reach only the warehouse's
    files, unless allow_files=True.
    """
    from lensdb.catalog import query as _query

    return _query(sql, warehouse, format=format, latest=latest, allow_files=allow_files)

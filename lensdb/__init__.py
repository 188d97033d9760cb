"""lensdb: logit-lens records of causal language models in a Parquet warehouse,
analysed with versioned DuckDB SQL views.

Importing lensdb is cheap: torch and the model libraries load only when
`lensdb.extract` runs.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "connect", "query", "extract"]


def connect(warehouse=None, *, read_only=False):
    """A DuckDB connection to `warehouse` with the `v1` views installed."""
    from lensdb.catalog import connect as _connect

    return _connect(warehouse, read_only=read_only)


def query(sql, warehouse=None, *, format="arrow"):
    """Run `sql` against the warehouse views; an Arrow table (or polars frame with format="polars")."""
    from lensdb.catalog import query as _query

    return _query(sql, warehouse, format=format)


def extract(model, **options):
    """Run a prompt set through `model` and commit one run to the warehouse (see `lensdb extract --help`)."""
    from lensdb.extract.engine import extract as _extract

    return _extract(model, **options)

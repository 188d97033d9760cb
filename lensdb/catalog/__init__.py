"""The DuckDB catalog: the versioned SQL views over a warehouse's Parquet files.

`<warehouse>/lensdb.duckdb` holds schemas `v1_base` (internal) and `v1` (the public
views), installed from `sql/v1/*.sql`. It is a cache of those files: the catalog records
each file's version and SQL hash in `lensdb_meta.views` and a fingerprint (SQL hashes,
the warehouse's location, the damaged runs it leaves out) in `lensdb_meta.fingerprint`.
Views read the Parquet files at query time, so new runs appear without reinstalling
anything; `extract` never opens the catalog.

One module per job:

    sqlfiles.py  the SQL files: headers, definitions, `-- columns:` blocks; named queries
    describe.py  `lensdb query --describe`
    views.py     installing the views (rendering the SQL, the fingerprint, session variables)
    cache.py     the catalog file: attach read-only, rebuild and rename, the views' root
    session.py   a session: damaged runs left out and recorded, DuckDB errors as one line
    sandbox.py   the read-only sandbox of `lensdb query`
    api.py       connect, query, open_session (the names below are the public ones)
"""

from lensdb.catalog.api import FORMATS, committed_run_count, connect, existing_warehouse, open_session, query, run_sql
from lensdb.catalog.cache import catalog_path, new_connection
from lensdb.catalog.describe import Column, Description, describe
from lensdb.catalog.sandbox import check_read_only_sql
from lensdb.catalog.session import Session, damaged_message, warn_damaged
from lensdb.catalog.sqlfiles import Definition, NamedQuery, SqlFile, definitions, named_queries, named_query, sql_dir, sql_files
from lensdb.catalog.views import LATEST_ONLY_VARIABLE, META_SCHEMA, Root, install, latest_only, render

__all__ = [
    "FORMATS", "LATEST_ONLY_VARIABLE", "META_SCHEMA", "Column", "Definition", "Description", "NamedQuery", "Root", "Session",
    "SqlFile", "catalog_path", "check_read_only_sql", "committed_run_count", "connect", "damaged_message", "definitions",
    "describe", "existing_warehouse", "install", "latest_only", "named_queries", "named_query", "new_connection",
    "open_session", "query", "render", "run_sql", "sql_dir", "sql_files", "warn_damaged",
]

"""DuckDB reading an object-store warehouse through its fsspec filesystem (and never through
an extension it would load by itself for s3:// paths, which reads credentials its own way)."""

from __future__ import annotations

import inspect
import re
import time

# DuckDB globs once per table scan; the scans of one statement (within this many seconds)
# share one listing, so a query sees one snapshot of the warehouse and lists it once.
LISTING_SECONDS = 1.0


def register(con, fs) -> None:
    """Let DuckDB read URLs through `fs` (with a glob that lists once, `globbing_filesystem`)."""
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.register_filesystem(globbing_filesystem(fs))


def globbing_filesystem(fs):
    """`fs` with a glob that lists the fixed prefix once (one paginated request) and matches
    the pattern locally: fsspec's own glob walks the tree one folder level at a time. The
    listing's size and time of each file it returned answer `info` (and so `open`, `size` and
    `modified`, which DuckDB calls for every file it reads): without them each file costs
    three HEAD requests more per query."""
    cls = type(fs)
    if getattr(cls, "_lensdb_glob", False):
        return fs

    def glob(self, path, maxdepth=None, **kwargs):
        from fsspec.utils import glob_translate

        pattern = self._strip_protocol(path)
        if not any(char in pattern for char in "*?["):
            return [pattern] if self.exists(pattern) else []
        fixed = re.split(r"[*?\[]", pattern, maxsplit=1)[0].rsplit("/", 1)[0]
        matcher = re.compile(glob_translate(pattern))
        listed_at, found = self._lensdb_lists.get(fixed, (0.0, None))
        if found is None or time.monotonic() - listed_at > LISTING_SECONDS:
            try:
                found = self.find(fixed, detail=True)
            except FileNotFoundError:
                found = {}
            self._lensdb_lists[fixed] = (time.monotonic(), found)
        matched = {name: info for name, info in found.items() if matcher.match(name)}
        self._lensdb_listed.update(matched)  # as fresh as the glob of the query that reads them
        return sorted(matched)

    def listed(self, path, options) -> dict | None:
        found = None if options.get("version_id") or options.get("refresh") else self._lensdb_listed.get(self._strip_protocol(path))
        return dict(found) if found is not None else None

    async def _info(self, path, **options):
        return listed(self, path, options) or await cls._info(self, path, **options)

    def info(self, path, **options):
        return listed(self, path, options) or cls.info(self, path, **options)

    members = {"glob": glob, "_lensdb_glob": True}
    # Async filesystems (s3fs, gcsfs) derive their `info` from `_info`.
    members.update({"_info": _info} if inspect.iscoroutinefunction(getattr(cls, "_info", None)) else {"info": info})
    wrapped = type(f"Lensdb{cls.__name__}", (cls,), members)
    instance = wrapped(**fs.storage_options, skip_instance_cache=True)
    instance._lensdb_listed = {}
    instance._lensdb_lists = {}  # prefix -> (when, listing): the scans of one statement share one listing
    return instance

"""The shipped SQL files: `sql/<version>/*.sql` (the views, each file headed by `-- view:`,
`-- version:`, `-- what:` lines, each definition's columns documented in a `-- columns:`
block above it) and the named queries (`lensdb/queries/*.sql`, `lensdb query --name`)."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from lensdb.errors import QueryError
from lensdb.resources import named_queries_dir, sql_dir

VIEW_VERSIONS = ("v1",)
_HEADER_FIELD = re.compile(r"^(--\s*(view|version|what|inputs):\s*)(.*)$")
_CREATE = re.compile(r"^CREATE\s+OR\s+REPLACE\s+(VIEW|MACRO)\s+([\w.]+)\s*(\([^)]*\))?(.*)$", re.IGNORECASE)
_COLUMNS_START = re.compile(r"^--\s*columns:\s*(\S*)\s*$")
_COLUMN_LINE = re.compile(r"^--(\s+)(\w+)\s{2,}(\S.*)$")


@dataclass(frozen=True)
class Definition:
    """One CREATE statement of a SQL file, with the `-- columns:` block just above it."""

    name: str
    kind: str  # "view", "table macro" or "macro" (a scalar helper)
    parameters: str  # "(threshold := 0.95, ...)" for macros, "" for views
    columns: dict[str, str]  # column -> one-line meaning
    columns_as: str | None  # `-- columns: v1.other`: the same columns as another definition

    @property
    def public(self) -> bool:
        return self.name.startswith("v1.")

    @property
    def signature(self) -> str:
        return self.name + self.parameters


@dataclass(frozen=True)
class SqlFile:
    path: Path
    text: str
    version: str
    what: str
    definitions: tuple[Definition, ...]
    what_lines: tuple[str, ...] = ()  # the header's `what:` as written (line breaks, indentation)

    @property
    def defines(self) -> tuple[str, ...]:
        return tuple(d.name for d in self.definitions)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


def sql_files(version: str = "v1") -> list[SqlFile]:
    files = []
    for path in sorted((sql_dir() / version).glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        header = _header_lines(text)
        files.append(
            SqlFile(
                path=path,
                text=text,
                version=" ".join(header.get("version", ["?"])),
                what=" ".join(line.strip() for line in header.get("what", [])),
                definitions=tuple(_definitions(text)),
                what_lines=tuple(header.get("what", [])),
            )
        )
    return files


def _header(text: str) -> dict[str, str]:
    """The `-- key: value` lines at the top of a SQL file (continuation lines appended)."""
    return {key: " ".join(line.strip() for line in lines) for key, lines in _header_lines(text).items()}


def _header_lines(text: str) -> dict[str, list[str]]:
    """The `-- key: value` lines at the top of a SQL file, each value's lines as written
    (continuation lines keep their indentation relative to the value's first line)."""
    fields: dict[str, list[str]] = {}
    last, indent = None, 0
    for line in text.splitlines():
        if not line.startswith("--"):
            break
        match = _HEADER_FIELD.match(line)
        if match:
            last, indent = match.group(2), len(match.group(1))
            fields[last] = [match.group(3).rstrip()]
        elif last:
            lead = line[2:indent]
            fields[last].append(line[indent:].rstrip() if not lead.strip() else line[2:].strip())
    return fields


def _definitions(text: str) -> list[Definition]:
    definitions = []
    lines = text.splitlines()
    for number, line in enumerate(lines):
        match = _CREATE.match(line)
        if not match:
            continue
        kind = "view" if match.group(1).upper() == "VIEW" else ("table macro" if re.search(r"\bAS\s+TABLE\b", match.group(4), re.IGNORECASE) else "macro")
        comment = []
        for above in reversed(lines[:number]):
            if not above.startswith("--"):
                break
            comment.insert(0, above)
        columns, columns_as = _column_docs(comment)
        definitions.append(Definition(match.group(2), kind, match.group(3) or "", columns, columns_as))
    return definitions


def _column_docs(comment: list[str]) -> tuple[dict[str, str], str | None]:
    """`-- columns:` then `--   name   meaning` lines (deeper-indented lines continue a meaning)."""
    start = next((i for i, line in enumerate(comment) if _COLUMNS_START.match(line)), None)
    if start is None:
        return {}, None
    same_as = _COLUMNS_START.match(comment[start]).group(1) or None
    columns: dict[str, str] = {}
    indent, last = None, None
    for line in comment[start + 1 :]:
        match = _COLUMN_LINE.match(line)
        if match and (indent is None or len(match.group(1)) == indent):
            indent, last = len(match.group(1)), match.group(2)
            columns[last] = match.group(3).strip()
        elif last and line[2:].strip():
            columns[last] += " " + line[2:].strip()
    return columns, same_as


def sql_hashes() -> dict[str, str]:
    """Each shipped view file (relative to sql/) -> the sha256 of its text."""
    return {str(f.path.relative_to(sql_dir())): f.sha256 for v in VIEW_VERSIONS for f in sql_files(v)}


def definitions(version: str = "v1") -> dict[str, tuple[Definition, SqlFile]]:
    return {d.name: (d, f) for f in sql_files(version) for d in f.definitions}


@dataclass(frozen=True)
class NamedQuery:
    name: str
    description: str
    sql: str


def named_queries(folder: Path | None = None) -> dict[str, NamedQuery]:
    """The named queries of `lensdb query --name` (lensdb/queries/*.sql), or those of a
    subfolder that lensdb runs itself (lensdb/queries/show/: `lensdb show`, `$run` the run id)."""
    queries = {}
    for path in sorted((folder or named_queries_dir()).glob("*.sql")):
        text = path.read_text(encoding="utf-8")
        queries[path.stem] = NamedQuery(path.stem, _header(text).get("what", ""), text)
    return queries


def named_query(name: str) -> NamedQuery:
    queries = named_queries()
    if name not in queries:
        raise QueryError(f"unknown named query {name!r}; known: {', '.join(queries)}")
    return queries[name]

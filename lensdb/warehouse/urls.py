"""Warehouse URLs: which text is one, what of it may be printed, what it names, and the
fsspec filesystem of its scheme (as Hugging Face datasets' `url_to_fs`, but refusing URLs
that hold credentials: lensdb takes them only from the store's own configuration)."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlsplit

from lensdb.errors import MissingDependency, WarehouseError, folded
from lensdb.warehouse import paths

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
# Packages that give fsspec its object stores, for the one-line hint when one is missing.
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs", "abfss": "adlfs"}


def is_url(text: str) -> bool:
    return bool(_URL.match(text))


def redact_url(text: str) -> str:
    """A URL as it may be printed: without what can hold a secret (the user info
    `key:secret@`, the query, the fragment). Text that is not a URL is returned as it is.

    A secret may hold '/', '?', '#', ':' or '@' unescaped, so the parts are found from the
    outside: everything up to the last '@' is user info, everything from the first '?' or '#'
    query; where those overlap, or the host part holds a ':' that starts no port, only the
    scheme is kept."""
    match = _URL.match(text)
    if not match:
        return text
    scheme, rest = text[: match.end()], text[match.end() :]
    ends = [rest.find(char) for char in "?#" if char in rest]
    query_at = min(ends) if ends else None
    if "@" in rest:
        at = rest.rfind("@")
        if query_at is not None and at > query_at:
            return f"{scheme}…"
        rest = rest[at + 1 :]
        query_at = None if query_at is None else query_at - at - 1
    shown = rest if query_at is None else rest[:query_at]
    host, slash, path = shown.partition("/")
    if ":" in host and not host.rsplit(":", 1)[1].isdigit():
        host = "…"  # `key:secret` without an '@'
    return f"{scheme}{host}{slash}{path}" + ("" if query_at is None else "?…")


def _holds_credentials(parts) -> bool:
    """User info in the URL: `user@`, `user:password@`, or a `key:secret` host part (no port)."""
    if "@" in parts.netloc or parts.password is not None:
        return True
    return ":" in parts.netloc and not parts.netloc.rsplit(":", 1)[1].isdigit()


def parse_url(text: str) -> Path | tuple[str, str]:
    """What a warehouse URL names: a local folder for file://, else (scheme, bucket/prefix).
    Messages show the URL through redact_url only: a refused URL may hold a secret."""
    parts = urlsplit(text)
    scheme = parts.scheme.lower()
    shown = redact_url(text)
    if _holds_credentials(parts):
        raise WarehouseError(
            f"the warehouse URL {shown} holds credentials: lensdb takes them only from the "
            "environment (AWS_* variables, profiles), so that they are never written or printed"
        )
    if parts.query or parts.fragment:
        raise WarehouseError(f"the warehouse URL {shown} has a query or fragment; configure the store through its environment variables")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise WarehouseError(f"the warehouse URL {shown} names another host: file:// URLs name local folders (file:///path)")
        return Path(unquote(parts.path))
    root = f"{parts.netloc}{parts.path}".rstrip("/")
    if not parts.netloc:
        raise WarehouseError(f"the warehouse URL {shown} names no bucket ({scheme}://BUCKET/PREFIX)")
    if "\\" in root or not paths.is_utf8(root):
        raise WarehouseError(f"the warehouse URL {shown} holds a backslash or bytes that are not UTF-8")
    return scheme, root


def filesystem(scheme: str):
    """A fresh fsspec filesystem for `scheme` (no instance or listing cache: other processes commit runs)."""
    try:
        import fsspec
    except ImportError:
        raise MissingDependency("object-store warehouses need fsspec: pip install 'lensdb[s3]'") from None
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ImportError:
        package = _PACKAGES.get(scheme, "the fsspec package for it")
        raise MissingDependency(f"{scheme}:// warehouses need {package}: pip install {package}") from None
    except ValueError:
        raise WarehouseError(f"unknown warehouse URL scheme {scheme}:// (fsspec knows no such filesystem)") from None
    options = {"skip_instance_cache": True}
    if scheme in ("s3", "s3a", "gs", "gcs"):
        options["use_listings_cache"] = False  # other processes commit runs: always list afresh
    try:
        return cls(**options)
    except Exception as exc:  # noqa: BLE001 - a misconfigured store: one line
        raise WarehouseError(f"cannot open the {scheme}:// filesystem: {store_reason(exc)}") from None


def store_reason(exc: BaseException) -> str:
    """A store library's exception in one line, after its type (botocore's, aiohttp's, ...)."""
    text = folded(exc, 300)
    return f"{type(exc).__name__}: {text}" if str(exc).strip() else type(exc).__name__

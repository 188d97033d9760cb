"""File helpers written once: whole-file writes (a temporary file beside, then one rename),
fsync of files and folders, the `<pid>@<host>` owner tag that marks a process's temporary
files and folders (so that the next process on the host removes a dead one's), and this
user's private folders (the local cache, <temp>/lensdb-<uid>/)."""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path

from lensdb.errors import WarehouseError

CACHE_ENV = "LENSDB_CACHE_DIR"


# ---------------------------------------------------------------- whole-file writes


def temporary_beside(path: Path) -> Path:
    """A hidden name beside `path` that no other writer (process or thread) uses."""
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")


def replace_whole(path: Path, write: Callable[[Path], object], *, durable: bool = False) -> None:
    """`write(temporary)` beside `path`, then one rename: `path` appears complete or not at all
    (no temporary file is left). `durable`: the file's data reach the disk before the rename."""
    temporary = temporary_beside(path)
    try:
        write(temporary)
        if durable:
            fsync_file(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Write `data` to `path` whole (replace_whole)."""
    replace_whole(path, lambda temporary: temporary.write_bytes(data), durable=durable)


# ---------------------------------------------------------------- fsync


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """fsync a folder (a rename inside it) or a file; best effort: not every filesystem can."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_tree(root: Path) -> None:
    """fsync every file and folder below `root`, deepest first, then `root`."""
    for path in sorted(root.rglob("*"), reverse=True):
        if path.is_file():
            fsync_file(path)
        fsync_dir(path if path.is_dir() else path.parent)
    fsync_dir(root)


# ---------------------------------------------------------------- owners: <pid>@<host>


def owner_tag() -> str:
    """'<pid>@<host>': which process of which host a temporary file or folder belongs to."""
    return f"{os.getpid()}@{socket.gethostname()}"


def pid_alive(pid: int) -> bool:
    """The process runs. A zombie (killed, not yet reaped) does not: in containers whose init
    reaps slowly or never, a killed writer stays a zombie and its folders would never be removed."""
    import psutil  # not at import time: most commands never ask

    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True  # another user's process: it exists


def owner_alive_here(pid: str, host: str) -> bool:
    """The owner is a process of this host that still runs."""
    return host == socket.gethostname() and pid.isdigit() and pid_alive(int(pid))


def owner_dead_here(pid: str, host: str) -> bool:
    """The owner was a process of this host that no longer runs."""
    return host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))


def owner_of_folder(name: str) -> tuple[str, str] | None:
    """(pid, host) of a folder named `<name>@<pid>@<host>`; None for other names."""
    parts = name.split("@")
    return (parts[1], parts[2]) if len(parts) == 3 else None


def remove_stale_folders(root: Path) -> None:
    """Delete `<name>@<pid>@<host>` folders (staging, trash) of processes on this host that no longer exist."""
    for folder in root.iterdir():
        if not folder.is_dir():
            continue
        owner = owner_of_folder(folder.name)
        if owner is not None and owner_dead_here(*owner):
            shutil.rmtree(folder, ignore_errors=True)


# ---------------------------------------------------------------- this user's folders


def cache_dir() -> Path:
    """lensdb's local cache of this user's: $LENSDB_CACHE_DIR, else $XDG_CACHE_HOME/lensdb, else ~/.cache/lensdb."""
    return Path(os.environ.get(CACHE_ENV) or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lensdb"))


def private_base() -> Path:
    """<temp>/lensdb-<uid>/: a folder of this user's alone (make_private creates it)."""
    return Path(tempfile.gettempdir()) / f"lensdb-{_uid()}"


def make_private(base: Path, folder: Path) -> None:
    """mkdir `folder` (under `base`, the private base); `base` must be this user's, and only theirs."""
    folder.mkdir(parents=True, exist_ok=True)
    if base.stat().st_uid != _uid():
        raise WarehouseError(f"{base} belongs to another user; set TMPDIR to a folder of yours")
    base.chmod(0o700)


def _uid() -> int:
    return os.getuid() if hasattr(os, "getuid") else 0

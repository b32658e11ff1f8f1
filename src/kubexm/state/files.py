"""Files of kubexm's own memory that hold secrets or history: owner-only, whatever the umask.

Modes are set explicitly (``fchmod``/``chmod``), not left to ``open``'s mode argument, which the umask
narrows but never widens and which does nothing to a file that already exists with a wider mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import IO, Any

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` if needed and make it 0700. Parents it creates are 0700 too (``mkdir(parents=True)``
    would leave them to the umask: 0777 under ``umask 0``); parents that exist are left as they are."""
    missing = []
    probe = path
    while not probe.is_dir() and probe != probe.parent:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            if not directory.is_dir():
                raise
            continue
        directory.chmod(DIR_MODE)  # a umask such as 0o277 narrows even 0700
    if path.stat().st_mode & 0o777 != DIR_MODE:
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make sure ``path`` exists (empty if new) and is 0600, before anything writes to it."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    finally:
        os.close(fd)
    return path


def open_private(path: Path, mode: str = "ab") -> IO[Any]:
    """Open ``path`` to append to (a log) or to hold a lock on, created 0600, narrowed to 0600 if it was wider.
    ``mode`` is ``fdopen``'s: "ab" or "a"."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def tighten(path: Path) -> None:
    """0600 for ``path`` if it exists (SQLite's -wal and -shm files come and go)."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o777 != FILE_MODE:
            path.chmod(FILE_MODE)


def write_atomic(path: Path, data: bytes, *, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` (0600) so a reader sees the old or the new content, never a mix.
    ``durable=False`` skips the fsync, for files that are cheap to lose in a crash (caches, pinned host keys)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, FILE_MODE)
        fh.write(data)
        if durable:
            fh.flush()
            os.fsync(fd)
    os.replace(tmp, path)

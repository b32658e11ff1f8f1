"""Files of kubexm's own memory that hold secrets or history: owner-only, whatever the umask.

Modes are set explicitly (``fchmod``/``chmod``), not left to ``open``'s mode argument, which the umask
narrows but never widens and which does nothing to a file that already exists with a wider mode.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

FILE_MODE = 0o600
DIR_MODE = 0o700


def private_dir(path: Path) -> Path:
    """Create ``path`` (and missing parents) if needed; make it 0700."""
    path.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
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


def tighten(path: Path) -> None:
    """0600 for ``path`` if it exists (SQLite's -wal and -shm files come and go)."""
    with contextlib.suppress(FileNotFoundError):
        if path.stat().st_mode & 0o777 != FILE_MODE:
            path.chmod(FILE_MODE)


def write_atomic(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (0600) so a reader sees the old or the new content, never a mix."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, FILE_MODE)
        fh.write(data)
        fh.flush()
        os.fsync(fd)
    os.replace(tmp, path)

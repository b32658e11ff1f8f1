"""One mutating run per cluster at a time, across processes (flock: freed when the holder dies)."""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime

from kubexm import paths
from kubexm.errors import LockedError


@contextmanager
def cluster_lock(name: str, command: str) -> Iterator[None]:
    """Hold the lock of cluster ``name`` for the block, or raise LockedError naming the holder."""
    lock_dir = paths.locks_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    path = lock_dir / f"{name}.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(name, fd) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "command": command, "since": time.time()}).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _busy(name: str, fd: int) -> LockedError:
    try:
        holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        holder = {}
    since = datetime.fromtimestamp(holder.get("since", time.time()), UTC).strftime("%H:%M:%S UTC")
    return LockedError(
        f"cluster {name} is busy: pid {holder.get('pid', '?')} (`{holder.get('command', '?')}`) "
        f"has run since {since}",
        hint="wait for it to finish; the lock frees itself when that process exits",
    )

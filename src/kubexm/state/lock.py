"""One mutating run per cluster at a time, across processes (flock: freed when the holder dies).

The lock file also says who holds it (pid, command, run id); the content stays behind when the holder is
killed, which is how a reader tells a run still going on from one that died without finishing.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from kubexm import paths
from kubexm.errors import LockedError
from kubexm.state.files import private_dir
from kubexm.state.redact import redact_command_line


def _path(name: str) -> str:
    lock_dir = paths.locks_dir()
    private_dir(lock_dir)
    return str(lock_dir / f"{name}.lock")


@contextmanager
def cluster_lock(name: str, command: str, run_id: str | None = None) -> Iterator[None]:
    """Hold the lock of cluster ``name`` for the block, or raise LockedError naming the holder."""
    fd = os.open(_path(name), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)  # the file names commands: private like the run history, also if made wider
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise _busy(name, fd) from None
        os.ftruncate(fd, 0)
        holder = {"pid": os.getpid(), "command": redact_command_line(command), "since": time.time(), "run_id": run_id}
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        try:
            yield
        finally:
            os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder(name: str) -> dict[str, Any] | None:
    """Who holds cluster ``name``'s lock now (pid, command, since, run_id), or None: nobody, or the recorded
    holder is dead (killed runs leave their entry behind)."""
    try:
        with open(_path(name), "rb") as fh:
            data = json.loads(fh.read(4096) or b"{}")
    except (OSError, ValueError):
        return None
    pid = data.get("pid") if isinstance(data, dict) else None
    if not isinstance(pid, int) or not _alive(pid):
        return None
    return dict(data)


def run_in_progress(cluster: str, run_id: str) -> bool:
    """Is run ``run_id`` of ``cluster`` still going on (its process alive and holding the lock)?"""
    current = holder(cluster)
    return current is not None and current.get("run_id") == run_id


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

"""Everything under $KUBEXM_HOME that holds history or secrets is the owner's alone: files 0600, directories
0700, with a permissive umask and when the files already exist with wider modes."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.state.audit import AuditLog
from kubexm.state.lock import cluster_lock
from kubexm.state.store import Store

FILES = ("state.db", "state.db-wal", "state.db-shm", "audit.key", "audit.head", "audit.lock", "locks/prod.lock")
DIRS = (".", "locks")


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def _use_everything(run_id: str = "r1") -> Store:
    """Open the store, write history and audit, take a lock; returns the store still open (WAL files live)."""
    store = Store()
    store.start_run(run_id, "prod", "kubexm run command", "alice", False)
    log = AuditLog(store)
    log.append("alice", "kubexm run command", "prod", "ok")
    with cluster_lock("prod", "kubexm run command", run_id):
        pass
    return store


def _modes(home: Path) -> dict[str, str]:
    return {name: oct(stat.S_IMODE((home / name).stat().st_mode)) for name in (*FILES, *DIRS)}


def test_created_private_with_a_permissive_umask(kubexm_home: Path, open_umask: None) -> None:
    store = _use_everything()
    try:
        assert _modes(kubexm_home) == {**dict.fromkeys(FILES, "0o600"), **dict.fromkeys(DIRS, "0o700")}
    finally:
        store.close()


def test_existing_wider_modes_are_narrowed(kubexm_home: Path, open_umask: None) -> None:
    _use_everything().close()
    for name in FILES:
        path = kubexm_home / name
        if not path.exists():  # -wal/-shm go away with the last connection; recreate them wide open
            path.write_bytes(b"")
        path.chmod(0o644)
    for name in DIRS:
        (kubexm_home / name).chmod(0o755)
    store = _use_everything("r2")
    try:
        assert _modes(kubexm_home) == {**dict.fromkeys(FILES, "0o600"), **dict.fromkeys(DIRS, "0o700")}
    finally:
        store.close()

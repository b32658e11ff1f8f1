"""The connection keeper's files, the known-hosts lock and the parse cache are the owner's alone: files 0600,
directories 0700, made by the code that uses them, with a permissive umask and over wider modes left behind."""

from __future__ import annotations

import os
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm import paths
from kubexm.hosts import keeper
from kubexm.hosts.known_hosts import KnownHosts
from kubexm.spec.loader import parse_cluster
from kubexm.state.files import private_dir

CLUSTER_TEXT = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: modes}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n1]}
"""
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> str:
    return oct(stat.S_IMODE(path.stat().st_mode))


def start_keeper() -> Path:
    """Start a keeper through the real code path and wait until it has gone (it leaves after its short grace)."""
    sock = keeper.socket_path()
    keeper._started.pop(str(sock), None)
    proc = keeper.start(sock, persist=0.5, unused_grace=0.5)
    assert proc is not None
    try:
        assert proc.wait(timeout=60) == 0
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        keeper._started.pop(str(sock), None)
    return sock


def test_keeper_log_lock_and_run_dir_are_private(kubexm_home: Path, open_umask: None) -> None:
    sock = start_keeper()
    log, lock = sock.with_suffix(".log"), sock.with_suffix(".lock")
    assert (mode(kubexm_home), mode(sock.parent)) == ("0o700", "0o700")
    assert (mode(log), mode(lock)) == ("0o600", "0o600")
    # Left wide by an older kubexm (or by hand): narrowed by the next keeper, the content kept.
    log.write_bytes(b"an older keeper's line\n")
    for path in (log, lock):
        path.chmod(0o644)
    sock.parent.chmod(0o755)
    start_keeper()
    assert (mode(sock.parent), mode(log), mode(lock)) == ("0o700", "0o600", "0o600")
    assert log.read_bytes().startswith(b"an older keeper's line\n")


def test_known_hosts_and_its_lock_are_private(kubexm_home: Path, open_umask: None) -> None:
    store = KnownHosts(paths.known_hosts_file())
    store.remember("n1", "10.0.0.1", 22, KEY)
    known, lock = paths.known_hosts_file(), paths.known_hosts_file().with_suffix(".lock")
    assert (mode(known), mode(lock)) == ("0o600", "0o600")
    assert store.lookup("10.0.0.1", 22) is not None
    for path in (known, lock):
        path.chmod(0o644)
    assert store.forget("10.0.0.1", 22)
    assert (mode(known), mode(lock)) == ("0o600", "0o600")
    assert store.lookup("10.0.0.1", 22) is None
    assert not list(kubexm_home.glob("*.tmp")) and not list(kubexm_home.glob(".*.tmp"))


def test_parse_cache_is_private(kubexm_home: Path, open_umask: None) -> None:
    # Another cache (release files) may have made cache/ first, under the same open umask.
    (kubexm_home / "cache").mkdir(parents=True, mode=0o777)
    assert mode(kubexm_home / "cache") == "0o777"
    parse_cluster(CLUSTER_TEXT)
    spec_dir = kubexm_home / "cache" / "spec"
    entries = list(spec_dir.glob("*.json"))
    assert len(entries) == 1, "the parse was not kept: this test would not see the cache's modes"
    assert (mode(kubexm_home / "cache"), mode(spec_dir), mode(entries[0])) == ("0o700", "0o700", "0o600")
    assert parse_cluster(CLUSTER_TEXT).name == "modes"  # read back from the cache


def test_directories_made_on_the_way_are_private_too(kubexm_home: Path, open_umask: None,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # $KUBEXM_HOME itself missing with its parent: both made 0700, not 0777 as mkdir(parents=True) would.
    deep = kubexm_home.parent / "missing" / "home"
    monkeypatch.setenv("KUBEXM_HOME", str(deep))
    pki = paths.cluster_dir("c1")
    assert [mode(p) for p in (deep.parent, deep, deep / "clusters", pki)] == ["0o700"] * 4
    assert mode(paths.locks_dir()) == "0o700"
    # A parent that exists is not ours to change.
    shared = kubexm_home.parent / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    private_dir(shared / "mine")
    assert (mode(shared), mode(shared / "mine")) == ("0o755", "0o700")

"""A real CNCF distribution registry (Debian's docker-registry) on loopback: TLS from kubexm's PKI, htpasswd
users, the config kubexm renders for registry hosts (paths moved into a temporary directory)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.lab import registry as lab_registry
from kubexm.lab.registry import BINARY, LocalRegistry, RegistryUnavailable, free_port
from kubexm.spec.models import Cluster

__all__ = ["BINARY", "PASSWORD", "USER", "RunningRegistry", "cluster_for", "free_port", "start_registry", "stop"]

USER = "pusher"
PASSWORD = 'pa ss"wo\\rd$(x)'  # quotes, a backslash and shell syntax: must never matter
RunningRegistry = LocalRegistry


def cluster_for(port: int) -> Cluster:
    return lab_registry.cluster_for(port, USER, PASSWORD)


def start_registry(base: Path, *, tmpfs_size: str | None = None) -> LocalRegistry:
    reg = LocalRegistry(base, USER, PASSWORD)
    try:
        reg.start(tmpfs_size=tmpfs_size)
    except RegistryUnavailable as exc:
        pytest.skip(str(exc))
    return reg


def stop(reg: LocalRegistry) -> None:
    reg.stop()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path / "registry")
    yield reg
    stop(reg)

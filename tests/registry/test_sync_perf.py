"""How `offline sync` spends connections against a real registry: a re-run with nothing to push stays on a
couple of TLS connections (each costs the registry a handshake, and each of its requests a bcrypt check), while
a first push still fans out to ``parallel`` connections."""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest

from kubexm.offline import sync
from kubexm.offline.sync import sync_bundle

from .conftest import PASSWORD, USER, RunningRegistry
from .oci import LayoutWriter

IMAGES = 12


def build(root: Path) -> None:
    """IMAGES single-architecture images, three layers each (one shared base), in one layout."""
    writer = LayoutWriter(root / "images" / "many")
    base = writer.layer({"base.txt": b"base" * 4096})
    for i in range(IMAGES):
        own = [writer.layer({f"app{i}-{n}.txt": f"{i}-{n}".encode() * 20000}) for n in range(2)]
        writer.single(f"example.com/perf/app{i}:v1", writer.manifest("amd64", [base, *own]))


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every TLS connection the client opens (the real connect runs: this only counts)."""
    opened: list[str] = []
    real = http.client.HTTPSConnection.connect

    def counting(self: http.client.HTTPSConnection) -> None:
        opened.append(f"{self.host}:{self.port}")
        real(self)

    monkeypatch.setattr(http.client.HTTPSConnection, "connect", counting)
    return opened


def test_a_rerun_with_nothing_to_push_uses_few_connections(registry: RunningRegistry, tmp_path: Path,
                                                           connections: list[str]) -> None:
    build(tmp_path / "b")
    first = sync_bundle(tmp_path / "b", registry.address, username=USER, password=PASSWORD,
                        ca_file=str(registry.ca_file), parallel=8)
    assert [i.status for i in first.images] == ["pushed"] * IMAGES
    assert len(connections) > sync.PROBES, "the first push runs uploads on more connections than the probes use"

    connections.clear()
    before = len(registry.requests())
    again = sync_bundle(tmp_path / "b", registry.address, username=USER, password=PASSWORD,
                        ca_file=str(registry.ca_file), parallel=8)
    assert [i.status for i in again.images] == ["present"] * IMAGES
    served = registry.requests()[before:]
    assert sorted(m for m, _, _ in served if m != "GET") == ["HEAD"] * IMAGES  # one HEAD per image, nothing written
    # The ping and the HEADs share the probe threads: at most PROBES connections, not one per parallel worker.
    assert 1 <= len(connections) <= sync.PROBES, connections


def test_the_probe_limit_never_exceeds_parallel(registry: RunningRegistry, tmp_path: Path,
                                                connections: list[str]) -> None:
    build(tmp_path / "b")
    report = sync_bundle(tmp_path / "b", registry.address, username=USER, password=PASSWORD,
                         ca_file=str(registry.ca_file), parallel=1)
    assert [i.status for i in report.images] == ["pushed"] * IMAGES
    assert len(connections) == 1, connections  # --parallel 1: one worker, one connection, for everything

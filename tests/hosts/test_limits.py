"""The deploy machine's limits for a large fleet: open files raised, the neighbour table named when too small."""

from __future__ import annotations

import ipaddress
import resource
from pathlib import Path

import pytest

from kubexm.hosts import limits


def test_open_files_raised_to_what_the_fleet_needs() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        assert limits.raise_open_files(300) is None or hard < limits.open_files_needed(300)
        now, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        assert now == min(limits.open_files_needed(300), hard)
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_a_hard_limit_too_low_is_named() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    hosts = (hard if hard != resource.RLIM_INFINITY else 1 << 20) + 10
    warning = limits.raise_open_files(hosts)
    try:
        assert warning is not None and f"{hosts} hosts need about" in warning and "ulimit -Hn" in warning
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _neigh(tmp_path: Path, thresh2: int, thresh3: int) -> Path:
    base = tmp_path / "neigh"
    base.mkdir()
    (base / "gc_thresh2").write_text(f"{thresh2}\n")
    (base / "gc_thresh3").write_text(f"{thresh3}\n")
    return base


def test_neighbour_table_too_small_for_hosts_on_own_subnet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(limits, "NEIGH", _neigh(tmp_path, 512, 1024))
    monkeypatch.setattr(limits, "_local_networks", lambda: [ipaddress.ip_network("10.20.0.0/16")])
    near = [f"10.20.{i // 250}.{i % 250 + 1}" for i in range(600)]
    warning = limits.neighbour_warning([*near, "192.168.1.7", "node-a.example"])
    assert warning is not None
    assert warning.startswith("600 hosts are on this machine's own subnets")
    assert "net.ipv4.neigh.default.gc_thresh2" in warning and "sysctl -w" in warning
    # Routed hosts need no neighbour entry, and a table big enough says nothing.
    assert limits.neighbour_warning([f"172.16.{i // 250}.{i % 250 + 1}" for i in range(600)]) is None
    assert limits.neighbour_warning(near[:400]) is None


def test_this_machine_answers_without_error() -> None:
    # Real `ip -j addr` and /proc: loopback only, whatever the table size, is never a warning.
    assert limits.neighbour_warning(["127.0.0.1", "127.0.0.2"]) is None

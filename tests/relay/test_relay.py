"""Relay distribution over real sshd hosts (network namespaces): identical files everywhere, the deploy
machine sending the file only to the seeds, and direct uploads where a relay hop fails."""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.engine import RunContext, RunOptions
from kubexm.hosts import relay
from kubexm.hosts.relay import PORT, distribute
from kubexm.spec.loader import parse_cluster

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench import hosts as bench_hosts

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[list[bench_hosts.BenchHost], Path]]:
    if os.geteuid() != 0 or not shutil.which("socat") or not shutil.which("nft"):
        pytest.fail("relay tests need root, socat and nft (`make test` installs them)")
    hosts, key = bench_hosts.setup(5, tmp_path_factory.mktemp("relay"))
    try:
        yield hosts, key
    finally:
        bench_hosts.teardown()


def cluster_for(hosts: list[bench_hosts.BenchHost], key: Path, home: Path) -> object:
    lines = ["apiVersion: kubexm.io/v1alpha1", "kind: Cluster", "metadata: {name: relay}", "spec:", "  hosts:"]
    lines += [f"    - {{name: {h.name}, address: {h.address}, user: kxbench, privateKeyPath: {key}}}" for h in hosts]
    lines += ["  roleGroups:", f"    etcd: [{hosts[0].name}]", f"    control-plane: [{hosts[0].name}]",
              f"    worker: [{', '.join(h.name for h in hosts)}]"]
    return parse_cluster("\n".join(lines) + "\n")


def run_distribute(hosts: list[bench_hosts.BenchHost], key: Path, blob: Path, home: Path) -> object:
    os.environ["KUBEXM_HOME"] = str(home)
    cluster = cluster_for(hosts, key, home)

    async def go() -> object:
        run = RunContext(cluster, RunOptions())  # type: ignore[arg-type]
        try:
            return await distribute(run, [h.name for h in hosts], blob, "/srv/kxbench/blob.bin", seeds=2)
        finally:
            await run.close()

    return asyncio.run(go())


def copies(hosts: list[bench_hosts.BenchHost]) -> dict[str, str]:
    out = {}
    for h in hosts:
        path = bench_hosts.WORK / h.name / "blob.bin"
        out[h.name] = hashlib.sha256(path.read_bytes()).hexdigest() if path.exists() else "missing"
    return out


def test_relay_delivers_identical_files_and_sends_each_byte_twice(fleet: tuple, tmp_path: Path) -> None:
    hosts, key = fleet
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(8 << 20))
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    dist = run_distribute(hosts, key, blob, tmp_path / "home")
    assert set(copies(hosts).values()) == {want}
    assert sorted(dist.how.values()) == ["relay"] * 5, (dist.how, dist.relay_failures)  # type: ignore[attr-defined]
    assert dist.bytes_sent == 2 * blob.stat().st_size  # type: ignore[attr-defined]
    for h in hosts:  # moved into place as root with the asked mode; no staging directory left behind
        placed = (bench_hosts.WORK / h.name / "blob.bin").stat()
        assert (placed.st_uid, placed.st_mode & 0o777) == (0, 0o644)
        assert not list((bench_hosts.WORK / h.name).glob(".kubexm-relay-*"))
    again = run_distribute(hosts, key, blob, tmp_path / "home")
    assert set(again.how.values()) == {"present"} and again.bytes_sent == 0  # type: ignore[attr-defined]


def test_a_failed_relay_hop_falls_back_to_direct_upload(fleet: tuple, tmp_path: Path) -> None:
    hosts, key = fleet
    blob = tmp_path / "blob2.bin"
    blob.write_bytes(os.urandom(4 << 20))
    for h in hosts:
        (bench_hosts.WORK / h.name / "blob.bin").unlink(missing_ok=True)
    # The relay port is taken on the second host of the first chain (h003): its hop and the ones behind it fail.
    blocker = subprocess.Popen(["ip", "netns", "exec", hosts[2].netns, "socat",
                                f"TCP-LISTEN:{PORT},bind={hosts[2].address},reuseaddr", "SYSTEM:sleep 60"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        dist = run_distribute(hosts, key, blob, tmp_path / "home")
    finally:
        blocker.kill()
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert set(copies(hosts).values()) == {want}
    assert dist.how[hosts[2].name] == "direct" and hosts[2].name in dist.relay_failures  # type: ignore[attr-defined]
    assert dist.how[hosts[0].name] == "relay"  # type: ignore[attr-defined]
    assert not [p for h in hosts for p in (bench_hosts.WORK / h.name).glob(".kubexm-relay-*")]


def test_a_firewall_dropping_the_relay_port_costs_seconds_then_direct_uploads(
        fleet: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    hosts, key = fleet
    blob = tmp_path / "blob3.bin"
    blob.write_bytes(os.urandom(4 << 20))
    for h in hosts:
        (bench_hosts.WORK / h.name / "blob.bin").unlink(missing_ok=True)
    # h003 silently drops the relay port (no refusal, nothing answers), as a firewall between nodes would.
    # Fewer connect attempts than in production keep the test short; the behaviour is the same.
    monkeypatch.setattr(relay, "RETRIES", 5)
    ns = hosts[2].netns
    nft = ["ip", "netns", "exec", ns, "nft"]
    subprocess.run([*nft, "add table inet kxtest"], check=True)
    try:
        subprocess.run([*nft, "add chain inet kxtest in { type filter hook input priority 0; }"], check=True)
        subprocess.run([*nft, f"add rule inet kxtest in tcp dport {PORT} drop"], check=True)
        start = time.monotonic()
        dist = run_distribute(hosts, key, blob, tmp_path / "home")
        elapsed = time.monotonic() - start
    finally:
        subprocess.run([*nft, "delete table inet kxtest"], check=False)
    want = hashlib.sha256(blob.read_bytes()).hexdigest()
    assert set(copies(hosts).values()) == {want}
    # The chain h001 -> h003 -> h005 broke at its first link: the seed says so, and the hosts behind it
    # stop waiting at once instead of after the relay's grace period.
    assert dist.unreachable == [(hosts[0].name, hosts[2].name)]  # type: ignore[attr-defined]
    how = dist.how  # type: ignore[attr-defined]
    assert how[hosts[2].name] == how[hosts[4].name] == "direct"
    assert how[hosts[0].name] == how[hosts[1].name] == how[hosts[3].name] == "relay"
    assert elapsed < 60, elapsed  # not a benchmark: a dropped port must not hold the hosts behind it for minutes
    assert not [p for h in hosts for p in (bench_hosts.WORK / h.name).glob(".kubexm-relay-*")]

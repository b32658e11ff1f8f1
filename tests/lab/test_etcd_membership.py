"""Growing etcd 3 -> 5 and shrinking 5 -> 3 on real lab nodes, with the cluster healthy throughout."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab
PKI = "/etc/kubernetes/pki/etcd"
ETCDCTL = (f"ETCDCTL_API=3 etcdctl --cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt "
           f"--key={PKI}/healthcheck-client.key")


@pytest.fixture(scope="module")
def five(lab_env: Path) -> Iterator[Lab]:
    lab = Lab("kxgrow")
    try:
        lab.up(5, "10.213.79.0/24")
        yield lab
    finally:
        lab.down()


def set_etcd_members(lab: Lab, names: list[str]) -> None:
    text = lab.cluster_file.read_text()
    start = text.index("    etcd: [")
    end = text.index("\n", start)
    lab.cluster_file.write_text(text[:start] + f"    etcd: [{', '.join(names)}]" + text[end:])


def start_monitor(lab: Lab) -> subprocess.Popen[str]:
    """Checks the three original members every 0.5 s from node1 and prints one line per check."""
    state = lab.load()
    assert state is not None
    endpoints = ",".join(f"https://{lab.node(state, n).address}:2379" for n in ("node1", "node2", "node3"))
    loop = (f"while true; do if {ETCDCTL} --endpoints={endpoints} --command-timeout=3s endpoint health "
            ">/dev/null 2>&1; then echo up; else echo DOWN; fi; sleep 0.5; done")
    return subprocess.Popen(lab.ssh_argv(lab.node(state, "node1"), loop), stdout=subprocess.PIPE, text=True)


def stop_monitor(proc: subprocess.Popen[str]) -> list[str]:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    return out.split()


def test_grow_to_five_and_shrink_to_three_staying_healthy(five: Lab) -> None:
    cluster = str(five.cluster_file)
    res = kubexm("create", "cluster", "-f", cluster, "-y", "--tags", "etcd")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    monitor = start_monitor(five)
    try:
        set_etcd_members(five, ["node1", "node2", "node3", "node4", "node5"])
        res = kubexm("add", "nodes", "-y", "-f", cluster, "--nodes", "node4,node5", "--role", "etcd")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        health = ssh(five, "node5", f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 endpoint health --cluster 2>&1")
        assert health.count("is healthy") == 5
        res = kubexm("create", "cluster", "-f", cluster, "-y", "--tags", "etcd")
        assert "nothing to change" in res.stdout  # the joined members are left as they joined

        res = kubexm("delete", "nodes", "-f", cluster, "--nodes", "node4,node5", "-y")
        assert res.returncode == 0, res.stdout[-2000:] + res.stderr
        set_etcd_members(five, ["node1", "node2", "node3"])
    finally:
        checks = stop_monitor(monitor)
    assert len(checks) > 5 and "DOWN" not in checks
    members = ssh(five, "node1", f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 member list")
    assert sorted(line.split(", ")[2] for line in members.strip().splitlines()) == ["node1", "node2", "node3"]
    assert "inactive" in subprocess.run(five.ssh_argv(five.node(five.load(), "node4"), "systemctl is-active etcd"),  # type: ignore[arg-type]
                                        capture_output=True, text=True).stdout


def test_removal_below_quorum_is_refused(five: Lab) -> None:
    cluster = str(five.cluster_file)
    five.kill("node2")
    try:
        res = kubexm("delete", "nodes", "-f", cluster, "--nodes", "node3", "-y")
        assert res.returncode == 1
        assert "below quorum" in res.stdout and "--force" in res.stdout
        members = ssh(five, "node1", f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 member list")
        assert "node3" in members
    finally:
        five.start("node2")

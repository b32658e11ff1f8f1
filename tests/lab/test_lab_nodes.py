"""The lab itself: real nodes with their own identity, fault injection, idempotent up, clean down."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubexm.errors import UsageError
from kubexm.lab.lab import Lab
from kubexm.spec.loader import load_cluster

from .conftest import NAME, SUBNET, RunningLab, kubexm

pytestmark = pytest.mark.lab


def test_nodes_are_real_systemd_hosts_with_own_identity(lab: RunningLab) -> None:
    seen = set()
    for node in lab.nodes:
        out = lab.ssh(node, "hostname; cat /etc/machine-id; systemctl is-system-running; ip -4 -o addr show dev eth0")
        hostname, machine_id, system_state, addr = out.strip().splitlines()
        assert hostname == node
        assert system_state in ("running", "degraded")
        assert f" {lab.address(node)}/24 " in addr
        seen.add(machine_id)
    assert len(seen) == 3


def test_cluster_file_loads_with_sensible_roles(lab: RunningLab) -> None:
    cluster = load_cluster(lab.cluster_file)
    assert [h.name for h in cluster.hosts_with_role("etcd")] == ["node1", "node2", "node3"]
    assert [h.name for h in cluster.hosts_with_role("control-plane")] == ["node1"]
    assert [h.name for h in cluster.hosts_with_role("worker")] == ["node2", "node3"]


def test_status_and_idempotent_up(lab: RunningLab) -> None:
    res = kubexm("lab", "status", "--name", NAME)
    assert res.returncode == 0
    assert res.stdout.count("running") == 3
    pids = [n.pid for n in lab.state.nodes]
    res = kubexm("lab", "up", "--name", NAME, "--subnet", SUBNET, "--nodes", "3")
    assert res.returncode == 0 and "nothing changed" in res.stdout
    lab.refresh()
    assert [n.pid for n in lab.state.nodes] == pids


def test_name_clash_and_subnet_in_use_are_refused(lab: RunningLab) -> None:
    res = kubexm("lab", "up", "--name", NAME, "--subnet", SUBNET, "--nodes", "2")
    assert res.returncode == 2 and f"lab '{NAME}' already exists with 3 nodes" in res.stderr
    res = kubexm("lab", "up", "--name", "other", "--subnet", SUBNET)
    assert res.returncode == 2 and "overlaps" in res.stderr and "--subnet" in res.stderr
    with pytest.raises(UsageError, match="not valid"):
        Lab("Bad_Name")


def test_kill_and_start_a_node(lab: RunningLab) -> None:
    res = kubexm("lab", "kill", "node3", "--name", NAME)
    assert res.returncode == 0
    lab.refresh()
    assert not lab.lab.node(lab.state, "node3").running
    probe = subprocess.run(["bash", "-c", f"exec 3<>/dev/tcp/{lab.address('node3')}/22"], capture_output=True, timeout=10)
    assert probe.returncode != 0
    res = kubexm("lab", "start", "node3", "--name", NAME)
    assert res.returncode == 0, res.stderr
    assert lab.ssh("node3", "hostname").strip() == "node3"


def test_partition_and_heal(lab: RunningLab) -> None:
    assert kubexm("lab", "partition", "node2", "--name", NAME).returncode == 0
    probe = subprocess.run(["timeout", "3", "bash", "-c", f"exec 3<>/dev/tcp/{lab.address('node2')}/22"],
                           capture_output=True)
    assert probe.returncode == 124  # packets vanish: a timeout, not a refusal
    # The node itself kept running while cut off.
    lab.refresh()
    assert lab.lab.node(lab.state, "node2").running
    assert kubexm("lab", "heal", "node2", "--name", NAME).returncode == 0
    assert lab.ssh("node2", "hostname").strip() == "node2"


def test_down_leaves_nothing_behind(lab_env: Path) -> None:
    small = Lab("kxdown")
    state, _ = small.up(2, "10.213.78.0/24")
    pids = [n.pid for n in state.nodes]
    assert all(pids)
    small.down()
    mounts = Path("/proc/mounts").read_text()
    assert str(small.dir) not in mounts
    assert "kx-kxdown-" not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout
    links = subprocess.run(["ip", "-br", "link"], capture_output=True, text=True).stdout
    assert "kxb-kxdown" not in links and not any(n.veth in links for n in state.nodes)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    assert not small.dir.exists()
    res = kubexm("lab", "down", "--name", "kxdown")
    assert res.returncode == 0 and "no lab kxdown" in res.stdout

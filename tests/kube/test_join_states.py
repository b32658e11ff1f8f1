"""KubeadmJoin tells a finished join from a fresh node and from a join that stopped half way.

A join that failed after kubelet started leaves part of what a join writes; `kubeadm join` cannot run over it,
so a plan shows "would change" with the reason, and a run stops with one line naming the node to reset.
"""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path
from typing import Any

import pytest
from support.memory import MemoryFleet

from kube.join_probe import PROBE, node_answers
from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, RunReport, Task, deploy_machine, role
from kubexm.hosts.pool import ConnectionPool
from kubexm.kube.kubeadm import ADMIN_CONF, KUBELET_CONF
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.kubernetes import EnsureKubernetesPKI, KubeadmJoin, join_leaves

NAMES = ["master1", "master2", "master3", "worker1", "worker2"]
APISERVER = "/etc/kubernetes/manifests/kube-apiserver.yaml"
CLIENT_CERT = "/var/lib/kubelet/pki/kubelet-client-current.pem"


def cluster(etcd: str = "kubexm") -> Cluster:
    return parse_cluster(sample_config("joins", with_ha=True).replace("type: kubexm", f"type: {etcd}"))


class Nodes:
    """Fake nodes holding given join traces; kubelet runs where ``active``."""

    def __init__(self, fleet: MemoryFleet) -> None:
        self.present: dict[str, set[str]] = {n: set() for n in NAMES}
        self.active: set[str] = set()
        for name in NAMES:
            fleet[name].on(PROBE, node_answers(lambda h: self.present[h.name], lambda h: h.name in self.active))


def go(c: Cluster, fleet: MemoryFleet, node: str, control_plane: bool, command: str = "", **opts: Any) -> RunReport:
    options = RunOptions(nodes=[node], **opts)
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory), command=command)
    pki = Task("PKI", [EnsureKubernetesPKI()], hosts=deploy_machine())
    join = Task("Join", [KubeadmJoin(control_plane=control_plane)],
                hosts=role("control-plane") if control_plane else role("worker"))
    module = Module("M", [pki, join])
    return asyncio.run(Executor(ctx).run_tasks([(module, pki), (module, join)]))


def join_record(report: RunReport, node: str) -> Any:
    (record,) = [r for r in report.records if r.step == "KubeadmJoin" and r.host == node]
    return record


def sent_joins(fleet: MemoryFleet, node: str) -> list[str]:
    return [c for c in fleet[node].commands if c.startswith("kubeadm join")]


@pytest.mark.parametrize(("node", "control_plane", "etcd", "lost"), [
    # kubelet started, its TLS bootstrap never finished: no client certificate
    ("worker1", False, "kubexm", {CLIENT_CERT}),
    # control plane: kubelet-start failed after the control-plane manifests and admin.conf were written
    ("master2", True, "kubexm", {KUBELET_CONF, CLIENT_CERT}),
    # control plane: stopped before its static pods were written
    ("master2", True, "kubexm", {APISERVER, ADMIN_CONF}),
    # stacked etcd: the member never came up (its data directory holds no member)
    ("master3", True, "kubeadm", {"/var/lib/etcd/member"}),
])
def test_a_join_that_stopped_half_way_is_planned_with_its_reason_and_stops_the_run(
        node: str, control_plane: bool, etcd: str, lost: set[str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    c = cluster(etcd)
    fleet = MemoryFleet(NAMES)
    nodes = Nodes(fleet)
    nodes.present[node] = set(join_leaves(c, control_plane)) - lost
    nodes.active.add(node)

    plan = go(c, fleet, node, control_plane, dry_run=True)
    assert plan.ok
    record = join_record(plan, node)
    assert record.status == "would-change"
    assert "stopped half way" in record.message and all(path in record.message for path in lost)
    assert "kubexm run command -c joins --nodes " in record.message  # no cluster file named: the stored one

    report = go(c, fleet, node, control_plane, command="kubexm add nodes --nodes n -f 'my cluster.yaml' --yes")
    record = join_record(report, node)
    assert record.status == "failed" and "\n" not in record.message
    assert record.message.startswith(f"{node} holds a kubeadm join that stopped half way: ")
    # The hint is a command to paste: it resets exactly this node of this cluster (named as the run named it)
    # with the cluster's runtime.
    hint = record.message[record.message.index("kubexm run command"):].rstrip(")")
    assert shlex.split(hint) == ["kubexm", "run", "command", "-f", "my cluster.yaml", "--nodes", node, "--",
                                 "kubeadm", "reset", "--force", "--cri-socket", "unix:///run/containerd/containerd.sock"]
    assert sent_joins(fleet, node) == []  # nothing was tried over the broken join
    assert not any("reset" in cmd for cmd in fleet[node].commands)  # and nothing reset it behind the user's back


@pytest.mark.parametrize(("node", "control_plane", "etcd"), [
    ("worker1", False, "kubexm"), ("master2", True, "kubexm"), ("master2", True, "kubeadm")])
def test_a_finished_join_is_done_and_a_fresh_node_joins(node: str, control_plane: bool, etcd: str, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    c = cluster(etcd)
    fleet = MemoryFleet(NAMES)
    nodes = Nodes(fleet)
    nodes.present[node] = set(join_leaves(c, control_plane))
    nodes.active.add(node)
    report = go(c, fleet, node, control_plane)
    assert report.ok and join_record(report, node).status == "ok" and sent_joins(fleet, node) == []

    # A fresh node (kubelet enabled by kubexm but not started yet, nothing of a join) joins.
    nodes.present[node] = set()
    nodes.active.discard(node)
    report = go(c, fleet, node, control_plane)
    assert report.ok, [(f.host, f.message) for f in report.failures]
    assert join_record(report, node).status == "changed" and len(sent_joins(fleet, node)) == 1


def test_a_joined_node_whose_kubelet_stopped_gets_kubelet_started_not_a_new_join(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    c = cluster()
    fleet = MemoryFleet(NAMES)
    nodes = Nodes(fleet)
    nodes.present["worker2"] = set(join_leaves(c, False))
    plan = go(c, fleet, "worker2", False, dry_run=True)
    record = join_record(plan, "worker2")
    assert record.status == "would-change" and "kubelet is not running" in record.message
    report = go(c, fleet, "worker2", False)
    assert report.ok and join_record(report, "worker2").status == "changed"
    assert "systemctl start kubelet" in fleet["worker2"].commands and sent_joins(fleet, "worker2") == []


def test_stacked_etcd_members_must_have_joined_too() -> None:
    stacked, external = join_leaves(cluster("kubeadm"), True), join_leaves(cluster("kubexm"), True)
    assert set(stacked) - set(external) == {"/etc/kubernetes/manifests/etcd.yaml", "/var/lib/etcd/member"}
    assert set(join_leaves(cluster(), False)) == {KUBELET_CONF, "/var/lib/kubelet/config.yaml", CLIENT_CERT}

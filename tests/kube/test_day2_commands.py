"""Day-2 operations as exact command lines per host, in order, against a recorded cluster state."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

from support.memory import MemoryFleet

from kubexm.assets import LocalSource
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.kubernetes_ops import DELETE_KUBE_NODES, UPGRADE_CLUSTER
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.kube_ops import skew_problem, upgrade_plan

KUBECTL = "kubectl --kubeconfig /etc/kubernetes/admin.conf"
NAMES = ["master1", "master2", "master3", "worker1", "worker2"]


def cluster(version: str = "v1.33.7", extra: str = "") -> Cluster:
    return parse_cluster(sample_config("ha", with_ha=True).replace("version: v1.33.7", f"version: {version}") + extra)


class FakeKube:
    """Node objects as the API server would hold them, served to kubectl on master hosts."""

    def __init__(self, fleet: MemoryFleet, version: str) -> None:
        self.nodes: dict[str, dict[str, Any]] = {n: {"unschedulable": False, "version": version} for n in NAMES}
        self.log: list[tuple[str, str]] = []  # (host the command ran on, command) across hosts, in order
        self.target = version
        for name in NAMES:
            host = fleet[name]
            host.on(r"^" + re.escape(KUBECTL) + r" (.*)$", self.kubectl)
            host.on(r"^systemctl daemon-reload && systemctl restart kubelet$", self.restart_kubelet)
            host.on(r"^(?:if command -v kubeadm >/dev/null; then )?kubeadm (upgrade|reset)", self.record)
            host.on(r"^dpkg-query", lambda h, m, s: (0, "haproxy installed\nkeepalived installed\n", ""))
            host.on(r"^ip -o -4 addr show to", lambda h, m, s: (0, "eth0\n", ""))
            host.on(r"^test -e /etc/kubernetes/kubelet.conf",
                    lambda h, m, s: (1 if any("kubeadm reset" in c for c in h.commands) else 0, "", ""))

    def record(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        self.log.append((h.name, m.string))
        return 0, "", ""

    def restart_kubelet(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        self.log.append((h.name, m.string))
        self.nodes[h.name]["version"] = self.target
        return 0, "", ""

    def kubectl(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        args = m.group(1)
        self.log.append((h.name, m.string))
        if args == "version -o json":
            return 0, json.dumps({"serverVersion": {"gitVersion": self.nodes["master1"]["version"]}}), ""
        name = args.split()[2] if args.startswith(("get node", "delete node")) else args.split()[1]
        node = self.nodes.get(name)
        if args.startswith("get node"):
            if node is None:
                return 0, "", ""
            return 0, json.dumps({"metadata": {"name": name}, "spec": {"unschedulable": node["unschedulable"]},
                                  "status": {"nodeInfo": {"kubeletVersion": node["version"]},
                                             "conditions": [{"type": "Ready", "status": "True"}]}}), ""
        if args.startswith("cordon"):
            self.nodes[name]["unschedulable"] = True
        elif args.startswith("uncordon"):
            self.nodes[name]["unschedulable"] = False
        elif args.startswith("delete node"):
            self.nodes.pop(name, None)
        return 0, "", ""


def run(c: Cluster, pipeline: Any, fleet: MemoryFleet, **extra: Any) -> Any:
    options = RunOptions(nodes=extra.pop("nodes", None), extra=extra)
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_pipeline(pipeline))


def test_delete_nodes_drains_deletes_and_resets_one_by_one() -> None:
    # Stacked etcd: kubeadm reset removes the member itself (kubexm-managed etcd members leave via etcdctl,
    # covered by the etcd membership tests).
    c = parse_cluster(sample_config("ha", with_ha=True).replace("type: kubexm ", "type: kubeadm "))
    fleet = MemoryFleet(NAMES)
    kube = FakeKube(fleet, "v1.33.7")
    report = run(c, DELETE_KUBE_NODES, fleet, nodes=["master1,worker1"], removing=["master1", "worker1"],
                 grace_period=30, drain_timeout=120, force_drain=True)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    reset = ("if command -v kubeadm >/dev/null; then kubeadm reset --force --cri-socket "
             "unix:///run/containerd/containerd.sock; fi && rm -rf /etc/cni/net.d")
    mutating = [(h, "RESET" if c.startswith(reset) else c) for h, c in kube.log if " get node " not in c]
    # kubectl runs on master2: master1 is being removed. master1 goes completely before worker1.
    assert mutating == [
        ("master2", f"{KUBECTL} cordon master1"),
        ("master2", f"{KUBECTL} drain master1 --ignore-daemonsets --delete-emptydir-data --grace-period=30 "
                    "--timeout=120s --force"),
        ("master2", f"{KUBECTL} delete node master1 --ignore-not-found"),
        ("master1", "RESET"),
        ("master2", f"{KUBECTL} cordon worker1"),
        ("master2", f"{KUBECTL} drain worker1 --ignore-daemonsets --delete-emptydir-data --grace-period=30 "
                    "--timeout=120s --force"),
        ("master2", f"{KUBECTL} delete node worker1 --ignore-not-found"),
        ("worker1", "RESET"),
    ]
    # The balancers (co-located on the control planes) stopped sending traffic to master1 first.
    for name in ("master2", "master3"):
        cfg = fleet[name].files["/etc/haproxy/haproxy.cfg"].decode()
        assert "server master2 192.168.0.12:6443" in cfg and "master1" not in cfg
        assert "haproxy -c -q -dW -f /etc/haproxy/haproxy.cfg.kubexm-new 2>&1" in fleet[name].commands
    assert set(kube.nodes) == {"master2", "master3", "worker2"}


def test_the_last_control_plane_is_never_deleted() -> None:
    c = cluster()
    fleet = MemoryFleet(NAMES)
    kube = FakeKube(fleet, "v1.33.7")
    report = run(c, DELETE_KUBE_NODES, fleet, nodes=["master*"], removing=["master1", "master2", "master3"])
    assert "would remove the last control-plane node" in report.failures[0].message
    assert not [c for _, c in kube.log if "drain" in c or "reset" in c]


def binaries_source(tmp_path: Path, version: str) -> Path:
    source = tmp_path / "source"
    for name in ("kubeadm", "kubelet", "kubectl"):
        f = tmp_path / name
        f.write_bytes(f"#!/bin/sh\necho {name} {version}\n".encode())
        LocalSource(source).add(name, version, "amd64", f)
    return source


def test_upgrade_order_control_planes_first_then_workers_in_batches(tmp_path: Path) -> None:
    source = binaries_source(tmp_path, "v1.34.3")
    c = cluster("v1.34.3", f"  assets: {{localSource: {source}}}\n")
    fleet = MemoryFleet(NAMES)
    kube = FakeKube(fleet, "v1.33.7")
    kube.target = "v1.34.3"
    for name in NAMES:
        fleet[name].delay = 0.001  # commands yield to the event loop, as over SSH, so batches interleave
    report = run(c, UPGRADE_CLUSTER, fleet, node_concurrency=2)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    steps = [(h, c.replace(KUBECTL + " ", "kubectl ")) for h, c in kube.log
             if not re.search(r" get node |version -o json", c)]
    assert steps[:6] == [
        ("master1", "kubeadm upgrade apply v1.34.3 --yes --certificate-renewal=false"),
        ("master1", "kubectl cordon master1"),
        ("master1", "kubectl drain master1 --ignore-daemonsets --delete-emptydir-data --grace-period=-1 "
                    "--timeout=300s"),
        ("master1", "systemctl daemon-reload && systemctl restart kubelet"),
        ("master1", "kubectl uncordon master1"),
        ("master2", "kubeadm upgrade node --certificate-renewal=false"),
    ]
    order = [h if "kubeadm upgrade" in c else None for h, c in steps]
    assert [h for h in order if h] == ["master1", "master2", "master3", "worker1", "worker2"]
    # Workers go in one batch of two: both are cordoned before either is uncordoned.
    worker_lines = [c for _, c in steps if "worker" in c]
    assert worker_lines.index("kubectl cordon worker2") < worker_lines.index("kubectl uncordon worker1")
    assert all(n["version"] == "v1.34.3" and not n["unschedulable"] for n in kube.nodes.values())
    installs = [cmd for cmd in fleet["worker1"].commands if cmd.startswith("install -m 0755")]
    assert [i.split(" && ")[0].split()[-1] for i in installs] == [
        "/usr/local/bin/kubeadm", "/usr/local/bin/kubelet", "/usr/local/bin/kubectl"]
    # A second run changes nothing: every node already reports the target version.
    before = len(kube.log)
    again = run(c, UPGRADE_CLUSTER, fleet, node_concurrency=2)
    assert again.ok and not [c for _, c in kube.log[before:] if "upgrade" in c or "drain" in c]


def test_version_skew_rules_and_plan() -> None:
    assert skew_problem("v1.33.7", "v1.35.0") is not None and "skips a minor" in str(skew_problem("v1.33.7", "v1.35.0"))
    assert "older" in str(skew_problem("v1.33.7", "v1.32.9"))
    assert skew_problem("v1.33.7", "v1.34.3") is None and skew_problem("v1.33.2", "v1.33.7") is None
    plan = upgrade_plan(cluster("v1.34.3"), 2)
    assert plan[0].startswith("1. master1: install kubeadm v1.34.3, kubeadm upgrade apply v1.34.3")
    assert plan[1].startswith("2. master2:") and "kubeadm upgrade node" in plan[1]
    assert plan[3].startswith("4. worker1, worker2: drain")
    assert len(upgrade_plan(cluster("v1.34.3"), 1, control_plane=False)) == 2

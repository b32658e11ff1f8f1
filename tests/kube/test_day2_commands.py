"""Day-2 operations as exact command lines per host, in order, against a recorded cluster state."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from pathlib import Path
from typing import Any

from support.memory import MemoryFleet

from kubexm.assets import LocalSource
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.nodes import DELETE_KUBE_NODES
from kubexm.pipelines.upgrade import UPGRADE_CLUSTER
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.upgrade import skew_problem, upgrade_plan

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
            host.on(r"^dpkg-query", lambda h, m, s: (0, "haproxy\tii \nkeepalived\tii \n", ""))
            host.on(r"^ip -o -4 addr show to", lambda h, m, s: (0, "eth0\n", ""))
            # The etcd snapshot an upgrade takes right before it starts (its rollback point).
            host.on(r"etcdctl .*snapshot save (\S+)", self.snapshot)
            host.on(r"^test -e /etc/kubernetes/kubelet.conf",
                    lambda h, m, s: (1 if any("kubeadm reset" in c for c in h.commands) else 0, "", ""))

    def snapshot(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        h.files[shlex.split(m.group(1))[0]] = b"etcd snapshot"
        return 0, "", ""

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
        words = shlex.split(args)
        # Every node name is the one word after "--": it can never be taken for an option.
        name = words[words.index("--") + 1]
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
    assert ("master2", f"{KUBECTL} get node -o json --ignore-not-found -- master1") in kube.log
    # kubectl runs on master2: master1 is being removed. master1 goes completely before worker1.
    assert mutating == [
        ("master2", f"{KUBECTL} cordon -- master1"),
        ("master2", f"{KUBECTL} drain --ignore-daemonsets --delete-emptydir-data --grace-period=30 "
                    "--timeout=120s --force -- master1"),
        ("master2", f"{KUBECTL} delete node --ignore-not-found -- master1"),
        ("master1", "RESET"),
        ("master2", f"{KUBECTL} cordon -- worker1"),
        ("master2", f"{KUBECTL} drain --ignore-daemonsets --delete-emptydir-data --grace-period=30 "
                    "--timeout=120s --force -- worker1"),
        ("master2", f"{KUBECTL} delete node --ignore-not-found -- worker1"),
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
        ("master1", "kubeadm upgrade apply --yes --certificate-renewal=false -- v1.34.3"),
        ("master1", "kubectl cordon -- master1"),
        ("master1", "kubectl drain --ignore-daemonsets --delete-emptydir-data --grace-period=-1 "
                    "--timeout=300s -- master1"),
        ("master1", "systemctl daemon-reload && systemctl restart kubelet"),
        ("master1", "kubectl uncordon -- master1"),
        ("master2", "kubeadm upgrade node --certificate-renewal=false"),
    ]
    order = [h if "kubeadm upgrade" in c else None for h, c in steps]
    assert [h for h in order if h] == ["master1", "master2", "master3", "worker1", "worker2"]
    # Workers go in one batch of two: both are cordoned before either is uncordoned.
    worker_lines = [c for _, c in steps if "worker" in c]
    assert worker_lines.index("kubectl cordon -- worker2") < worker_lines.index("kubectl uncordon -- worker1")
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
    rows = upgrade_plan(cluster("v1.34.3"), 2, "v1.33.7")
    assert rows[0] == ["1", "master1", "kubeadm", "v1.33.7", "v1.34.3", "install the binary"]
    assert ["1", "master1", "kube-apiserver", "v1.33.7", "v1.34.3", "kubeadm upgrade apply v1.34.3"] in rows
    assert ["1", "(cluster)", "kube-proxy", "v1.33.7", "v1.34.3", "kubeadm upgrade apply v1.34.3"] in rows
    assert ["2", "master2", "kube-scheduler", "v1.33.7", "v1.34.3", "kubeadm upgrade node"] in rows
    assert ["4", "worker1, worker2", "kubelet", "v1.33.7", "v1.34.3", "install, restart kubelet, uncordon"] in rows
    # Ordered: control planes one by one, then the worker batch; every component of every node has a row.
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    for node in ("master1", "master2", "master3"):
        assert {r[2] for r in rows if r[1] == node} == {"kubeadm", "kube-apiserver", "kube-controller-manager",
                                                        "kube-scheduler", "kubelet", "kubectl"}
    workers = upgrade_plan(cluster("v1.34.3"), 1, "v1.33.7", control_plane=False)
    assert sorted({r[1] for r in workers}) == ["worker1", "worker2"]


def run_with_events(c: Cluster, pipeline: Any, fleet: MemoryFleet, **opts: Any) -> tuple[Any, list[Any]]:
    events: list[Any] = []
    extra = opts.pop("extra", {})
    options = RunOptions(extra=extra, **opts)
    ctx = RunContext(c, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(ctx).run_pipeline(pipeline))
    return report, events


def test_upgrade_plan_is_printed_offline_and_changes_nothing() -> None:
    # What `upgrade cluster --plan` runs: an offline dry run of the "plan" tag.
    fleet = MemoryFleet(NAMES)
    report, events = run_with_events(cluster("v1.34.3"), UPGRADE_CLUSTER, fleet, dry_run=True, offline=True,
                                     tags={"plan"}, extra={"from_version": "v1.33.7", "node_concurrency": 2})
    assert report.ok
    reports = [e.data for e in events if e.kind == "report"]
    assert len(reports) == 1 and reports[0]["title"] == "Upgrade plan: v1.33.7 -> v1.34.3"
    rows = reports[0]["rows"]
    assert rows[0] == ["1", "master1", "kubeadm", "v1.33.7", "v1.34.3", "install the binary"]
    assert rows[-1][:2] == ["4", "worker1, worker2"]
    assert not [n for n in NAMES if fleet[n].commands]


def test_upgrade_skipping_a_minor_or_going_down_is_refused_before_any_node() -> None:
    for current, target, words in (("v1.32.5", "v1.34.3", "skips a minor version"),
                                   ("v1.33.7", "v1.32.9", "older than the running")):
        fleet = MemoryFleet(NAMES)
        # Offline (--plan), against the version the cluster file records.
        report, events = run_with_events(cluster(target), UPGRADE_CLUSTER, fleet, dry_run=True, offline=True,
                                         tags={"plan"}, extra={"from_version": current})
        assert [f.task for f in report.failures] == ["PlanUpgrade"]
        assert words in report.failures[0].message and "\n" not in report.failures[0].message
        assert not [e for e in events if e.kind == "report"]
        # Connected, against the version the API server reports: nothing is installed or upgraded.
        kube = FakeKube(fleet, current)
        report = run(cluster(target), UPGRADE_CLUSTER, fleet)
        assert [f.step for f in report.failures] == ["CheckUpgradeSkew"], report.failures
        assert words in report.failures[0].message
        assert not [c for _, c in kube.log if "upgrade" in c or "drain" in c or "cordon" in c]
        assert not [c for n in NAMES for c in fleet[n].commands if c.startswith(("install ", "<put"))]

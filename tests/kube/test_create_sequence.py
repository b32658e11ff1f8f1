"""`create cluster`'s Kubernetes part as exact command lines: init first, control planes one by one,
workers in parallel, the token only in 0600 files and deleted afterwards; the plan of an HA spec."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML
from support.memory import MemoryFleet

from kube.join_probe import PROBE, node_answers
from kubexm.assets import LocalSource
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.kube.kubeadm import INIT_CONFIG, JOIN_CONFIG
from kubexm.modules.kubernetes import KubernetesModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.kubernetes import join_leaves

NAMES = ["master1", "master2", "master3", "worker1", "worker2"]


def source(tmp_path: Path) -> Path:
    src = tmp_path / "source"
    for name in ("kubeadm", "kubelet", "kubectl"):
        f = tmp_path / name
        f.write_bytes(b"#!/bin/sh\n")
        LocalSource(src).add(name, "v1.33.7", "amd64", f)
    import tarfile

    (tmp_path / "crictl").write_bytes(b"#!/bin/sh\n")
    with tarfile.open(tmp_path / "crictl-v1.33.0-linux-amd64.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "crictl", arcname="crictl")
    LocalSource(src).add("crictl", "v1.33.0", "amd64", tmp_path / "crictl-v1.33.0-linux-amd64.tar.gz")
    return src


class FakeControlPlane:
    """Answers like a cluster that comes up once `kubeadm init` ran; records every kubeadm command."""

    def __init__(self, fleet: MemoryFleet, cluster: Cluster) -> None:
        self.log: list[tuple[str, str]] = []
        self.tokens: list[bytes] = []
        self.up = False
        for name in NAMES:
            h = fleet[name]
            h.on(r"^kubeadm (init|join|token)", self.kubeadm)
            h.on(r"^test -f /etc/kubernetes/admin.conf && kubectl", self.readyz)
            h.on(r"get pods -n kube-system -l tier=control-plane -o json", self.pods)
            h.on(r"get nodes -o json", lambda h, m, s: (0, '{"items": []}', ""))
            # A node that ran kubeadm init or join holds everything a join leaves, and kubelet runs.
            h.on(PROBE, node_answers(lambda h: join_leaves(cluster, True) if self.joined(h) else (), self.joined))

    @staticmethod
    def joined(h: Any) -> bool:
        return any(c.startswith(("kubeadm join", "kubeadm init")) for c in h.commands)

    def kubeadm(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        self.log.append((h.name, m.string))
        config = INIT_CONFIG if m.group(1) == "init" else JOIN_CONFIG
        if m.group(1) in ("init", "join"):
            self.tokens.append(h.files[config])
            assert h.modes[config] == 0o600
        if m.group(1) == "init":
            self.up = True
        return 0, "", ""

    def readyz(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        return (0, "ok", "") if self.up and h.name == "master1" else (1, "", "")

    def pods(self, h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        items = ",".join(f'{{"metadata": {{"labels": {{"component": "{c}"}}}}, "spec": {{"nodeName": "{n}"}}, '
                         f'"status": {{"conditions": [{{"type": "Ready", "status": "True"}}]}}}}'
                         for n in NAMES[:3] for c in ("kube-apiserver", "kube-controller-manager",
                                                      "kube-scheduler"))
        return 0, '{"items": [' + items + "]}", ""


def test_init_then_control_planes_one_by_one_then_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    c = parse_cluster(sample_config("seq", with_ha=True) + f"  assets: {{localSource: {source(tmp_path)}}}\n")
    fleet = MemoryFleet(NAMES)
    fake = FakeControlPlane(fleet, c)
    for name in NAMES:
        fleet[name].delay = 0.001
    options = RunOptions()
    run = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    tasks = [(KubernetesModule, t) for t in KubernetesModule.tasks_for(c, set(), set())]
    report = asyncio.run(Executor(run).run_tasks(tasks))
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    order = [(h, cmd.split(" --")[0]) for h, cmd in fake.log]
    assert order[0] == ("master1", "kubeadm init")
    assert order[1:3] == [("master2", "kubeadm join"), ("master3", "kubeadm join")]
    assert sorted(order[3:5]) == [("worker1", "kubeadm join"), ("worker2", "kubeadm join")]
    assert fake.log[0][1] == "kubeadm init --config /etc/kubernetes/kubeadm-config.yaml --skip-token-print"
    # One token for the whole run, never on a command line, deleted by its public id afterwards.
    token = YAML(typ="safe").load_all(fake.tokens[0].decode()).__next__()["bootstrapTokens"][0]["token"]
    assert all(token.encode() in t for t in fake.tokens)
    every = [cmd for n in NAMES for cmd in fleet[n].commands]
    assert not [cmd for cmd in every if token in cmd]
    assert f"kubeadm token delete {token.split('.')[0]}" in fleet["master1"].commands
    # The files holding it are removed after use.
    assert all(f"rm -f -- {JOIN_CONFIG}" in fleet[n].commands for n in NAMES[1:])
    assert f"rm -f -- {INIT_CONFIG}" in fleet["master1"].commands
    assert "rm -f -- /etc/kubernetes/kubeadm-token.yaml" not in fleet["master1"].commands  # init made the token
    # Certificates from kubexm's PKI on every control plane, none on workers.
    for n in NAMES[:3]:
        assert fleet[n].modes["/etc/kubernetes/pki/ca.key"] == 0o600
        assert b"BEGIN CERTIFICATE" in fleet[n].files["/etc/kubernetes/pki/apiserver.crt"]
    assert "/etc/kubernetes/pki/ca.key" not in fleet["worker1"].files
    kubeconfig = YAML(typ="safe").load((tmp_path / "kubeconfig").read_text())
    assert kubeconfig["contexts"][0]["name"] == "kubexm-seq"
    assert kubeconfig["clusters"][0]["cluster"]["server"] == "https://lb.kubexm.local:8443"
    # A second run finds every node joined: no kubeadm init or join again.
    joins = len(fake.log)
    run = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(run).run_tasks(tasks))
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    assert {(r.host, r.status) for r in report.records if r.step == "KubeadmJoin"} == {
        (n, "ok") for n in NAMES[1:]}
    assert [cmd for _, cmd in fake.log[joins:] if cmd.startswith(("kubeadm init", "kubeadm join"))] == []


def test_offline_plan_of_an_ha_spec_lists_every_step_in_order(tmp_path: Path) -> None:
    import subprocess
    import sys

    spec = tmp_path / "ha.yaml"
    spec.write_text(sample_config("plan", with_ha=True))
    kubexm = str(Path(sys.executable).with_name("kubexm"))
    res = subprocess.run([kubexm, "create", "cluster", "-f", str(spec), "--dry-run", "--offline"],
                         capture_output=True, text=True, env={"KUBEXM_HOME": str(tmp_path / "h"), "PATH": "/usr/bin"},
                         timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    out = res.stdout
    expected = ["master1: set the hostname", "master1: write /etc/haproxy/haproxy.cfg",
                "master3: write /etc/keepalived/keepalived.conf", "worker2: install kubeadm",
                "master1: kubeadm init", "master2: kubeadm join --control-plane",
                "master3: kubeadm join --control-plane", "worker1: kubeadm join (worker)",
                "master1: delete the bootstrap token", "deploy-machine: write the admin kubeconfig",
                "master1: install addon calico", "master1: install addon local-path"]
    positions = [out.find(line) for line in expected]
    assert all(p >= 0 for p in positions), [e for e, p in zip(expected, positions, strict=True) if p < 0]
    assert positions == sorted(positions)

"""The whole `create cluster` pipeline on in-memory hosts that answer like a cluster coming up.

``run_create(cluster, tmp_path)`` builds a local asset source with stand-in release files for every
component the pipeline installs, a MemoryFleet whose hosts pass preflight, report etcd and the apiserver
healthy once started and record every command and upload, then runs CREATE_CLUSTER to the end.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubexm.assets import LocalSource
from kubexm.engine import EventBus, Executor, RunContext, RunOptions, RunReport
from kubexm.engine.selectors import DEPLOY
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.cluster import CREATE_CLUSTER
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import HELM_VERSION, component_version
from support.memory import MemoryFleet, MemoryHost


def _archive(path: Path, members: dict[str, bytes]) -> Path:
    import io

    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o755
            tar.addfile(info, io.BytesIO(data))
    return path


def asset_source(root: Path, cluster: Cluster, arch: str = "amd64") -> Path:
    """A local asset source holding a stand-in file for every binary the create pipeline installs."""
    work = root / "files"
    work.mkdir(parents=True, exist_ok=True)
    source = LocalSource(root / "source")
    stub = b"#!/bin/sh\nexit 0\n"
    for name in ("kubeadm", "kubelet", "kubectl"):
        (work / name).write_bytes(stub)
        source.add(name, component_version(cluster, name), arch, work / name)
    crictl = component_version(cluster, "crictl")
    source.add("crictl", crictl, arch, _archive(work / f"crictl-{crictl}-linux-{arch}.tar.gz", {"crictl": stub}))
    etcd = component_version(cluster, "etcd")
    source.add("etcd", etcd, arch, _archive(work / f"etcd-{etcd}-linux-{arch}.tar.gz",
                                            {f"etcd-{etcd}-linux-{arch}/etcd": stub,
                                             f"etcd-{etcd}-linux-{arch}/etcdctl": stub}))
    source.add("helm", HELM_VERSION, arch, _archive(work / f"helm-{HELM_VERSION}-linux-{arch}.tar.gz",
                                                    {f"linux-{arch}/helm": stub}))
    cri_dockerd = component_version(cluster, "cri-dockerd")
    source.add("cri-dockerd", cri_dockerd, arch, _archive(work / f"cri-dockerd-{cri_dockerd}.{arch}.tgz",
                                                          {"cri-dockerd/cri-dockerd": stub}))
    return root / "source"


def _words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:
        return []


def _probe_ok(script: str) -> str:
    """Preflight's host probe: every command present, ports free, clock in step, peers reachable."""
    lines = [f"cmd_{c}=1" for c in re.findall(r"command -v (\S+) >/dev/null 2>&1 && echo cmd_", script)]
    lines += ["listen=22", "dns_self=1", "have_bash=1", f"now={time.time()}"]
    lines += [f"reach_{p}_{port}=refused" for p, port in dict.fromkeys(re.findall(r"reach_(\w+)_(\d+)\b", script))]
    return "\n".join(lines) + "\n"


@dataclass
class FakeCluster:
    """What the hosts answer: etcd healthy once its units started, the apiserver ready after kubeadm init."""

    cluster: Cluster
    fleet: MemoryFleet
    api_up: bool = False
    etcd_started: set[str] = field(default_factory=set)
    installed: dict[str, set[str]] = field(default_factory=dict)

    def install(self) -> None:
        for host in self.fleet.hosts.values():
            host.on(r"cmd_sh=", lambda h, m, s: (0, _probe_ok(m.string), ""))
            host.on(r"apt-get install -y (.+)$", self._apt_install)
            host.on(r"^dpkg-query -W ", self._dpkg_query)
            host.on(r"^cat -- (.+)$", self._cat)
            host.on(r"systemctl .*start.* etcd", self._etcd_start)
            host.on(r"etcdctl .*endpoint health", self._etcd_health)
            host.on(r"^kubeadm (init|join)", self._kubeadm)
            host.on(r"--raw=/readyz", lambda h, m, s: (0, "ok", "") if self.api_up else (1, "", "refused"))
            host.on(r"get pods -n kube-system -l tier=control-plane -o json", self._pods)
            host.on(r"get nodes -o json", self._nodes)
            host.on(r"^test -f /etc/kubernetes/kubelet.conf", lambda h, m, s: (
                0 if any(c.startswith(("kubeadm join", "kubeadm init")) for c in h.commands) else 1, "", ""))

    def _apt_install(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        # apt-get installs name, name=version and name:arch as the package ``name``.
        for word in _words(m.group(1)):
            self.installed.setdefault(h.name, set()).add(re.split(r"[=:]", word, maxsplit=1)[0])
        return 0, "", ""

    def _dpkg_query(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        # Like dpkg-query -W: each argument is a package name pattern (an ':arch' suffix qualifies it); a
        # pattern matching no installed package is an error on stderr.
        have = self.installed.get(h.name, set())
        words = _words(m.string.removesuffix(" 2>/dev/null"))
        out, err = [], []
        for pattern in words[3:]:
            name = pattern.split(":", 1)[0]
            if name in have:
                out.append(f"{name}\tii \n")
            else:
                err.append(f"dpkg-query: no packages found matching {pattern}\n")
        return (0 if not err else 1), "".join(out), "".join(err)

    def _cat(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        words = _words(m.string)
        path = words[2] if len(words) == 3 else ""
        if path in h.files:
            return 0, h.files[path].decode(errors="replace"), ""
        return 1, "", f"cat: {path}: No such file or directory"

    def _etcd_start(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        self.etcd_started.add(h.name)
        return 0, "", ""

    def _etcd_health(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        members = self.cluster.spec.role_groups.etcd
        if not set(members) <= self.etcd_started:
            return 1, "", "context deadline exceeded"
        return 0, json.dumps([{"endpoint": f"https://{n}:2379", "health": True} for n in members]), ""

    def _kubeadm(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        if m.group(1) == "init":
            self.api_up = True
        return 0, "", ""

    def _pods(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        items = [{"metadata": {"labels": {"component": c}}, "spec": {"nodeName": n},
                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}}
                 for n in self.cluster.spec.role_groups.control_plane
                 for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")]
        return 0, json.dumps({"items": items}), ""

    def _nodes(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        items = [{"metadata": {"name": host.name, "labels": {}},
                  "status": {"conditions": [{"type": "Ready", "status": "True"}]}} for host in self.cluster.spec.hosts]
        return 0, json.dumps({"items": items}), ""


@dataclass
class CreateRun:
    report: RunReport
    fleet: MemoryFleet
    events: list[Any]

    def hosts(self) -> list[MemoryHost]:
        return list(self.fleet.hosts.values())

    def commands(self) -> list[tuple[str, str]]:
        """(host, command) of every command sent, uploads left out."""
        return [(h.name, c) for h in self.hosts() for c in h.commands if not c.startswith("<put ")]

    def uploads(self) -> list[tuple[str, str, bytes]]:
        """(host, remote path, content) of every file written to a node or the deploy machine."""
        return [(h.name, path, data) for h in self.hosts() for path, data in h.files.items()]


def run_create(cluster: Cluster, **options: Any) -> CreateRun:
    """Run the whole create pipeline against in-memory hosts; the cluster's assets.localSource must be set."""
    fleet = MemoryFleet([h.name for h in cluster.spec.hosts])
    assert DEPLOY in fleet.hosts
    FakeCluster(cluster, fleet).install()
    opts = RunOptions(**options)
    events: list[Any] = []
    run = RunContext(cluster, opts, bus=EventBus([events.append]),
                     pool=ConnectionPool(cluster, opts.connect, factory=fleet.factory))
    report = asyncio.run(Executor(run).run_pipeline(CREATE_CLUSTER))
    return CreateRun(report, fleet, events)

"""`config sync`/`config diff` on in-memory nodes: the diff names exactly the changed files per node with secrets
masked and changes nothing; the sync goes one node at a time and stops at the first unhealthy node."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from typing import Any

from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import Executor, RunContext, RunOptions
from kubexm.engine.executor import RunReport
from kubexm.governance.impact import Masker
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.config_sync import CONFIG_SYNC, DIFF_KEY, Synced, node_steps, wanted_files
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.state.redact import REDACTED
from kubexm.steps.os import SYSCTL_FILE
from kubexm.steps.runtime import CONFIG

BASE = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: sync}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
    - {name: n2, address: 10.0.0.2}
    - {name: n3, address: 10.0.0.3}
  roleGroups: {etcd: [n1, n2, n3], control-plane: [n1], worker: [n2, n3]}
  kubernetes: {proxyMode: iptables}
"""
CHANGED = BASE + """\
  containerRuntime:
    registryMirrors:
      - {registry: quay.io, endpoints: ["https://10.0.0.250:5000"]}
  system:
    sysctl: {net.ipv4.tcp_keepalive_time: "600"}
"""
NODES = ("n1", "n2", "n3")
HOSTS_TOML = "/etc/containerd/certs.d/quay.io/hosts.toml"


def cluster(text: str) -> Cluster:
    return parse_cluster(text)


def _sha_many(host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
    import hashlib

    out = [f"{hashlib.sha256(host.files[p]).hexdigest()}  {p}" for p in shlex.split(m.group(1)) if p in host.files]
    return (0 if out else 1), "".join(line + "\n" for line in out), ""


class FakeNode:
    """Just enough of a running node: files in memory, a kernel's sysctl values, a runtime that answers (or
    not), etcd members that report healthy."""

    def __init__(self, host: MemoryHost, members: int) -> None:
        self.host = host
        self.sysctl: dict[str, str] = {"net.ipv4.tcp_keepalive_time": "7200", "net.ipv4.ip_forward": "1",
                                       "net.bridge.bridge-nf-call-iptables": "1",
                                       "net.bridge.bridge-nf-call-ip6tables": "1"}
        self.runtime_ok = True
        self.readonly: set[str] = set()  # keys /proc/sys does not let this node write
        host.files["/usr/bin/containerd"] = b"\x7fELF"
        host.files["/usr/local/bin/etcd"] = b"\x7fELF etcd"
        host.on(r"^sha256sum ([^;]+?) 2>/dev/null$", _sha_many)
        host.on(r"; echo ---; cut -d' ' -f1 /proc/modules$", self._modules)
        host.on(r"^cat -- (\S+)$", self._cat)
        host.on(r"printf '%s=' ", self._live)
        host.on(r"test -w ", lambda h, m, s: (0, "".join(f"{k}\n" for k in re.findall(r"printf '%s\\n' (\S+)",
                                                                                      m.string)
                                                          if k not in self.readonly), ""))
        host.on(r"^sysctl -q -w (\S+)=(.*)$", self._set)
        host.on(r"systemctl cat -- containerd", self._probe)
        host.on(r"etcdctl .*endpoint health --cluster",
                lambda h, m, s: (0, json.dumps([{"endpoint": f"https://10.0.0.{i}:2379", "health": True}
                                                for i in range(1, members + 1)]), ""))

    def _cat(self, host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
        path = shlex.split(m.group(1))[0]
        return (0, host.files[path].decode(), "") if path in host.files else (1, "", "No such file")

    def _modules(self, host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
        listed = host.files.get("/etc/modules-load.d/kubexm.conf", b"").decode()
        return 0, f"{listed}---\noverlay\nbr_netfilter\nnf_conntrack\n", ""

    def _live(self, host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
        keys = re.findall(r"printf '%s=' (\S+);", m.string)
        return 0, "".join(f"{k}={self.sysctl.get(k, '')}\n" for k in keys), ""

    def _set(self, host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
        self.sysctl[m.group(1)] = m.group(2)
        return 0, "", ""

    def _probe(self, host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
        return 0, f"containerd={'ok' if self.runtime_ok else 'silent'}\nkubelet=absent\n", ""


def fleet_for(spec: Cluster) -> tuple[MemoryFleet, dict[str, FakeNode]]:
    """Nodes as `create cluster` left them for ``spec``: every file the sync steps keep, in place."""
    fleet = MemoryFleet(list(NODES))
    nodes = {n: FakeNode(fleet[n], 3) for n in NODES}
    run = RunContext(spec, RunOptions())
    for name in NODES:
        for step in node_steps(run.host(name)):
            inner = step.inner if isinstance(step, Synced) else step
            declared = inner.check_files(run.host(name)) or {}  # the modes kubexm's own steps give the files
            for path, data in wanted_files(step, run.host(name)).items():
                fleet[name].files[path] = data
                fleet[name].modes[path] = declared[path].mode if path in declared else 0o644
    return fleet, nodes


def run_sync(spec: Cluster, fleet: MemoryFleet, **extra: Any) -> tuple[RunReport, dict[str, Any]]:
    options = RunOptions(dry_run=bool(extra.pop("dry_run", False)), extra=dict(extra))
    run = RunContext(spec, options, pool=ConnectionPool(spec, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(run).run_pipeline(CONFIG_SYNC))
    return report, run.shared


def puts(host: MemoryHost) -> list[str]:
    return [c for c in host.commands if c.startswith("<put ")]


def test_an_unchanged_spec_has_nothing_to_sync() -> None:
    spec = cluster(BASE)
    fleet, _ = fleet_for(spec)
    report, shared = run_sync(spec, fleet, dry_run=True)
    assert report.ok, [r.message for r in report.failures]
    assert shared.get(DIFF_KEY, {}) == {}
    assert report.count("would-change") == 0


def test_diff_shows_exactly_the_mirror_and_the_sysctl_on_every_node_and_changes_nothing() -> None:
    fleet, _ = fleet_for(cluster(BASE))
    report, shared = run_sync(cluster(CHANGED), fleet, dry_run=True)
    assert report.ok, [r.message for r in report.failures]
    diffs = shared[DIFF_KEY]
    assert list(diffs) == list(NODES)
    for node in NODES:
        changes = {c["path"]: c["diff"] for c in diffs[node]}
        assert set(changes) == {HOSTS_TOML, SYSCTL_FILE, "sysctl net.ipv4.tcp_keepalive_time"}, changes
        assert "--- /dev/null" in changes[HOSTS_TOML] and "+[host.\"https://10.0.0.250:5000\"]\n" in changes[HOSTS_TOML]
        assert "+net.ipv4.tcp_keepalive_time = 600\n" in changes[SYSCTL_FILE]
        assert changes["sysctl net.ipv4.tcp_keepalive_time"] == ("-net.ipv4.tcp_keepalive_time = 7200\n"
                                                                  "+net.ipv4.tcp_keepalive_time = 600\n")
        assert puts(fleet[node]) == []  # a diff writes nothing


def test_diff_masks_registry_secrets_old_and_new() -> None:
    import base64

    old = BASE + "  registry:\n    auths:\n      - {registry: r.example, username: bob, password: old-Secret-1}\n"
    only_secret = BASE + "  registry:\n    auths:\n      - {registry: r.example, username: bob, password: new-Secret-2}\n"
    and_user = BASE + "  registry:\n    auths:\n      - {registry: r.example, username: alice, password: new-Secret-2}\n"
    secrets = ["old-Secret-1", "new-Secret-2", *(base64.b64encode(f"{u}:{p}".encode()).decode()
                                                for u in ("bob", "alice") for p in ("old-Secret-1", "new-Secret-2"))]
    fleet, _ = fleet_for(cluster(old))
    report, shared = run_sync(cluster(only_secret), fleet, dry_run=True)
    assert report.ok
    text = json.dumps(shared[DIFF_KEY])
    assert not [s for s in secrets if s in text]
    # Only the password changes: each file says so instead of showing a diff of two masked, equal texts.
    changes = {c["path"]: c for c in shared[DIFF_KEY]["n1"]}
    assert set(changes) == {CONFIG, "/var/lib/kubelet/config.json"}
    assert all(c["diff"] == "" and c["note"] == "only a secret value changes (not shown)" for c in changes.values())

    report, shared = run_sync(cluster(and_user), fleet, dry_run=True)
    text = json.dumps(shared[DIFF_KEY])
    assert report.ok and not [s for s in secrets if s in text]
    config = next(c for c in shared[DIFF_KEY]["n1"] if c["path"] == CONFIG)
    assert '+' in config["diff"] and "alice" in config["diff"] and REDACTED in config["diff"], config
    # A secret-looking key's value is hidden even when the spec does not hold it (an old one on the node).
    assert Masker().text('          password = "anything"') == f'          password = "{REDACTED}"'


def test_sync_applies_node_by_node_and_a_second_diff_is_empty() -> None:
    fleet, nodes = fleet_for(cluster(BASE))
    report, _ = run_sync(cluster(CHANGED), fleet)
    assert report.ok, [r.message for r in report.failures]
    order = [r.host for r in report.records if r.task == "SyncNodeSettings"]
    assert [h for i, h in enumerate(order) if i == 0 or order[i - 1] != h] == list(NODES)
    for node in NODES:
        mine = [r for r in report.records if r.task == "SyncNodeSettings" and r.host == node]
        assert mine[-1].step == "NodeHealthy" and mine[-1].status == "ok"
        assert {r.step for r in mine if r.status == "changed"} == {"ContainerdConfig", "Sysctl"}
        assert b"https://10.0.0.250:5000" in fleet[node].files[HOSTS_TOML]
        assert nodes[node].sysctl["net.ipv4.tcp_keepalive_time"] == "600"
        # A mirror is read per pull from certs.d: containerd is not restarted for it.
        assert not any("systemctl restart" in c for c in fleet[node].commands)
    _, shared = run_sync(cluster(CHANGED), fleet, dry_run=True)
    assert shared.get(DIFF_KEY, {}) == {}


def test_sync_stops_at_the_first_unhealthy_node_and_names_it() -> None:
    fleet, nodes = fleet_for(cluster(BASE))
    nodes["n2"].runtime_ok = False
    report, _ = run_sync(cluster(CHANGED), fleet, health_timeout=0)
    assert not report.ok
    (failure,) = report.failures
    assert failure.host == "n2" and failure.step == "NodeHealthy"
    assert "n2 is unhealthy after its change: containerd is not answering" in failure.message
    assert "no further node was changed" in failure.message
    assert puts(fleet["n1"]) and puts(fleet["n2"])
    assert puts(fleet["n3"]) == [] and HOSTS_TOML not in fleet["n3"].files


def test_a_key_the_node_cannot_write_is_not_a_change() -> None:
    fleet, nodes = fleet_for(cluster(BASE))
    nodes["n2"].sysctl["net.ipv4.ip_forward"] = "0"
    nodes["n2"].readonly.add("net.ipv4.ip_forward")
    report, shared = run_sync(cluster(BASE), fleet, dry_run=True)
    assert report.ok and shared.get(DIFF_KEY, {}) == {}
    nodes["n2"].readonly.clear()
    _, shared = run_sync(cluster(BASE), fleet, dry_run=True)
    assert shared[DIFF_KEY]["n2"][0]["diff"] == "-net.ipv4.ip_forward = 0\n+net.ipv4.ip_forward = 1\n"


def test_kubelet_configuration_keeps_kubeadms_fields_and_restarts_kubelet_where_it_runs() -> None:
    from ruamel.yaml import YAML

    from kubexm.kube.kubeadm import dump_go_yaml, kubelet_configuration
    from kubexm.pipelines.config_sync import KUBELET_CONFIG

    base = cluster(BASE)
    fleet, _ = fleet_for(base)
    written_by_kubeadm = {**YAML(typ="safe").load("authentication: {x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}}\n"
                                                  "staticPodPath: /etc/kubernetes/manifests\n"),
                          **kubelet_configuration(base)}
    fleet["n2"].files["/usr/local/bin/kubelet"] = b"\x7fELF kubelet"
    fleet["n2"].files[KUBELET_CONFIG] = dump_go_yaml([written_by_kubeadm]).encode()
    more_pods = cluster(BASE.replace("kubernetes: {proxyMode: iptables}", "kubernetes: {proxyMode: iptables, maxPods: 200}"))
    _, shared = run_sync(more_pods, fleet, dry_run=True)
    assert list(shared[DIFF_KEY]) == ["n2"]  # the only node running kubelet
    (change,) = shared[DIFF_KEY]["n2"]
    assert change["path"] == KUBELET_CONFIG
    assert [ln for ln in change["diff"].splitlines() if ln[:1] in "+-" and ln[:3] not in ("+++", "---")] == \
        ['-"maxPods": 110', '+"maxPods": 200']
    report, _ = run_sync(more_pods, fleet)
    assert report.ok, [r.message for r in report.failures]
    now = YAML(typ="safe").load(fleet["n2"].files[KUBELET_CONFIG].decode())
    assert now["maxPods"] == 200 and now["authentication"]["x509"]["clientCAFile"] == "/etc/kubernetes/pki/ca.crt"
    assert any("systemctl restart -- kubelet" in c for c in fleet["n2"].commands)
    assert not any("kubelet" in c and "restart" in c for n in ("n1", "n3") for c in fleet[n].commands)

"""Hostile values reach kubectl/kubeadm/helm as one word; Go-read YAML keeps strings strings; kubeadm init/join
are not retried blindly; a dry run of a new cluster plans instead of failing."""

from __future__ import annotations

import asyncio
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml as pyyaml  # PyYAML reads YAML 1.1, as kubeadm, kubelet and kubectl (go-yaml) do
from support.memory import MemoryFleet, assert_parses

from kube.join_probe import PROBE, node_answers
from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, Task, deploy_machine, role
from kubexm.errors import ConnectionFault
from kubexm.hosts.pool import ConnectionPool
from kubexm.kube import commands
from kubexm.kube.kubeadm import EVICTION_HARD, init_config, join_config, new_token
from kubexm.modules.addons import AddonsModule
from kubexm.modules.kubernetes import KubernetesModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.addons import RemoveAddon, _values_yaml
from kubexm.steps.kubernetes import EnsureKubernetesPKI, KubeadmInit, KubeadmJoin, PlaceKubernetesCerts

HOSTILE = ["-rf", "a b", "x;touch /tmp/pwned", "$(id)", "`id`", "a'b\"c", "no\nyes", "--all", "*", "é"]


def shell_words(text: str) -> list[str]:
    """The words a POSIX shell sees, operators split off (``'a b';`` is the word ``a b`` then ``;``)."""
    lexer = shlex.shlex(text, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    return list(lexer)


def run(c: Cluster, fleet: MemoryFleet, tasks: list[Any], **opts: Any) -> Any:
    options = RunOptions(**opts)
    events: list[Any] = []
    ctx = RunContext(c, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(ctx).run_tasks(tasks))
    report.events = events
    return report


@pytest.mark.parametrize("name", HOSTILE)
def test_node_and_label_values_are_one_word_after_double_dash(name: str) -> None:
    for cmd in (commands.cordon(name), commands.uncordon(name), commands.drain(name, 30, 60, True),
                commands.delete_node(name), commands.get_node(name), commands.label_node(name, {"team": name})):
        assert_parses(cmd.text)
        words = shlex.split(cmd.text)
        assert words[:3] == ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
        assert words[words.index("--") + 1] == name, cmd.text
    assert shlex.split(commands.label_node(name, {"team": name}).text)[-1] == f"team={name}"
    assert commands.get_node(name).readonly


@pytest.mark.parametrize("name", HOSTILE)
def test_addon_release_values_are_one_word(name: str) -> None:
    upgrade = commands.helm_upgrade(name, name, name, f"/etc/kubexm/addons/{name}-values.yaml", name, name)
    assert_parses(upgrade.text)
    words = shlex.split(upgrade.text)
    assert words[-3:] == ["--", name, name] and words[words.index("--namespace") + 1] == name
    assert words[words.index("--version") + 1] == name and words[words.index("--repo") + 1] == name
    for cmd in (commands.helm_uninstall(name, name), commands.helm_status(name, name)):
        assert_parses(cmd.text)
        assert shlex.split(cmd.text)[-2:] == ["--", name]
    assert commands.helm_status(name, name).readonly
    reset = commands.reset(name)
    assert_parses(reset.text)
    words = shell_words(reset.text)
    assert words[words.index("--cri-socket") + 1] == name


def test_check_commands_are_verified_read_only() -> None:
    for cmd in (commands.apiserver_readyz(), commands.kubectl_get("nodes", "-o", "json"),
                commands.manifest_present("/etc/kubexm/addons/x.yaml"), commands.unit_active("kubelet.service"),
                commands.kubectl("version", "-o", "json", readonly=True)):
        assert cmd.readonly, cmd.text
    from kubexm.hosts.shell import UnsafeCommand

    with pytest.raises(UnsafeCommand):
        commands.kubectl("delete", "node", "x", readonly=True)


@pytest.mark.parametrize("name", ["../../etc/passwd", "-rf", "a b", "x;id", "Upper"])
def test_delete_addon_refuses_a_name_that_is_not_a_label(name: str) -> None:
    c = parse_cluster(sample_config("ad"))
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    task = Task("RemoveAddon", [RemoveAddon(name)], hosts=role("control-plane"))
    report = run(c, fleet, [(Module("M", [task]), task)])
    assert not report.ok
    message = report.failures[0].message
    assert "is not a DNS-1123 label" in message and "\n" not in message
    assert not [x for x in fleet["master1"].commands if "rm " in x or "helm" in x or "kubectl" in x]


def cluster_with_worker_named(name: str, extra: str = "") -> Cluster:
    text = sample_config("ha", with_ha=True).replace("worker1", name)
    return parse_cluster(text + extra)


def test_join_configuration_keeps_yaml_11_words_strings() -> None:
    c = cluster_with_worker_named("no")
    c.spec.kubernetes.kubelet_extra_args = {"node-labels": "on", "v": "0x1f", "y": "012"}
    text = join_config(c, c.host("no"), new_token(), "sha256:ab", "192.168.0.10:6443", False)
    assert 'name: "no"' in text or '"name": "no"' in text
    jc = pyyaml.safe_load(text)
    assert jc["nodeRegistration"]["name"] == "no"
    args = {a["name"]: a["value"] for a in jc["nodeRegistration"]["kubeletExtraArgs"]}
    assert args == {"node-ip": "192.168.0.14", "node-labels": "on", "v": "0x1f", "y": "012"}
    # v1beta3 (a map of extra args): the keys are quoted too.
    old = cluster_with_worker_named("no")
    old.spec.kubernetes.version = "v1.30.4"
    old.spec.kubernetes.kubelet_extra_args = {"y": "off"}
    jc = pyyaml.safe_load(join_config(old, old.host("no"), new_token(), "sha256:ab", "lb:6443", False))
    assert jc["nodeRegistration"]["kubeletExtraArgs"] == {"node-ip": "192.168.0.14", "y": "off"}
    assert jc["nodeRegistration"]["name"] == "no"


def test_init_configuration_documents_parse_the_same_in_yaml_11() -> None:
    c = cluster_with_worker_named("no")
    c.spec.kubernetes.api_server_extra_args = {"audit-log-maxage": "1e3", "profiling": "off"}
    text = init_config(c, c.host("master1"), new_token(), "192.168.0.10:6443")
    from ruamel.yaml import YAML

    # What kubexm meant (YAML 1.2) is what a Go program reads (YAML 1.1), document by document.
    assert list(pyyaml.safe_load_all(text)) == list(YAML(typ="safe").load_all(text))
    cc = next(d for d in pyyaml.safe_load_all(text) if d["kind"] == "ClusterConfiguration")
    args = {a["name"]: a["value"] for a in cc["apiServer"]["extraArgs"]}
    assert args["audit-log-maxage"] == "1e3" and args["profiling"] == "off"


def test_kubelet_eviction_lists_every_default_signal() -> None:
    c = cluster_with_worker_named("worker1")
    docs = {d["kind"]: d for d in pyyaml.safe_load_all(init_config(c, c.host("master1"), new_token(), "x:6443"))}
    eviction = docs["KubeletConfiguration"]["evictionHard"]
    assert set(eviction) == {"memory.available", "nodefs.available", "nodefs.inodesFree", "imagefs.available",
                             "imagefs.inodesFree", "pid.available"}
    assert eviction == EVICTION_HARD and all(isinstance(v, str) for v in eviction.values())


def test_helm_values_keep_strings_strings() -> None:
    values = pyyaml.safe_load(_values_yaml({"a": "no", "b": True, "c": 3, "on": ["y", "~"]}))
    assert values == {"a": "no", "b": True, "c": 3, "on": ["y", "~"]}


def proxy_config_kube_proxy_reads(version: str, kubernetes: str) -> dict[str, Any]:
    """The KubeProxyConfiguration of the `kubeadm init` file rendered from a cluster file with this version and
    these lines in place of ``proxyMode: ipvs``, read back as go-yaml (YAML 1.1) reads it."""
    text = sample_config("nft").replace("version: v1.33.7", f"version: {version}").replace(
        "    proxyMode: ipvs\n", kubernetes)
    c = parse_cluster(text)
    docs = list(pyyaml.safe_load_all(init_config(c, c.host("master1"), new_token(), "192.168.0.10:6443")))
    (proxy,) = [d for d in docs if d["kind"] == "KubeProxyConfiguration"]
    return dict(proxy)


@pytest.mark.parametrize(("version", "gates", "want"), [
    # alpha in v1.29/v1.30: kube-proxy refuses mode nftables unless its own configuration enables the gate
    # (the spec validation insists the cluster file names the gate for these versions)
    ("v1.30.4", "{NFTablesProxyMode: true}", {"NFTablesProxyMode": True}),
    ("v1.29.9", "{NFTablesProxyMode: true, SidecarContainers: true}",
     {"NFTablesProxyMode": True, "SidecarContainers": True}),
    # on by default from v1.31: no gate needed, the cluster's own gates still reach kube-proxy
    ("v1.31.2", "", None),
    ("v1.33.7", "{SidecarContainers: false}", {"SidecarContainers": False}),
])
def test_kube_proxy_gets_the_nftables_gate_where_its_version_needs_it(version: str, gates: str,
                                                                     want: dict[str, bool] | None) -> None:
    lines = "    proxyMode: nftables\n" + (f"    featureGates: {gates}\n" if gates else "")
    proxy = proxy_config_kube_proxy_reads(version, lines)
    assert proxy["mode"] == "nftables"
    assert proxy.get("featureGates") == want
    if want:
        assert all(isinstance(v, bool) for v in proxy["featureGates"].values())  # booleans, not "true"


def test_the_nftables_gate_is_on_even_when_only_the_builder_knows_it_is_needed() -> None:
    from kubexm.kube.kubeadm import kube_proxy_configuration

    c = cluster_with_worker_named("worker1")
    c.spec.kubernetes.proxy_mode = "nftables"
    c.spec.kubernetes.version = "v1.30.4"  # set after validation: the spec names no gate
    assert kube_proxy_configuration(c)["featureGates"] == {"NFTablesProxyMode": True}


def test_kube_proxy_without_nftables_mode_is_not_gated_and_old_versions_are_refused() -> None:
    from kubexm.errors import KubexmError
    from kubexm.kube.kubeadm import kube_proxy_configuration

    c = cluster_with_worker_named("worker1")
    c.spec.kubernetes.version = "v1.30.4"
    assert "featureGates" not in kube_proxy_configuration(c)  # ipvs: nothing to enable
    c.spec.kubernetes.proxy_mode = "nftables"
    c.spec.kubernetes.version = "v1.28.9"  # past the spec's validation: the builder refuses on its own too
    with pytest.raises(KubexmError, match=r"nftables needs Kubernetes v1\.29"):
        kube_proxy_configuration(c)


def test_kubeadm_init_and_join_are_not_retried_after_a_transport_fault(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    assert KubeadmInit.retryable is False and KubeadmJoin.retryable is False
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    c = parse_cluster(sample_config("rt"))
    fleet = MemoryFleet(["master1", "worker1", "worker2"])

    def dropped(h: Any, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        raise ConnectionFault("worker1: connection reset")

    fleet["worker1"].on(r"^kubeadm join", dropped)
    fleet["worker1"].on(PROBE, node_answers(lambda h: (), lambda h: False))  # nothing of a join yet
    pki = Task("PKI", [EnsureKubernetesPKI()], hosts=deploy_machine())
    join = Task("Join", [KubeadmJoin()], hosts=role("worker"))
    module = Module("M", [pki, join])
    report = run(c, fleet, [(module, pki), (module, join)], retries=3, retry_backoff=0.0, nodes=["worker1"])
    assert [f.host for f in report.failures] == ["worker1"]
    assert "not retried automatically" in report.failures[0].message
    assert sum(1 for x in fleet["worker1"].commands if x.startswith("kubeadm join")) == 1


def fresh_fleet(names: list[str]) -> MemoryFleet:
    """Hosts where nothing of Kubernetes exists yet: every probe answers "absent"."""
    fleet = MemoryFleet(names)
    for name in names:
        host = fleet[name]
        host.on(r"^test -[fed] ", lambda h, m, s: (1, "", ""))
        host.on(r"^systemctl is-", lambda h, m, s: (3, "", ""))
        host.on(r"^kubectl ", lambda h, m, s: (1, "", "The connection to the server was refused"))
    return fleet


def test_dry_run_of_a_new_cluster_plans_kubernetes_and_addons(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    monkeypatch.setenv("KUBEXM_HOME", str(home))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    c = parse_cluster(sample_config("fresh"))
    names = ["master1", "worker1", "worker2"]
    fleet = fresh_fleet(names)
    tasks = [(m, t) for m in (KubernetesModule, AddonsModule) for t in m.tasks_for(c, set(), set())]
    report = run(c, fleet, tasks, dry_run=True)
    # Only failures of steps that belong to other parts (binaries) would be acceptable here; there are none.
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    status = {(r.host, r.step): r.status for r in report.records}
    assert status[("master1", "PlaceKubernetesCerts")] == "would-change"
    assert status[("master1", "KubeadmInit")] == "would-change"
    assert status[("worker1", "KubeadmJoin")] == "would-change"
    assert status[("deploy-machine", "EnsureKubernetesPKI")] == "would-change"
    assert status[("deploy-machine", "WriteAdminKubeconfig")] == "would-change"
    assert status[("master1", "WaitClusterHealthy")] == "not-applicable"
    assert all(s == "would-change" for (h, step), s in status.items() if step == "ApplyAddon")
    # Nothing written: no PKI, no kubeconfig on this machine, no file and no <put> on a node.
    assert not (home / "clusters" / "fresh" / "pki").exists()
    assert not (tmp_path / "kubeconfig").exists()
    for name in names:
        assert not fleet[name].files and not [x for x in fleet[name].commands if x.startswith("<put")]


def test_place_certs_and_kubeconfig_checks_answer_would_change_without_a_pki(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from kubexm.steps.kubernetes import WriteAdminKubeconfig, kubeconfig_path

    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    c = parse_cluster(sample_config("nopki"))
    fleet = fresh_fleet(["master1", "worker1", "worker2"])
    options = RunOptions()
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    assert asyncio.run(PlaceKubernetesCerts().check(ctx.host("master1"))) is False
    assert PlaceKubernetesCerts().check_digests(ctx.host("master1")) is None
    # A kubeconfig left from an earlier cluster of that name, but no PKI: rewritten, and the check issues nothing.
    path = kubeconfig_path(c)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("old\n")
    assert asyncio.run(WriteAdminKubeconfig().check(ctx.host("deploy-machine"))) is False
    assert not (tmp_path / "home" / "clusters" / "nopki" / "pki").exists()

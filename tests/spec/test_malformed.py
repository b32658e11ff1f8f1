"""Malformed cluster files: each gives one line naming FILE:LINE, the field path and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from kubexm.errors import SpecError
from kubexm.spec.loader import load_cluster, parse_cluster

GOOD = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: prod
spec:
  hosts:
    - name: node1
      address: 192.168.0.11
      user: root
    - name: node2
      address: 192.168.0.12
    - name: node3
      address: 192.168.0.13
  roleGroups:
    etcd: [node1]
    control-plane: [node1]
    worker: [node2, node3]
  kubernetes:
    version: v1.31.2
    podCidr: 10.233.64.0/18
    serviceCidr: 10.233.0.0/18
"""


def test_good_file_loads() -> None:
    cluster = parse_cluster(GOOD, "c.yaml")
    assert cluster.name == "prod"
    assert [h.name for h in cluster.hosts_with_role("worker")] == ["node2", "node3"]


# (replace this, with that, expected line, text that must appear)
CASES = [
    ("apiVersion: kubexm.io/v1alpha1", "apiVersion: v1", 1, "apiVersion: is 'v1', must be 'kubexm.io/v1alpha1'"),
    ("kind: Cluster", "kind: Clusters", 2, "kind: is 'Clusters', must be 'Cluster'"),
    ("  name: prod", "  name: Prod_1", 4, "metadata.name: must be lowercase"),
    ("metadata:\n  name: prod\n", "metadata: {}\n", 3, "metadata.name: is required but missing; add it"),
    ("      address: 192.168.0.12\n", "", 10, "spec.hosts[1].address: is required but missing"),
    ("      user: root", "      usr: root", 9, "spec.hosts[0].usr: unknown field 'usr'; did you mean 'user'?"),
    ("      user: root", "      port: 0", 9, "spec.hosts[0].port: must be greater than or equal to 1"),
    ("      user: root", "      port: 70000", 9, "spec.hosts[0].port: must be less than or equal to 65535"),
    ("      user: root", "      port: twenty-two", 9, "spec.hosts[0].port: must be a valid integer"),
    ("      user: root", "      connection: telnet", 9, "spec.hosts[0].connection: must be 'ssh' or 'local'"),
    ("      user: root", "      arch: ppc64le", 9, "spec.hosts[0].arch: must be 'amd64' or 'arm64'"),
    ("      user: root", "      internalAddress: 10.0.0.300", 9, "spec.hosts[0].internalAddress: '10.0.0.300' is not an IP address"),
    ("      user: root", "      labels: [a, b]", 9, "spec.hosts[0].labels: must be a valid dictionary"),
    ("    - name: node2", "    - name: Node_2", 10, "spec.hosts[1].name: must be lowercase"),
    ("    - name: node3", "    - name: node2", 12, "spec.hosts[2].name: 'node2' is used by 2 hosts"),
    ("      address: 192.168.0.13", "      address: 192.168.0.12", 13, "spec.hosts[2].address: 192.168.0.12:22 is listed for more than one host"),
    ("    worker: [node2, node3]", "    worker: [node2, node4]", 17, "spec.roleGroups.worker[1]: no host named 'node4'"),
    ("    etcd: [node1]", "    etcd: [node1, node2]", 15, "use an odd number"),
    ("    etcd: [node1]", "    etcd: []", 15, "spec.roleGroups.etcd: no etcd host"),
    ("    control-plane: [node1]", "    control-plane: []", 16, "spec.roleGroups.control-plane: no control-plane host"),
    ("    control-plane: [node1]", "    controlplane: [node1]", 16, "unknown field 'controlplane'; did you mean 'control-plane'?"),
    ("    control-plane: [node1]", "    control-plane: [node1, node2]", 5, "spec.controlPlaneEndpoint.loadBalancer: 'none' with 2 control-plane hosts"),
    ("    worker: [node2, node3]", "    worker: node2", 17, "spec.roleGroups.worker: must be a valid list"),
    ("    version: v1.31.2", "    version: 1.31", 19, "spec.kubernetes.version: must be text; quote the value"),
    ("    version: v1.31.2", "    version: v1.19.16", 19, "spec.kubernetes.version: v1.19.16 is not supported; kubexm deploys v1.22 to v1.34"),
    ("    version: v1.31.2", "    version: v2.0.0", 19, "spec.kubernetes.version: v2.0.0 is not supported"),
    ("    version: v1.31.2", "    version: '1.31'", 19, "spec.kubernetes.version: '1.31' is not a version like v1.32.4"),
    ("    podCidr: 10.233.64.0/18", "    podCidr: 10.233.64.1/18", 20, "spec.kubernetes.podCidr: '10.233.64.1/18' is not a network in CIDR form"),
    ("    podCidr: 10.233.64.0/18", "    podCidr: banana", 20, "spec.kubernetes.podCidr: 'banana' is not a network"),
    ("    serviceCidr: 10.233.0.0/18", "    serviceCidr: 10.233.64.0/20", 21, "spec.kubernetes.serviceCidr: 10.233.64.0/20 overlaps the pod network"),
    ("    podCidr: 10.233.64.0/18", "    podCidr: 192.168.0.0/24", 20, "contains host node1's address 192.168.0.11"),
    ("    version: v1.31.2", "    version: v1.31.2\n    proxyMode: userspace", 20, "spec.kubernetes.proxyMode: must be 'iptables', 'ipvs' or 'nftables'"),
    ("    version: v1.31.2", "    version: v1.31.2\n    maxPods: 5", 20, "spec.kubernetes.maxPods: must be greater than or equal to 10"),
    ("  kubernetes:", "  kubernets:", 18, "spec.kubernets: unknown field 'kubernets'; did you mean 'kubernetes'?"),
    ("  kubernetes:", "  etcd:\n    type: external\n  kubernetes:", 18, "spec.etcd.endpoints: etcd type 'external' needs the endpoints"),
    ("  kubernetes:", "  etcd:\n    type: etcdadm\n  kubernetes:", 19, "spec.etcd.type: must be 'kubexm', 'kubeadm' or 'external'"),
    ("  kubernetes:", "  controlPlaneEndpoint:\n    loadBalancer: kube-vip\n  kubernetes:", 18, "spec.controlPlaneEndpoint.address: loadBalancer 'kube-vip' needs the address"),
    ("  kubernetes:", "  controlPlaneEndpoint:\n    address: 10.0.0.999\n  kubernetes:", 19, "spec.controlPlaneEndpoint.address:"),
    ("  kubernetes:", "  network:\n    plugin: weave\n  kubernetes:", 19, "spec.network.plugin: must be 'calico', 'flannel', 'cilium' or 'none'"),
    ("  kubernetes:", "  containerRuntime:\n    type: rkt\n  kubernetes:", 19, "spec.containerRuntime.type: must be 'containerd', 'docker' or 'crio'"),
    ("      user: root", "      user: root\n      bastion: jump", 10, "spec.hosts[0].bastion: no bastion named 'jump'"),
    ("      user: root", "      privateKeyPassphrase: s3cret-phrase", 9, "spec.hosts[0].privateKeyPassphrase: set privateKeyPath too"),
    ("  hosts:\n", "  hosts: {}\n  old:\n", 6, "spec.hosts: must be a valid list"),
]


@pytest.mark.parametrize(("old", "new", "line", "text"), CASES, ids=[c[3][:50] for c in CASES])
def test_malformed(old: str, new: str, line: int, text: str) -> None:
    assert old in GOOD, old
    with pytest.raises(SpecError) as err:
        parse_cluster(GOOD.replace(old, new, 1), "cluster.yaml")
    problems = err.value.problems
    hits = [p for p in problems if text in p]
    assert hits, problems
    assert hits[0].startswith(f"cluster.yaml:{line}: "), hits[0]
    assert all("\n" not in p for p in problems)


def test_secret_values_never_echoed() -> None:
    bad = GOOD.replace("      user: root", "      password: [hunter2-secret]")
    with pytest.raises(SpecError) as err:
        parse_cluster(bad, "c.yaml")
    assert "hunter2-secret" not in str(err.value)
    assert "spec.hosts[0].password" in err.value.problems[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("", "the file is empty"),
    ("   \n# only a comment\n", "the file is empty"),
    ("- a\n- b\n", "must be a mapping"),
    ("apiVersion: [unclosed\n", "c.yaml:2: invalid YAML: expected ',' or ']'"),
    ("a: 1\na: 2\n", "duplicate key"),
    ("spec:\n  hosts:\n\t- name: x\n", "invalid YAML"),
])
def test_unparseable(text: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_cluster(text, "c.yaml")
    assert expected in str(err.value)


def test_missing_file_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as err:
        load_cluster(tmp_path / "nope.yaml")
    assert "no such file" in str(err.value)
    assert "kubexm create config" in (err.value.hint or "")
    with pytest.raises(SpecError, match="is a directory"):
        load_cluster(tmp_path)


def test_overrides() -> None:
    cluster = parse_cluster(GOOD, "c.yaml", overrides=[
        "spec.kubernetes.version=v1.30.1", "spec.hosts[1].port=2222", "spec.system.ntpServers=[a.example, b.example]",
        "metadata.labels.team=infra"])
    assert cluster.spec.kubernetes.version == "v1.30.1"
    assert cluster.spec.hosts[1].port == 2222
    assert cluster.spec.system.ntp_servers == ["a.example", "b.example"]
    assert cluster.metadata.labels == {"team": "infra"}


@pytest.mark.parametrize(("item", "expected"), [
    ("spec.kubernetes.version", "expected key=value"),
    ("spec.hosts[9].port=1", "spec.hosts[9] does not exist"),
    ("spec.hosts[x].port=1", "'[x]' is not a list index"),
    ("spec..port=1", "empty path element"),
    ("spec.kubernetes.verison=v1.30.0", "unknown field 'verison'; did you mean 'version'?"),
    ("spec.hosts[0].port=abc", "spec.hosts[0].port: must be a valid integer"),
])
def test_bad_overrides(item: str, expected: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_cluster(GOOD, "c.yaml", overrides=[item])
    assert expected in str(err.value)


@pytest.mark.parametrize(("version", "gates", "expected"), [
    ("v1.28.15", "", "spec.kubernetes.proxyMode: kube-proxy v1.28.15 has no nftables mode"),
    ("v1.28.15", "    featureGates: {NFTablesProxyMode: true}\n", "has no nftables mode"),
    ("v1.29.4", "", "spec.kubernetes.proxyMode: nftables is alpha in v1.29.4; set spec.kubernetes.featureGates.NFTablesProxyMode"),
    ("v1.30.2", "    featureGates: {NFTablesProxyMode: false}\n", "nftables is alpha in v1.30.2"),
    ("v1.30.2", "    featureGates: {NFTablesProxyMode: true}\n", None),
    ("v1.31.2", "", None),
    ("v1.33.7", "", None),
])
def test_nftables_needs_a_kube_proxy_that_has_it(version: str, gates: str, expected: str | None) -> None:
    text = GOOD.replace("    version: v1.31.2\n", f"    version: {version}\n    proxyMode: nftables\n{gates}")
    if expected is None:
        assert parse_cluster(text, "c.yaml").spec.kubernetes.proxy_mode == "nftables"
        return
    with pytest.raises(SpecError) as err:
        parse_cluster(text, "c.yaml")
    (problem,) = err.value.problems
    assert problem.startswith("c.yaml:20: ") and expected in problem, problem

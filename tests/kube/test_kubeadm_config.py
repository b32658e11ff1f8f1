"""kubeadm configuration per API version, parsed back; discovery hash and kubeconfig checked with real tools."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from ruamel.yaml import YAML

from kubexm.kube.kubeadm import ca_cert_hash, init_config, join_config, new_token, token_config
from kubexm.pki import PKI
from kubexm.pki.layout import CA, kubeconfig_specs
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.kubernetes import merge_kubeconfig


def cluster(version: str = "v1.33.7", extra: str = "", etcd: str = "kubexm") -> Cluster:
    text = sample_config("ha", with_ha=True).replace("version: v1.33.7", f"version: {version}")
    text = text.replace("type: kubexm ", f"type: {etcd} ")
    return parse_cluster(text + extra)


def docs(text: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in YAML(typ="safe").load_all(text)}


def test_v1beta3_for_130_and_v1beta4_for_131_and_later() -> None:
    old = docs(init_config(cluster("v1.30.4"), cluster("v1.30.4").host("master1"), new_token(), "192.168.0.10:6443"))
    assert old["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta3"
    assert old["ClusterConfiguration"]["apiServer"]["extraArgs"]["bind-address"] == "0.0.0.0"  # a map
    assert old["ClusterConfiguration"]["apiServer"]["timeoutForControlPlane"] == "4m0s"
    c = cluster("v1.33.7")
    new = docs(init_config(c, c.host("master1"), new_token(), "192.168.0.10:6443"))
    assert new["InitConfiguration"]["apiVersion"] == "kubeadm.k8s.io/v1beta4"
    assert {"name": "bind-address", "value": "0.0.0.0"} in new["ClusterConfiguration"]["apiServer"]["extraArgs"]
    assert new["InitConfiguration"]["timeouts"]["controlPlaneComponentHealthCheck"] == "4m0s"
    assert "timeoutForControlPlane" not in new["ClusterConfiguration"]["apiServer"]
    assert new["ClusterConfiguration"]["encryptionAlgorithm"] == "RSA-2048"


def test_cluster_configuration_follows_the_spec() -> None:
    c = cluster()
    c.spec.kubernetes.feature_gates = {"InPlacePodVerticalScaling": True}
    c.spec.registry.private_registry = "reg.internal:5000"
    conf = docs(init_config(c, c.host("master1"), new_token(), "192.168.0.10:6443"))
    cc = conf["ClusterConfiguration"]
    assert cc["kubernetesVersion"] == "v1.33.7" and cc["controlPlaneEndpoint"] == "192.168.0.10:6443"
    assert cc["networking"] == {"podSubnet": "10.233.64.0/18", "serviceSubnet": "10.233.0.0/18",
                                "dnsDomain": "cluster.local"}
    assert cc["etcd"]["external"]["endpoints"] == [f"https://192.168.0.1{i}:2379" for i in (1, 2, 3)]
    assert cc["etcd"]["external"]["certFile"] == "/etc/kubernetes/pki/apiserver-etcd-client.crt"
    assert {"192.168.0.10", "192.168.0.11", "lb.kubexm.local", "10.233.0.1"} <= set(cc["apiServer"]["certSANs"])
    assert cc["imageRepository"] == "reg.internal:5000"
    for component in ("apiServer", "controllerManager", "scheduler"):
        assert {"name": "feature-gates", "value": "InPlacePodVerticalScaling=true"} in cc[component]["extraArgs"]
    init = conf["InitConfiguration"]
    assert init["localAPIEndpoint"] == {"advertiseAddress": "192.168.0.11", "bindPort": 6443}
    assert init["nodeRegistration"]["criSocket"] == "unix:///run/containerd/containerd.sock"
    assert init["nodeRegistration"]["taints"][0]["key"] == "node-role.kubernetes.io/control-plane"
    kubelet = conf["KubeletConfiguration"]
    assert kubelet["cgroupDriver"] == "systemd" and kubelet["clusterDNS"] == ["10.233.0.10"]
    assert kubelet["featureGates"] == {"InPlacePodVerticalScaling": True}
    assert conf["KubeProxyConfiguration"]["mode"] == "ipvs" and conf["KubeProxyConfiguration"]["ipvs"]["strictARP"]


def test_stacked_etcd_and_cilium_without_kube_proxy() -> None:
    c = cluster(etcd="kubeadm", extra="")
    c.spec.network.plugin = "cilium"
    c.spec.network.cilium.kube_proxy_replacement = True
    conf = docs(init_config(c, c.host("master1"), new_token(), "192.168.0.10:6443"))
    assert conf["ClusterConfiguration"]["etcd"]["local"]["dataDir"] == "/var/lib/etcd"
    assert conf["InitConfiguration"]["skipPhases"] == ["addon/kube-proxy"]
    assert "KubeProxyConfiguration" not in conf


def test_join_configs_and_token_file(tmp_path: Path) -> None:
    c = cluster()
    token = new_token()
    assert len(token) == 23 and token[6] == "."
    worker = docs(join_config(c, c.host("worker1"), token, "sha256:ab", "192.168.0.10:6443", False))
    jc = worker["JoinConfiguration"]
    assert jc["discovery"]["bootstrapToken"] == {"apiServerEndpoint": "192.168.0.10:6443", "token": token,
                                                 "caCertHashes": ["sha256:ab"]}
    assert "controlPlane" not in jc and jc["nodeRegistration"]["taints"] == []
    cp = docs(join_config(c, c.host("master2"), token, "sha256:ab", "192.168.0.10:6443", True))
    assert cp["JoinConfiguration"]["controlPlane"]["localAPIEndpoint"]["advertiseAddress"] == "192.168.0.12"
    tok = docs(token_config(c, token))["InitConfiguration"]
    assert tok["bootstrapTokens"][0]["token"] == token and tok["bootstrapTokens"][0]["ttl"] == "1h0m0s"


def test_discovery_hash_matches_openssl(tmp_path: Path) -> None:
    pki = PKI(tmp_path)
    pki.ensure_ca(CA)
    ca = tmp_path / "ca.crt"
    # kubeadm's documented way to compute --discovery-token-ca-cert-hash.
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(ca)], capture_output=True, check=True)
    der = subprocess.run(["openssl", "pkey", "-pubin", "-outform", "der"], input=pub.stdout, capture_output=True,
                         check=True)
    digest = subprocess.run(["openssl", "dgst", "-sha256", "-hex"], input=der.stdout, capture_output=True, check=True)
    assert ca_cert_hash(ca.read_bytes()) == "sha256:" + digest.stdout.decode().split()[-1]


def test_admin_kubeconfig_is_accepted_by_kubectl_and_merges(tmp_path: Path) -> None:
    kubectl = "/usr/bin/kubectl"
    if not Path(kubectl).exists():
        pytest.fail("kubectl client missing: this machine kind ships one at /usr/bin/kubectl")
    c = cluster()
    pki = PKI(tmp_path / "pki")
    pki.ensure_ca(CA)
    text = pki.kubeconfig(kubeconfig_specs(c)["admin.conf"], c.name, "https://192.168.0.10:6443")
    target = tmp_path / "config"
    target.write_text("apiVersion: v1\nkind: Config\nclusters: [{name: other, cluster: {server: 'https://1.2.3.4'}}]\n"
                      "users: [{name: other, user: {token: x}}]\n"
                      "contexts: [{name: other, context: {cluster: other, user: other}}]\ncurrent-context: other\n")
    merge_kubeconfig(target, YAML(typ="safe").load(text), "kubexm-ha")
    merge_kubeconfig(target, YAML(typ="safe").load(text), "kubexm-ha")  # idempotent: still one entry
    assert target.stat().st_mode & 0o777 == 0o600
    res = subprocess.run([kubectl, "--kubeconfig", str(target), "config", "get-contexts", "-o", "name"],
                         capture_output=True, text=True, check=True)
    assert sorted(res.stdout.split()) == ["kubexm-ha", "other"]
    view = subprocess.run([kubectl, "--kubeconfig", str(target), "config", "view", "--minify", "--raw",
                           "--context", "kubexm-ha", "-o", "jsonpath={.clusters[0].cluster.server}"],
                          capture_output=True, text=True, check=True)
    assert view.stdout == "https://192.168.0.10:6443"
    # The client certificate in it chains to the cluster CA.
    cert = tmp_path / "client.crt"
    data = YAML(typ="safe").load(text)["users"][0]["user"]["client-certificate-data"]
    import base64

    cert.write_bytes(base64.b64decode(data))
    ok = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "pki" / "ca.crt"), str(cert)],
                        capture_output=True, text=True)
    assert ok.returncode == 0 and ": OK" in ok.stdout

"""Addon manifests validated against the target Kubernetes version's schemas; chart values parsed back."""

from __future__ import annotations

import json
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from kubexm.addons.dns import cluster_dns_ip, corefile, nodelocaldns_manifest
from kubexm.addons.images import rewrite_image
from kubexm.addons.network import calico_values, cilium_values, flannel_manifest, network_release
from kubexm.addons.release import enabled_addons
from kubexm.addons.storage import DEFAULT_ANNOTATION, local_path_manifest, storage_releases
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config


def cluster(extra: str = "", version: str = "v1.33.7") -> Cluster:
    return parse_cluster(sample_config("ad", with_ha=True).replace("version: v1.33.7", f"version: {version}") + extra)


def docs(text: str) -> list[dict[str, Any]]:
    return [d for d in YAML(typ="safe").load_all(text) if d]


def by_kind(text: str, kind: str) -> list[dict[str, Any]]:
    return [d for d in docs(text) if d["kind"] == kind]


def images(text: str) -> list[str]:
    out = []
    for d in docs(text):
        spec = d.get("spec", {})
        pod = spec.get("template", {}).get("spec", spec)
        out += [c["image"] for k in ("initContainers", "containers") for c in pod.get(k, []) or []]
    return out


@pytest.mark.parametrize("version", ["v1.30.4", "v1.33.7"])
def test_every_rendered_manifest_validates_for_the_target_version(version: str) -> None:
    c = cluster("  dns:\n    nodelocaldns: true\n", version)
    c.spec.network.plugin = "flannel"
    rendered = [r.manifest for r in enabled_addons(c) if r.manifest]
    assert len(rendered) == 3  # flannel, nodelocaldns, local-path
    for text in rendered:
        for doc in docs(text):
            kubernetes_validate.validate(doc, version.lstrip("v"), strict=True)


def test_flannel_follows_the_spec() -> None:
    c = cluster()
    c.spec.network.flannel.backend = "host-gw"
    c.spec.network.interface = "eth1"
    text = flannel_manifest(c)
    cm = by_kind(text, "ConfigMap")[0]
    net = json.loads(cm["data"]["net-conf.json"])
    assert net["Network"] == "10.233.64.0/18" and net["Backend"] == {"Type": "host-gw"}
    ds = by_kind(text, "DaemonSet")[0]["spec"]["template"]["spec"]
    assert "--iface=eth1" in ds["containers"][0]["args"]
    assert json.loads(cm["data"]["cni-conf.json"])["plugins"][0]["type"] == "flannel"


@pytest.mark.parametrize(("mode", "encap", "bgp"), [("ipip", "IPIP", "Enabled"), ("vxlan", "VXLAN", "Disabled"),
                                                    ("none", "None", "Enabled")])
def test_calico_values_per_mode(mode: str, encap: str, bgp: str) -> None:
    c = cluster()
    c.spec.network.calico.mode = mode  # type: ignore[assignment]
    c.spec.network.calico.mtu = 1440
    net = calico_values(c)["installation"]["calicoNetwork"]
    assert net["ipPools"][0]["cidr"] == "10.233.64.0/18" and net["ipPools"][0]["encapsulation"] == encap
    assert net["bgp"] == bgp and net["mtu"] == 1440 and net["nodeAddressAutodetectionV4"] == {"firstFound": True}
    release = network_release(c)
    assert release and release.chart == "tigera-operator" and release.chart_version == "v3.29.2"


def test_cilium_values_with_and_without_kube_proxy() -> None:
    c = cluster()
    c.spec.network.plugin = "cilium"
    assert cilium_values(c)["kubeProxyReplacement"] is False and "k8sServiceHost" not in cilium_values(c)
    c.spec.network.cilium.kube_proxy_replacement = True
    values = cilium_values(c)
    assert values["kubeProxyReplacement"] is True
    assert (values["k8sServiceHost"], values["k8sServicePort"]) == ("lb.kubexm.local", 8443)
    assert values["ipam"]["operator"]["clusterPoolIPv4PodCIDRList"] == ["10.233.64.0/18"]


def test_nodelocaldns_points_at_coredns_and_listens_locally() -> None:
    c = cluster("  dns:\n    nodelocaldns: true\n")
    assert cluster_dns_ip(c) == "10.233.0.10"
    ds = by_kind(nodelocaldns_manifest(c), "DaemonSet")[0]["spec"]["template"]["spec"]
    args = ds["containers"][0]["args"]
    assert args[args.index("-localip") + 1] == "169.254.25.10"  # ipvs: the Service IP lives on kube-ipvs0
    c.spec.kubernetes.proxy_mode = "iptables"
    args = by_kind(nodelocaldns_manifest(c), "DaemonSet")[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("-localip") + 1] == "169.254.25.10,10.233.0.10"
    assert "cluster.local:53 {" in corefile(c) and "bind 169.254.25.10" in corefile(c)
    c.spec.dns.upstream_servers = ["10.0.0.53"]
    assert "forward . 10.0.0.53" in corefile(c)
    from kubexm.kube.kubeadm import kubelet_cluster_dns

    assert kubelet_cluster_dns(c) == "169.254.25.10"


def test_exactly_one_default_storage_class() -> None:
    c = cluster("  storage:\n    nfs: {server: 10.0.0.5, path: /exports}\n    longhorn: true\n    openebs: true\n")
    defaults = []
    for r in storage_releases(c):
        if r.manifest:
            for sc in by_kind(r.manifest, "StorageClass"):
                if sc["metadata"].get("annotations", {}).get(DEFAULT_ANNOTATION) == "true":
                    defaults.append(sc["metadata"]["name"])
        else:
            v = r.values
            flag = (v.get("storageClass", {}).get("defaultClass") or v.get("persistence", {}).get("defaultClass")
                    or v.get("localpv-provisioner", {}).get("hostpathClass", {}).get("isDefaultClass"))
            if flag:
                defaults.append(r.name)
    assert defaults == ["local-path"]
    c.spec.storage.default_class = "longhorn"
    assert [r.name for r in storage_releases(c) if r.values.get("persistence", {}).get("defaultClass")] == ["longhorn"]
    assert DEFAULT_ANNOTATION not in local_path_manifest(c)
    cfg = json.loads(by_kind(local_path_manifest(c), "ConfigMap")[0]["data"]["config.json"])
    assert cfg["nodePathMap"][0]["paths"] == ["/opt/local-path-provisioner"]


def test_private_registry_rewrites_every_image() -> None:
    c = cluster("  dns:\n    nodelocaldns: true\n")
    c.spec.network.plugin = "flannel"
    c.spec.registry.private_registry = "reg.internal:5000"
    assert rewrite_image("docker.io/flannel/flannel:v0.26.4", c) == "reg.internal:5000/flannel/flannel:v0.26.4"
    assert rewrite_image("busybox:1.36", c) == "reg.internal:5000/library/busybox:1.36"
    assert rewrite_image("registry.k8s.io/dns/k8s-dns-node-cache:1.23.1", c) == \
        "reg.internal:5000/dns/k8s-dns-node-cache:1.23.1"
    c.spec.registry.namespace_override = "mirror"
    assert rewrite_image("quay.io/a/b:1", c) == "reg.internal:5000/mirror/b:1"
    c.spec.registry.namespace_override = None
    seen = []
    for r in enabled_addons(c):
        if r.manifest:
            seen += images(r.manifest)
            helper = [d for d in docs(r.manifest) if d["kind"] == "ConfigMap" and "helperPod.yaml" in d["data"]]
            for cm in helper:
                seen += [x["image"] for x in YAML(typ="safe").load(cm["data"]["helperPod.yaml"])["spec"]["containers"]]
    assert len(seen) >= 5 and all(i.startswith("reg.internal:5000/") for i in seen), seen
    calico = calico_values(cluster().model_copy(update={}))
    assert "registry" not in calico["installation"]


def test_nodelocaldns_reaches_coredns_the_way_the_proxy_mode_allows() -> None:
    c = cluster("  dns:\n    nodelocaldns: true\n")
    c.spec.kubernetes.proxy_mode = "iptables"
    # Holding kube-dns's own IP, the cache must reach CoreDNS through the separate upstream Service.
    assert "forward . __PILLAR__CLUSTER__DNS__ {" in corefile(c)
    assert "bind 169.254.25.10 10.233.0.10" in corefile(c)
    c.spec.kubernetes.proxy_mode = "ipvs"
    # In ipvs mode the Service IP sits on kube-ipvs0: link-local only, straight to CoreDNS's Service IP.
    assert "forward . 10.233.0.10 {" in corefile(c) and "__PILLAR__" not in corefile(c)
    assert "forward . /etc/resolv.conf" in corefile(c)  # no upstream servers in the spec: the node's own
    metrics = [s for s in by_kind(nodelocaldns_manifest(c), "Service") if s["metadata"]["name"] == "node-local-dns"]
    assert metrics and metrics[0]["spec"]["clusterIP"] == "None"


def test_calico_interface_is_anchored_and_private_registry_reaches_the_operator() -> None:
    c = cluster()
    c.spec.network.interface = "eth1"
    auto = calico_values(c)["installation"]["calicoNetwork"]["nodeAddressAutodetectionV4"]
    assert auto == {"interface": "^eth1$"}  # a bare "eth1" would also match eth10 and veth interfaces
    c.spec.registry.private_registry = "reg.internal:5000/"
    values = calico_values(c)
    assert values["installation"]["registry"] == "reg.internal:5000/"
    assert values["tigeraOperator"] == {"registry": "reg.internal:5000", "image": "tigera/operator"}

"""The network plugin: Flannel as a manifest kubexm renders; Calico (Tigera operator) and Cilium as charts.

Flannel is small and static enough to own its manifest; Calico and Cilium change their objects with every
release, so kubexm installs their official charts and only computes the values from the cluster file.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from kubexm.addons.images import dump_manifest, private_path, rewrite_image
from kubexm.addons.release import AddonRelease
from kubexm.spec.models import Cluster

FLANNEL_VERSION = "v0.26.4"
FLANNEL_CNI_PLUGIN_VERSION = "v1.6.2-flannel1"
FLANNEL_IMAGE = "docker.io/flannel/flannel"
FLANNEL_CNI_PLUGIN_IMAGE = "docker.io/flannel/flannel-cni-plugin"
FLANNEL_NAMESPACE = "kube-flannel"

# (repository URL, chart, version)
CALICO_CHART = ("https://docs.tigera.io/calico/charts", "tigera-operator", "v3.29.2")
CILIUM_CHART = ("https://helm.cilium.io", "cilium", "1.16.6")

# Upstream repositories of the images each chart deploys by default (rewritten for a private registry).
TIGERA_OPERATOR_IMAGE = "quay.io/tigera/operator"
CILIUM_IMAGES = {
    "agent": "quay.io/cilium/cilium",
    "operator": "quay.io/cilium/operator",  # the chart appends "-generic"
    "envoy": "quay.io/cilium/cilium-envoy",
}


def _pod_cidr_is_ipv6(cluster: Cluster) -> bool:
    return ipaddress.ip_network(cluster.spec.kubernetes.pod_cidr).version == 6


def _env_field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def flannel_net_conf(cluster: Cluster) -> dict[str, Any]:
    """flanneld's net-conf.json: the pod CIDR (the controller-manager's --cluster-cidr) and the backend."""
    cidr = cluster.spec.kubernetes.pod_cidr
    conf: dict[str, Any] = {"Network": cidr, "EnableNFTables": False,
                            "Backend": {"Type": cluster.spec.network.flannel.backend}}
    if _pod_cidr_is_ipv6(cluster):
        conf = {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": cidr, "EnableNFTables": False,
                "Backend": conf["Backend"]}
    return conf


def flannel_manifest(cluster: Cluster) -> str:
    """Namespace, RBAC, ConfigMap and DaemonSet of Flannel (the shape of upstream's kube-flannel.yml)."""
    net = cluster.spec.network
    ns = FLANNEL_NAMESPACE
    labels = {"app": "flannel", "k8s-app": "flannel", "tier": "node"}
    selector = {"app": "flannel", "k8s-app": "flannel"}
    cni_conf = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    args = ["--ip-masq", "--kube-subnet-mgr"]
    if net.interface:  # multi-homed nodes: the overlay must use the cluster network, not the default route
        args.append(f"--iface={net.interface}")
    image = f"{FLANNEL_IMAGE}:{net.flannel.version or FLANNEL_VERSION}"
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"k8s-app": "flannel",
                                             # flanneld needs NET_ADMIN and host paths
                                             "pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "flannel", "namespace": ns, "labels": {"k8s-app": "flannel"}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
         # Read its own pod, watch nodes for their podCIDR, and publish its VTEP/public IP as node annotations.
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flannel"},
         "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kube-flannel-cfg", "namespace": ns, "labels": labels},
         "data": {"cni-conf.json": json.dumps(cni_conf, indent=2) + "\n",
                  "net-conf.json": json.dumps(flannel_net_conf(cluster), indent=2) + "\n"}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "kube-flannel-ds", "namespace": ns, "labels": labels},
         "spec": {
             "selector": {"matchLabels": selector},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                         "nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
                     "hostNetwork": True,
                     "priorityClassName": "system-node-critical",
                     # Runs on every node, tainted control planes and not-ready nodes included: it is what
                     # makes them ready.
                     "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                     "serviceAccountName": "flannel",
                     "initContainers": [
                         {"name": "install-cni-plugin",
                          "image": f"{FLANNEL_CNI_PLUGIN_IMAGE}:{FLANNEL_CNI_PLUGIN_VERSION}",
                          "command": ["cp"], "args": ["-f", "/flannel", "/opt/cni/bin/flannel"],
                          "volumeMounts": [{"name": "cni-plugin", "mountPath": "/opt/cni/bin"}]},
                         {"name": "install-cni", "image": image, "command": ["cp"],
                          "args": ["-f", "/etc/kube-flannel/cni-conf.json", "/etc/cni/net.d/10-flannel.conflist"],
                          "volumeMounts": [{"name": "cni", "mountPath": "/etc/cni/net.d"},
                                           {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"}]}],
                     "containers": [{
                         "name": "kube-flannel", "image": image, "command": ["/opt/bin/flanneld"], "args": args,
                         "resources": {"requests": {"cpu": "100m", "memory": "50Mi"}},
                         "securityContext": {"privileged": False,
                                             "capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                         "env": [_env_field("POD_NAME", "metadata.name"),
                                 _env_field("POD_NAMESPACE", "metadata.namespace"),
                                 {"name": "EVENT_QUEUE_DEPTH", "value": "5000"}],
                         "volumeMounts": [{"name": "run", "mountPath": "/run/flannel"},
                                          {"name": "flannel-cfg", "mountPath": "/etc/kube-flannel/"},
                                          {"name": "xtables-lock", "mountPath": "/run/xtables.lock"}]}],
                     "volumes": [
                         {"name": "run", "hostPath": {"path": "/run/flannel"}},
                         {"name": "cni-plugin", "hostPath": {"path": "/opt/cni/bin"}},
                         {"name": "cni", "hostPath": {"path": "/etc/cni/net.d"}},
                         {"name": "flannel-cfg", "configMap": {"name": "kube-flannel-cfg"}},
                         {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}}],
                 },
             },
         }},
    ]
    return dump_manifest(docs, cluster)


CALICO_ENCAPSULATION = {"ipip": "IPIP", "vxlan": "VXLAN", "none": "None"}


def calico_values(cluster: Cluster) -> dict[str, Any]:
    """Values of the tigera-operator chart: the Installation resource with one IP pool over the pod CIDR.

    ``installation`` (minus ``enabled``) becomes the operator's Installation spec (operator.tigera.io/v1).
    """
    calico = cluster.spec.network.calico
    network: dict[str, Any] = {
        # IPIP and unencapsulated routing exchange routes over BGP; VXLAN does not need it.
        "bgp": "Disabled" if calico.mode == "vxlan" else "Enabled",
        "ipPools": [{"cidr": cluster.spec.kubernetes.pod_cidr,
                     "encapsulation": CALICO_ENCAPSULATION[calico.mode], "natOutgoing": "Enabled",
                     "nodeSelector": "all()", "blockSize": 26}],
    }
    iface = cluster.spec.network.interface
    # The interface field is a regular expression matched anywhere in the name: anchor it so that "eth1"
    # does not also pick eth10 or a veth.
    network["nodeAddressAutodetectionV4"] = ({"interface": f"^{re.escape(iface)}$"} if iface
                                             else {"firstFound": True})
    if calico.mtu:
        network["mtu"] = calico.mtu
    installation: dict[str, Any] = {"enabled": True, "kubernetesProvider": "", "calicoNetwork": network}
    # The Calico API server only serves projectcalico.org/v3 objects to kubectl; kubexm does not need it.
    values: dict[str, Any] = {"installation": installation, "apiServer": {"enabled": False}}
    reg = cluster.spec.registry
    if reg.private_registry:
        private = reg.private_registry.rstrip("/")
        installation["registry"] = private + "/"  # the Installation API wants the trailing slash
        if reg.namespace_override:
            installation["imagePath"] = reg.namespace_override.strip("/")
        values["tigeraOperator"] = {"registry": private, "image": private_path(TIGERA_OPERATOR_IMAGE, cluster)}
    return values


def _cilium_api_endpoint(cluster: Cluster) -> tuple[str, int]:
    """Where the agent reaches the API server without kube-proxy (the kubernetes Service needs kube-proxy)."""
    from kubexm.balancer.plan import endpoint_plan

    plan = endpoint_plan(cluster)
    if plan.kind == "none":
        return cluster.hosts_with_role("control-plane")[0].internal_ip, plan.port
    return plan.domain, plan.port  # resolved on every node by kubexm's /etc/hosts block


def cilium_values(cluster: Cluster) -> dict[str, Any]:
    """Values of the cilium chart: cluster-pool IPAM over the pod CIDR, kube-proxy replacement per spec."""
    net = cluster.spec.network
    control_planes = len(cluster.hosts_with_role("control-plane"))
    values: dict[str, Any] = {
        "ipam": {"mode": "cluster-pool",
                 "operator": {"clusterPoolIPv4PodCIDRList": [cluster.spec.kubernetes.pod_cidr],
                              "clusterPoolIPv4MaskSize": 24}},
        "kubeProxyReplacement": net.cilium.kube_proxy_replacement,
        # Two operators only where there are two control planes to spread them over (anti-affinity).
        "operator": {"replicas": 1 if control_planes == 1 else 2},
    }
    if net.cilium.kube_proxy_replacement:
        host, port = _cilium_api_endpoint(cluster)
        values["k8sServiceHost"] = host
        values["k8sServicePort"] = port
    if net.cilium.mtu:
        values["MTU"] = net.cilium.mtu
    if net.interface:
        values["devices"] = [net.interface]
    if cluster.spec.registry.private_registry:
        # Digests name the upstream manifests; a mirror re-pushed by tag may not keep them.
        values["image"] = {"repository": rewrite_image(CILIUM_IMAGES["agent"], cluster), "useDigest": False}
        values["operator"]["image"] = {"repository": rewrite_image(CILIUM_IMAGES["operator"], cluster),
                                       "useDigest": False}
        values["envoy"] = {"image": {"repository": rewrite_image(CILIUM_IMAGES["envoy"], cluster),
                                     "useDigest": False}}
    return values


def network_release(cluster: Cluster) -> AddonRelease | None:
    """The release of ``spec.network.plugin``; None for ``none`` (the user brings a CNI)."""
    net = cluster.spec.network
    if net.plugin == "flannel":
        return AddonRelease("flannel", FLANNEL_NAMESPACE, manifest=flannel_manifest(cluster), category="network")
    if net.plugin == "calico":
        repo, chart, version = CALICO_CHART
        return AddonRelease("calico", "tigera-operator", chart=chart, chart_repo=repo,
                            chart_version=net.calico.version or version, values=calico_values(cluster),
                            category="network")
    if net.plugin == "cilium":
        repo, chart, version = CILIUM_CHART
        # Cilium's chart versions carry no "v".
        return AddonRelease("cilium", "kube-system", chart=chart, chart_repo=repo,
                            chart_version=(net.cilium.version or version).lstrip("v"), values=cilium_values(cluster),
                            category="network")
    return None

"""The network plugin: Flannel as a manifest kubexm renders; Calico (Tigera operator) and Cilium as charts."""

from __future__ import annotations

import json
from typing import Any

from kubexm.addons.images import dump_manifest
from kubexm.addons.release import AddonRelease
from kubexm.spec.models import Cluster

FLANNEL_VERSION = "v0.26.4"
FLANNEL_CNI_PLUGIN = "v1.6.2-flannel1"
CALICO_CHART = ("https://docs.tigera.io/calico/charts", "tigera-operator", "v3.29.2")
CILIUM_CHART = ("https://helm.cilium.io", "cilium", "1.16.6")


def _env_field(name: str, path: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def flannel_manifest(cluster: Cluster) -> str:
    net = cluster.spec.network
    ns = "kube-flannel"
    labels = {"app": "flannel", "k8s-app": "flannel", "tier": "node"}
    net_conf = {"Network": cluster.spec.kubernetes.pod_cidr, "EnableNFTables": False,
                "Backend": {"Type": net.flannel.backend}}
    cni_conf = {"name": "cbr0", "cniVersion": "0.3.1", "plugins": [
        {"type": "flannel", "delegate": {"hairpinMode": True, "isDefaultGateway": True}},
        {"type": "portmap", "capabilities": {"portMappings": True}}]}
    args = ["--ip-masq", "--kube-subnet-mgr"] + ([f"--iface={net.interface}"] if net.interface else [])
    image = f"docker.io/flannel/flannel:{FLANNEL_VERSION}"
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"k8s-app": "flannel",
                                             "pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
         "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]},
                   {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]},
                   {"apiGroups": [""], "resources": ["nodes/status"], "verbs": ["patch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "flannel", "labels": {"k8s-app": "flannel"}},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "flannel"},
         "subjects": [{"kind": "ServiceAccount", "name": "flannel", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "flannel", "namespace": ns, "labels": {"k8s-app": "flannel"}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "kube-flannel-cfg", "namespace": ns, "labels": labels},
         "data": {"cni-conf.json": json.dumps(cni_conf, indent=2), "net-conf.json": json.dumps(net_conf, indent=2)}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "kube-flannel-ds", "namespace": ns, "labels": labels},
         "spec": {
             "selector": {"matchLabels": {"app": "flannel"}},
             "template": {
                 "metadata": {"labels": labels},
                 "spec": {
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                         "nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}]}]}}},
                     "hostNetwork": True,
                     "priorityClassName": "system-node-critical",
                     "tolerations": [{"operator": "Exists", "effect": "NoSchedule"}],
                     "serviceAccountName": "flannel",
                     "initContainers": [
                         {"name": "install-cni-plugin",
                          "image": f"docker.io/flannel/flannel-cni-plugin:{FLANNEL_CNI_PLUGIN}",
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
                         {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock",
                                                               "type": "FileOrCreate"}}],
                 },
             },
         }},
    ]
    return dump_manifest(docs, cluster)


def calico_values(cluster: Cluster) -> dict[str, Any]:
    """Values of the tigera-operator chart: one IP pool over the pod CIDR with the spec's encapsulation."""
    calico = cluster.spec.network.calico
    encapsulation = {"ipip": "IPIP", "vxlan": "VXLAN", "none": "None"}[calico.mode]
    network: dict[str, Any] = {
        "bgp": "Enabled" if calico.mode in ("ipip", "none") else "Disabled",
        "ipPools": [{"cidr": cluster.spec.kubernetes.pod_cidr, "encapsulation": encapsulation,
                     "natOutgoing": "Enabled", "nodeSelector": "all()", "blockSize": 26}],
        "nodeAddressAutodetectionV4": ({"interface": cluster.spec.network.interface}
                                       if cluster.spec.network.interface else {"firstFound": True}),
    }
    if calico.mtu:
        network["mtu"] = calico.mtu
    values: dict[str, Any] = {"installation": {"enabled": True, "kubernetesProvider": "", "calicoNetwork": network},
                              "apiServer": {"enabled": False}}
    reg = cluster.spec.registry
    if reg.private_registry:
        values["installation"]["registry"] = reg.private_registry + "/"
        values["tigeraOperator"] = {"registry": reg.private_registry}
    return values


def cilium_values(cluster: Cluster) -> dict[str, Any]:
    from kubexm.balancer.plan import endpoint_plan

    net = cluster.spec.network
    plan = endpoint_plan(cluster)
    values: dict[str, Any] = {
        "ipam": {"mode": "cluster-pool",
                 "operator": {"clusterPoolIPv4PodCIDRList": [cluster.spec.kubernetes.pod_cidr],
                              "clusterPoolIPv4MaskSize": 24}},
        "kubeProxyReplacement": bool(net.cilium.kube_proxy_replacement),
        "operator": {"replicas": 1 if len(cluster.hosts_with_role("control-plane")) == 1 else 2},
    }
    if net.cilium.kube_proxy_replacement:
        # Without kube-proxy, the agent cannot reach the API through the kubernetes Service: give it the endpoint.
        values["k8sServiceHost"] = plan.domain if plan.kind != "none" else cluster.hosts_with_role(
            "control-plane")[0].internal_ip
        values["k8sServicePort"] = plan.port
    if net.cilium.mtu:
        values["MTU"] = net.cilium.mtu
    if net.interface:
        values["devices"] = [net.interface]
    reg = cluster.spec.registry.private_registry
    if reg:
        values["image"] = {"repository": f"{reg}/cilium/cilium", "useDigest": False}
        values["operator"]["image"] = {"repository": f"{reg}/cilium/operator", "useDigest": False}
        values["envoy"] = {"image": {"repository": f"{reg}/cilium/cilium-envoy", "useDigest": False}}
    return values


def network_release(cluster: Cluster) -> AddonRelease | None:
    plugin = cluster.spec.network.plugin
    if plugin == "flannel":
        return AddonRelease("flannel", "kube-flannel", manifest=flannel_manifest(cluster), category="network")
    if plugin == "calico":
        repo, chart, version = CALICO_CHART
        return AddonRelease("calico", "tigera-operator", chart=chart, chart_repo=repo,
                            chart_version=cluster.spec.network.calico.version or version,
                            values=calico_values(cluster), category="network")
    if plugin == "cilium":
        repo, chart, version = CILIUM_CHART
        return AddonRelease("cilium", "kube-system", chart=chart, chart_repo=repo,
                            chart_version=(cluster.spec.network.cilium.version or version).lstrip("v"),
                            values=cilium_values(cluster), category="network")
    return None

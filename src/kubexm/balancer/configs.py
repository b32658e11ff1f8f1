"""haproxy.cfg, keepalived.conf, the kube-vip and internal-proxy static pods, rendered from the spec."""

from __future__ import annotations

import hashlib
import io
from typing import Any

from ruamel.yaml import YAML

from kubexm.balancer.plan import HEALTH_PORT, apiserver_backends, endpoint_plan, vip_prefix
from kubexm.spec.models import Cluster
from kubexm.templates import render

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/kubexm_check_haproxy.sh"
INTERNAL_CFG = "/etc/kubexm/haproxy/haproxy.cfg"
MANIFESTS = "/etc/kubernetes/manifests"
KUBE_VIP_MANIFEST = f"{MANIFESTS}/kube-vip.yaml"
INTERNAL_MANIFEST = f"{MANIFESTS}/kubexm-haproxy.yaml"


def haproxy_cfg(cluster: Cluster, bind: str = "0.0.0.0", listen_port: int | None = None,
                without: frozenset[str] = frozenset()) -> str:
    plan = endpoint_plan(cluster)
    return render("balancer/haproxy.cfg.j2", bind=bind, listen_port=listen_port or plan.listen_port,
                  health_port=HEALTH_PORT, backends=apiserver_backends(cluster, without))


def internal_proxy_cfg(cluster: Cluster, without: frozenset[str] = frozenset()) -> str:
    return haproxy_cfg(cluster, bind="127.0.0.1", listen_port=endpoint_plan(cluster).port, without=without)


def auth_pass(cluster: Cluster) -> str:
    """Deterministic per cluster; keepalived uses at most 8 characters of a PASS secret."""
    return hashlib.sha256(f"kubexm-vrrp-{cluster.name}".encode()).hexdigest()[:8]


def keepalived_conf(cluster: Cluster, host_name: str, interface: str, script: str = CHECK_SCRIPT) -> str:
    plan = endpoint_plan(cluster)
    order = list(plan.balancers)
    me = cluster.host(host_name)
    peers = [cluster.host(n).internal_ip for n in order if n != host_name]
    return render("balancer/keepalived.conf.j2", router_id=f"kubexm_{host_name}", check_script=script,
                  cluster_name=cluster.name.replace("-", "_"),
                  router_id_number=cluster.spec.control_plane_endpoint.virtual_router_id,
                  priority=150 - 10 * order.index(host_name), interface=interface, auth_pass=auth_pass(cluster),
                  src_ip=me.internal_ip, peers=peers, vip_prefix=vip_prefix(cluster))


def check_script() -> str:
    return render("balancer/check_haproxy.sh.j2", health_port=HEALTH_PORT)


def _dump(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(doc, out)
    return "# Managed by kubexm: edits are replaced on the next run.\n" + out.getvalue()


def kube_vip_manifest(cluster: Cluster, interface: str, first_node: bool = False) -> str:
    """kube-vip in ARP mode with leader election. During `kubeadm init` on 1.29+, admin.conf has no rights
    until the control plane grants them, so the first node mounts super-admin.conf (kube-vip's documented
    workaround); every other node, and the first one afterwards, uses admin.conf."""
    ep = cluster.spec.control_plane_endpoint
    assert ep.address is not None
    kubeconfig = "/etc/kubernetes/super-admin.conf" if first_node and cluster.spec.kubernetes.minor >= 29 \
        else "/etc/kubernetes/admin.conf"
    env = {"vip_arp": "true", "port": "6443", "vip_interface": interface, "vip_cidr": "32", "cp_enable": "true",
           "cp_namespace": "kube-system", "vip_leaderelection": "true", "vip_leasename": "plndr-cp-lock",
           "vip_leaseduration": "5", "vip_renewdeadline": "3", "vip_retryperiod": "1", "address": ep.address}
    image = f"ghcr.io/kube-vip/kube-vip:{ep.kube_vip_version}"
    if cluster.spec.registry.private_registry:
        image = f"{cluster.spec.registry.private_registry}/kube-vip/kube-vip:{ep.kube_vip_version}"
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kube-vip", "namespace": "kube-system", "labels": {"app.kubernetes.io/name": "kube-vip"}},
        "spec": {
            "hostNetwork": True,
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["kubernetes"]}],
            "priorityClassName": "system-node-critical",
            "containers": [{
                "name": "kube-vip", "image": image, "imagePullPolicy": "IfNotPresent", "args": ["manager"],
                "env": [{"name": k, "value": v} for k, v in env.items()],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW"]}},
                "volumeMounts": [{"name": "kubeconfig", "mountPath": "/etc/kubernetes/admin.conf"}],
            }],
            "volumes": [{"name": "kubeconfig", "hostPath": {"path": kubeconfig, "type": "File"}}],
        },
    }
    return _dump(pod)


def internal_proxy_manifest(cluster: Cluster) -> str:
    """haproxy as a static pod on each worker, reading the config kubexm writes on the host."""
    ep = cluster.spec.control_plane_endpoint
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "kubexm-haproxy", "namespace": "kube-system",
                     "labels": {"app.kubernetes.io/name": "kubexm-haproxy", "k8s-app": "kube-haproxy"}},
        "spec": {
            "hostNetwork": True,
            "dnsPolicy": "ClusterFirstWithHostNet",
            "priorityClassName": "system-node-critical",
            "nodeSelector": {"kubernetes.io/os": "linux"},
            "containers": [{
                "name": "haproxy", "image": ep.haproxy_image, "imagePullPolicy": "IfNotPresent",
                "resources": {"requests": {"cpu": "25m", "memory": "32Mi"}},
                "livenessProbe": {"httpGet": {"host": "127.0.0.1", "path": "/healthz", "port": HEALTH_PORT},
                                  "initialDelaySeconds": 5, "periodSeconds": 5},
                "readinessProbe": {"httpGet": {"host": "127.0.0.1", "path": "/healthz", "port": HEALTH_PORT}},
                "volumeMounts": [{"name": "config", "mountPath": "/usr/local/etc/haproxy/haproxy.cfg",
                                  "readOnly": True}],
            }],
            "volumes": [{"name": "config", "hostPath": {"path": INTERNAL_CFG, "type": "File"}}],
        },
    }
    return _dump(pod)

"""haproxy.cfg, keepalived.conf, the kube-vip and internal-proxy static pods, rendered from the spec."""

from __future__ import annotations

import hashlib
import ipaddress
import re
from typing import Any

from kubexm.balancer.plan import HEALTH_PORT, apiserver_backends, endpoint_plan, vip_prefix
from kubexm.errors import StepFailed
from kubexm.spec.models import Cluster
from kubexm.templates import render

HAPROXY_CFG = "/etc/haproxy/haproxy.cfg"
KEEPALIVED_CONF = "/etc/keepalived/keepalived.conf"
CHECK_SCRIPT = "/etc/keepalived/kubexm_check_haproxy.sh"
INTERNAL_CFG = "/etc/kubexm/haproxy/haproxy.cfg"
MANIFESTS = "/etc/kubernetes/manifests"
KUBE_VIP_MANIFEST = f"{MANIFESTS}/kube-vip.yaml"
INTERNAL_MANIFEST = f"{MANIFESTS}/kubexm-haproxy.yaml"


# One word of haproxy.cfg or keepalived.conf: what host names and addresses are made of. Neither format
# has an escape every supported version reads, so anything else (a space, a quote, "#", a brace) is refused
# rather than written; the spec validation refuses such values first, this keeps the files sound regardless.
_WORD = re.compile(r"[A-Za-z0-9_.:\[\]-]+")


def _word(value: str, what: str) -> str:
    if not _WORD.fullmatch(value):
        raise StepFailed(f"{what} {value!r} cannot be written into a balancer config",
                         hint="host names are RFC 1123 names, addresses are IP addresses")
    return value


def _ip(value: str, what: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise StepFailed(f"{what} {value!r} is not an IP address; keepalived needs one",
                         hint="set the host's internalAddress to an IP address") from None
    return value


def haproxy_cfg(cluster: Cluster, bind: str = "0.0.0.0", listen_port: int | None = None,
                without: frozenset[str] = frozenset()) -> str:
    plan = endpoint_plan(cluster)
    backends = [(_word(name, "host name"), _word(address, f"address of {name}"))
                for name, address in apiserver_backends(cluster, without)]
    return render("balancer/haproxy.cfg.j2", bind=_word(bind, "bind address"),
                  listen_port=int(listen_port or plan.listen_port), health_port=int(HEALTH_PORT), backends=backends)


def internal_proxy_cfg(cluster: Cluster, without: frozenset[str] = frozenset()) -> str:
    return haproxy_cfg(cluster, bind="127.0.0.1", listen_port=endpoint_plan(cluster).port, without=without)


def auth_pass(cluster: Cluster) -> str:
    """Deterministic per cluster; keepalived uses at most 8 characters of a PASS secret."""
    return hashlib.sha256(f"kubexm-vrrp-{cluster.name}".encode()).hexdigest()[:8]


def keepalived_conf(cluster: Cluster, host_name: str, interface: str, script: str = CHECK_SCRIPT) -> str:
    plan = endpoint_plan(cluster)
    order = list(plan.balancers)
    me = cluster.host(host_name)
    peers = [_ip(cluster.host(n).internal_ip, f"address of {n}") for n in order if n != host_name]
    # Strings go in double quotes (keepalived reads them as one word); they may not hold a quote themselves.
    return render("balancer/keepalived.conf.j2", router_id=_word(f"kubexm_{host_name}", "router id"),
                  check_script=_keepalived_string(script, "check script"),
                  cluster_name=_word(cluster.name.replace("-", "_"), "cluster name"),
                  router_id_number=int(cluster.spec.control_plane_endpoint.virtual_router_id),
                  priority=150 - 10 * order.index(host_name), interface=_word(interface, "interface"),
                  auth_pass=auth_pass(cluster), src_ip=_ip(me.internal_ip, f"address of {host_name}"), peers=peers,
                  vip_prefix=_vip_prefix(cluster))


def _keepalived_string(value: str, what: str) -> str:
    if '"' in value or "\\" in value:
        raise StepFailed(f"{what} {value!r} cannot be written into keepalived.conf (a quote or backslash)")
    return value


def _vip_prefix(cluster: Cluster) -> str:
    _ip(cluster.spec.control_plane_endpoint.address or "", "spec.controlPlaneEndpoint.address")
    return vip_prefix(cluster)


def check_script() -> str:
    return render("balancer/check_haproxy.sh.j2", health_port=int(HEALTH_PORT))


def _dump(doc: dict[str, Any]) -> str:
    # kubelet reads static pods with a YAML 1.1 reader: every string is quoted so "no" or "on" stay strings.
    from kubexm.kube.kubeadm import dump_go_yaml

    return "# Managed by kubexm: edits are replaced on the next run.\n" + dump_go_yaml([doc])


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

"""The certificates a cluster needs, named and shaped as kubeadm issues them.

Paths follow kubeadm's layout under /etc/kubernetes/pki (``ca``, ``apiserver``,
``etcd/server``...). etcd member certificates differ per node, so the deploy machine keeps
them as ``etcd/nodes/NODE/server`` and ``.../peer`` and each node receives its own as
``etcd/server`` and ``etcd/peer``.
"""

from __future__ import annotations

import ipaddress

from kubexm.pki.spec import CertSpec
from kubexm.spec.models import Cluster

CA = CertSpec("ca", "kubernetes", "")
FRONT_PROXY_CA = CertSpec("front-proxy-ca", "front-proxy-ca", "")
ETCD_CA = CertSpec("etcd/ca", "etcd-ca", "")
CAS = (CA, FRONT_PROXY_CA, ETCD_CA)

# Since Kubernetes 1.29 kubeadm binds admin-level clients to kubeadm:cluster-admins and keeps
# system:masters (which bypasses RBAC) for the break-glass super-admin only.
CLUSTER_ADMINS = "kubeadm:cluster-admins"
MASTERS = "system:masters"


def _admin_group(cluster: Cluster) -> str:
    return CLUSTER_ADMINS if cluster.spec.kubernetes.minor >= 29 else MASTERS


def etcd_member_specs(name: str, addresses: list[str]) -> list[CertSpec]:
    """Server and peer certificate of one etcd member: its names and addresses, and loopback."""
    ips = tuple(dict.fromkeys([*addresses, "127.0.0.1", "::1"]))
    dns = tuple(dict.fromkeys([name, "localhost"]))
    return [
        CertSpec(f"etcd/nodes/{name}/server", name, "etcd/ca", (), dns, ips, ("server", "client")),
        CertSpec(f"etcd/nodes/{name}/peer", name, "etcd/ca", (), dns, ips, ("server", "client")),
    ]


def etcd_specs(cluster: Cluster) -> list[CertSpec]:
    """The etcd CA, every member's server/peer pair and the two client certificates."""
    specs = [ETCD_CA]
    for host in cluster.hosts_with_role("etcd"):
        specs += etcd_member_specs(host.name, list(dict.fromkeys([host.internal_ip, host.address])))
    specs.append(CertSpec("etcd/healthcheck-client", "kube-etcd-healthcheck-client", "etcd/ca", (), (), (), ("client",)))
    specs.append(CertSpec("apiserver-etcd-client", "kube-apiserver-etcd-client", "etcd/ca", (), (), (), ("client",)))
    return specs


def apiserver_sans(cluster: Cluster) -> tuple[tuple[str, ...], tuple[str, ...]]:
    spec = cluster.spec
    domain = spec.kubernetes.dns_domain
    dns = ["kubernetes", "kubernetes.default", "kubernetes.default.svc", f"kubernetes.default.svc.{domain}", "localhost"]
    service_ip = str(next(ipaddress.ip_network(spec.kubernetes.service_cidr).hosts()))
    ips = [service_ip, "127.0.0.1"]
    for host in cluster.hosts_with_role("control-plane"):
        dns.append(host.name)
        ips += [host.internal_ip, host.address]
    endpoint = spec.control_plane_endpoint
    dns.append(endpoint.domain)
    if endpoint.address:
        ips.append(endpoint.address)
    for extra in spec.kubernetes.api_server_cert_sans:
        try:
            ips.append(str(ipaddress.ip_address(extra)))
        except ValueError:
            dns.append(extra)
    return tuple(dict.fromkeys(dns)), tuple(dict.fromkeys(ips))


def kubernetes_specs(cluster: Cluster) -> list[CertSpec]:
    """kubeadm's control-plane set: CAs, apiserver and its clients, front proxy (sa.key is a bare key pair)."""
    dns, ips = apiserver_sans(cluster)
    return [
        CA, FRONT_PROXY_CA,
        CertSpec("apiserver", "kube-apiserver", "ca", (), dns, ips, ("server",)),
        CertSpec("apiserver-kubelet-client", "kube-apiserver-kubelet-client", "ca", (_admin_group(cluster),), (), (),
                 ("client",)),
        CertSpec("front-proxy-client", "front-proxy-client", "front-proxy-ca", (), (), (), ("client",)),
    ]


def kubeconfig_specs(cluster: Cluster) -> dict[str, CertSpec]:
    """Client identities of the kubeconfig files kubeadm writes, by file name."""
    out = {
        "admin.conf": CertSpec("kubeconfig/admin", "kubernetes-admin", "ca", (_admin_group(cluster),), (), (), ("client",)),
        "super-admin.conf": CertSpec("kubeconfig/super-admin", "kubernetes-super-admin", "ca", (MASTERS,), (), (),
                                     ("client",)),
        "controller-manager.conf": CertSpec("kubeconfig/controller-manager", "system:kube-controller-manager", "ca",
                                            (), (), (), ("client",)),
        "scheduler.conf": CertSpec("kubeconfig/scheduler", "system:kube-scheduler", "ca", (), (), (), ("client",)),
    }
    for host in cluster.spec.hosts:
        if cluster.roles_of(host.name):
            out[f"kubelet-{host.name}.conf"] = kubelet_kubeconfig_spec(host.name)
    return out


def kubelet_kubeconfig_spec(node: str) -> CertSpec:
    """The identity in ``node``'s kubelet.conf (one node's entry of ``kubeconfig_specs``, without building all)."""
    return CertSpec(f"kubeconfig/kubelet-{node}", f"system:node:{node}", "ca", ("system:nodes",), (), (), ("client",))

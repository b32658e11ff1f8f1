"""Who serves the control-plane endpoint for each `controlPlaneEndpoint.loadBalancer` choice.

- none: the first control-plane node's apiserver.
- haproxy-keepalived: haproxy + keepalived on the `loadbalancer` hosts, or on the control-plane nodes when
  that group is empty (then haproxy listens on `balancerPort`, since the apiserver holds `port`); the VIP
  moves between them.
- kube-vip: a static pod on every control-plane node announces the VIP; the apiserver answers on it.
- internal: every worker runs a local haproxy on 127.0.0.1:`port` forwarding to all apiservers
  (Kubespray's localhost proxy); control-plane nodes talk to their own apiserver.
- external: the user's balancer at address:port.

Every node reaches the API as `domain:port`; /etc/hosts (kubexm's block) maps the domain per node.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from kubexm.spec.models import Cluster

APISERVER_PORT = 6443
HEALTH_PORT = 8404  # haproxy's local monitor endpoint, checked by keepalived and the static pod's probe


@dataclass(frozen=True)
class Endpoint:
    kind: str
    domain: str
    port: int  # the port every client uses
    balancers: tuple[str, ...]  # hosts running haproxy (+ keepalived for haproxy-keepalived)
    listen_port: int  # where haproxy listens on those hosts
    vip: str | None

    @property
    def address(self) -> str:
        return f"{self.domain}:{self.port}"


def problems(cluster: Cluster) -> list[str]:
    """Endpoint settings that cannot work, each naming the field and the fix (spec/validate.py checks the
    missing address and a haproxy VIP equal to a host's address)."""
    ep = cluster.spec.control_plane_endpoint
    out = []
    if ep.address and ep.load_balancer == "kube-vip":
        own = {h.internal_ip for h in cluster.spec.hosts} | {h.address for h in cluster.spec.hosts}
        if ep.address in own:
            out.append(f"spec.controlPlaneEndpoint.address: {ep.address} belongs to a host; the VIP must be free")
    if ep.load_balancer == "haproxy-keepalived" and not cluster.hosts_with_role("loadbalancer") and \
            ep.balancer_port == APISERVER_PORT:
        out.append("spec.controlPlaneEndpoint.balancerPort: haproxy shares the control-plane nodes with the "
                   "apiserver (port 6443); pick another port, e.g. 8443")
    return out


def endpoint_plan(cluster: Cluster) -> Endpoint:
    ep = cluster.spec.control_plane_endpoint
    cps = tuple(h.name for h in cluster.hosts_with_role("control-plane"))
    if ep.load_balancer == "haproxy-keepalived":
        dedicated = tuple(h.name for h in cluster.hosts_with_role("loadbalancer"))
        if dedicated:
            return Endpoint(ep.load_balancer, ep.domain, ep.port, dedicated, ep.port, ep.address)
        return Endpoint(ep.load_balancer, ep.domain, ep.balancer_port, cps, ep.balancer_port, ep.address)
    if ep.load_balancer == "internal":
        workers = tuple(h.name for h in cluster.hosts_with_role("worker") if h.name not in cps)
        return Endpoint(ep.load_balancer, ep.domain, APISERVER_PORT, workers, APISERVER_PORT, None)
    if ep.load_balancer == "kube-vip":
        return Endpoint(ep.load_balancer, ep.domain, APISERVER_PORT, (), APISERVER_PORT, ep.address)
    if ep.load_balancer == "external":
        return Endpoint(ep.load_balancer, ep.domain, ep.port, (), ep.port, ep.address)
    return Endpoint("none", ep.domain, APISERVER_PORT, (), APISERVER_PORT, None)


def control_plane_endpoint(cluster: Cluster) -> str:
    """``domain:port`` for kubeadm's controlPlaneEndpoint, kubeconfigs and joins."""
    return endpoint_plan(cluster).address


def endpoint_ip(cluster: Cluster, host_name: str) -> str | None:
    """What the endpoint's domain resolves to on one host (kubexm's /etc/hosts block)."""
    plan = endpoint_plan(cluster)
    cps = cluster.hosts_with_role("control-plane")
    if plan.kind == "internal":
        if host_name in plan.balancers:
            return "127.0.0.1"
        own = [h.internal_ip for h in cps if h.name == host_name]
        return own[0] if own else (cps[0].internal_ip if cps else None)
    if plan.vip:
        return plan.vip
    return cps[0].internal_ip if cps else None


def apiserver_backends(cluster: Cluster, without: frozenset[str] = frozenset()) -> list[tuple[str, str]]:
    """(name, ip:6443) of every control-plane node, except those being removed."""
    return [(h.name, f"{h.internal_ip}:{APISERVER_PORT}") for h in cluster.hosts_with_role("control-plane")
            if h.name not in without]


def vip_prefix(cluster: Cluster) -> str:
    vip = cluster.spec.control_plane_endpoint.address
    assert vip is not None
    return f"{vip}/{32 if ipaddress.ip_address(vip).version == 4 else 128}"

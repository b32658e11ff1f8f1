"""Cross-field rules of a cluster file: what pydantic cannot see field by field.

Each problem starts with the dotted path of the field to edit, so the loader can point at
its line.
"""

from __future__ import annotations

import ipaddress
from collections import Counter

from kubexm.spec.models import ROLE_NAMES, SUPPORTED_K8S_MINORS, Cluster


def validate_cluster(cluster: Cluster) -> list[str]:
    """Every cross-field problem of ``cluster``, one line each (empty when the file is usable)."""
    spec = cluster.spec
    problems: list[str] = []
    if not spec.hosts:
        return ["spec.hosts: no hosts; list at least one machine"]

    names = Counter(h.name for h in spec.hosts)
    for i, host in enumerate(spec.hosts):
        if names[host.name] > 1:
            problems.append(f"spec.hosts[{i}].name: '{host.name}' is used by {names[host.name]} hosts; names must be unique")
    addresses = Counter((h.address, h.port) for h in spec.hosts if h.connection == "ssh")
    for i, host in enumerate(spec.hosts):
        if host.connection == "ssh" and addresses[(host.address, host.port)] > 1:
            problems.append(
                f"spec.hosts[{i}].address: {host.address}:{host.port} is listed for more than one host; "
                "each host needs its own address"
            )
        if host.bastion and host.bastion not in {b.name for b in spec.bastions}:
            problems.append(f"spec.hosts[{i}].bastion: no bastion named '{host.bastion}' in spec.bastions")
        if host.private_key_passphrase and not host.private_key_path:
            problems.append(f"spec.hosts[{i}].privateKeyPassphrase: set privateKeyPath too (the key it unlocks)")

    known = set(names)
    groups = spec.role_groups
    for role in ROLE_NAMES:
        members = groups.members(role)
        for j, member in enumerate(members):
            if member not in known:
                close = [n for n in known if n.startswith(member[:3])]
                hint = f" (did you mean '{close[0]}'?)" if close else ""
                problems.append(f"spec.roleGroups.{role}[{j}]: no host named '{member}' in spec.hosts{hint}")
        dupes = [m for m, c in Counter(members).items() if c > 1]
        for m in dupes:
            problems.append(f"spec.roleGroups.{role}: '{m}' is listed twice")

    control = groups.members("control-plane")
    if not control:
        problems.append("spec.roleGroups.control-plane: no control-plane host; name at least one host")
    etcd = groups.members("etcd")
    if spec.etcd.type == "external":
        if not spec.etcd.endpoints:
            problems.append("spec.etcd.endpoints: etcd type 'external' needs the endpoints of the existing cluster")
    elif spec.etcd.type == "kubexm":
        if not etcd:
            problems.append("spec.roleGroups.etcd: no etcd host; name 1, 3 or 5 hosts (or set spec.etcd.type)")
        elif len(etcd) % 2 == 0:
            problems.append(
                f"spec.roleGroups.etcd: {len(etcd)} etcd members survive no more failures than "
                f"{len(etcd) - 1} would, at a higher quorum cost; use an odd number (1, 3, 5)"
            )
    elif spec.etcd.type == "kubeadm" and etcd and set(etcd) != set(control):
        problems.append("spec.roleGroups.etcd: stacked etcd (type kubeadm) runs on the control-plane hosts; list the same hosts")

    lb = spec.control_plane_endpoint
    if len(control) > 1 and lb.load_balancer == "none":
        problems.append(
            "spec.controlPlaneEndpoint.loadBalancer: 'none' with "
            f"{len(control)} control-plane hosts leaves no shared endpoint; use haproxy-keepalived, kube-vip, "
            "internal or external"
        )
    if lb.load_balancer in ("haproxy-keepalived", "kube-vip", "external") and not lb.address:
        problems.append(
            f"spec.controlPlaneEndpoint.address: loadBalancer '{lb.load_balancer}' needs the address "
            "(VIP or balancer) clients use"
        )
    if lb.load_balancer == "haproxy-keepalived" and lb.address in {h.address for h in spec.hosts}:
        problems.append("spec.controlPlaneEndpoint.address: the VIP must be a free address, not a host's own")

    minor = spec.kubernetes.minor
    if (spec.kubernetes.version.startswith("v1.") and minor not in SUPPORTED_K8S_MINORS) or \
            not spec.kubernetes.version.startswith("v1."):
        problems.append(
            f"spec.kubernetes.version: {spec.kubernetes.version} is not supported; kubexm deploys "
            f"v1.{SUPPORTED_K8S_MINORS[0]} to v1.{SUPPORTED_K8S_MINORS[-1]}"
        )

    problems += _proxy_mode_problems(cluster)

    pod = ipaddress.ip_network(spec.kubernetes.pod_cidr)
    svc = ipaddress.ip_network(spec.kubernetes.service_cidr)
    if pod.version == svc.version and pod.overlaps(svc):
        problems.append(
            f"spec.kubernetes.serviceCidr: {svc} overlaps the pod network {pod}; pick disjoint ranges"
        )
    for host in spec.hosts:
        try:
            ip = ipaddress.ip_address(host.internal_ip)
        except ValueError:
            continue
        for field, net in (("podCidr", pod), ("serviceCidr", svc)):
            if ip.version == net.version and ip in net:
                problems.append(
                    f"spec.kubernetes.{field}: {net} contains host {host.name}'s address {ip}; "
                    "pick a range the hosts do not use"
                )
    from kubexm.balancer.plan import problems as endpoint_problems

    problems += [p for p in endpoint_problems(cluster) if p not in problems]
    rt = spec.container_runtime
    if rt.type == "docker":
        for i, mirror in enumerate(rt.registry_mirrors):
            if mirror.registry not in ("docker.io", "registry-1.docker.io", "index.docker.io"):
                problems.append(
                    f"spec.containerRuntime.registryMirrors[{i}]: docker mirrors Docker Hub only, not "
                    f"{mirror.registry}; use containerd or crio, or pull through the private registry")
        if rt.snapshotter != "overlayfs":
            problems.append("spec.containerRuntime.snapshotter: applies to containerd; docker uses its storage driver")
    return problems


# kube-proxy's nftables mode: alpha behind the NFTablesProxyMode gate in v1.29 and v1.30, beta and on by default
# from v1.31 (KEP-3866).
NFTABLES_GATED_MINORS = (29, 30)
NFTABLES_DEFAULT_MINOR = 31


def _proxy_mode_problems(cluster: Cluster) -> list[str]:
    k8s = cluster.spec.kubernetes
    if k8s.proxy_mode != "nftables" or not k8s.version.startswith("v1.") or k8s.minor >= NFTABLES_DEFAULT_MINOR:
        return []
    if k8s.minor in NFTABLES_GATED_MINORS:
        if k8s.feature_gates.get("NFTablesProxyMode") is True:
            return []
        return [f"spec.kubernetes.proxyMode: nftables is alpha in {k8s.version}; set "
                "spec.kubernetes.featureGates.NFTablesProxyMode: true, use ipvs or iptables, or Kubernetes v1.31 or later"]
    return [f"spec.kubernetes.proxyMode: kube-proxy {k8s.version} has no nftables mode (from v1.29 behind a feature "
            "gate, v1.31 on by default); use ipvs or iptables, or a newer spec.kubernetes.version"]

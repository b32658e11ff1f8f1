"""kubeadm configuration for the target version: v1beta3 (Kubernetes 1.22 to 1.30) or v1beta4 (1.31+).

Everything is built as data and dumped as YAML, so the shape is exact and tests parse it back. kubeadm,
kubelet and kube-proxy read YAML 1.1 (go-yaml), where ``no``, ``on``, ``y`` or ``0x1f`` are not strings: every
string is written double-quoted, so a host named ``no`` stays ``name: "no"``.
Secrets (the bootstrap token) only ever live in files kubexm uploads with mode 0600, never in argv.
"""

from __future__ import annotations

import hashlib
import io
import secrets
import string
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString, LiteralScalarString

from kubexm.errors import KubexmError
from kubexm.kube.paths import ADMIN_CONF as ADMIN_CONF  # re-exported: one place for kubeadm's names
from kubexm.kube.paths import INIT_CONFIG as INIT_CONFIG
from kubexm.kube.paths import JOIN_CONFIG as JOIN_CONFIG
from kubexm.kube.paths import KUBELET_CONF as KUBELET_CONF
from kubexm.kube.paths import PKI_DIR as PKI_DIR
from kubexm.kube.paths import TOKEN_CONFIG as TOKEN_CONFIG
from kubexm.spec.fields import parse_taint
from kubexm.spec.models import Cluster, Host

CONTROL_PLANE_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}

_TOKEN_ALPHABET = string.ascii_lowercase + string.digits
# kubelet's default hard-eviction signals (memory raised from 100Mi) and pid.available.
EVICTION_HARD = {"memory.available": "200Mi", "nodefs.available": "10%", "nodefs.inodesFree": "5%",
                 "imagefs.available": "15%", "imagefs.inodesFree": "5%", "pid.available": "10%"}


def api_version(cluster: Cluster) -> str:
    return "kubeadm.k8s.io/v1beta4" if cluster.spec.kubernetes.minor >= 31 else "kubeadm.k8s.io/v1beta3"


def is_v1beta4(cluster: Cluster) -> bool:
    return api_version(cluster).endswith("v1beta4")


def new_token() -> str:
    """A bootstrap token in kubeadm's format ``[a-z0-9]{6}.[a-z0-9]{16}``."""
    pick = lambda n: "".join(secrets.choice(_TOKEN_ALPHABET) for _ in range(n))  # noqa: E731
    return f"{pick(6)}.{pick(16)}"


def ca_cert_hash(ca_pem: bytes) -> str:
    """kubeadm's discovery hash: sha256 of the CA's DER-encoded SubjectPublicKeyInfo."""
    cert = x509.load_pem_x509_certificate(ca_pem)
    spki = cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return "sha256:" + hashlib.sha256(spki).hexdigest()


def _args(cluster: Cluster, values: dict[str, str]) -> Any:
    """extraArgs: a map in v1beta3, a list of name/value pairs (duplicates allowed) in v1beta4."""
    if is_v1beta4(cluster):
        return [{"name": k, "value": str(v)} for k, v in values.items()]
    return {k: str(v) for k, v in values.items()}


def quote_strings(node: Any) -> Any:
    """``node`` with every string (map keys too) double-quoted for the dumper.

    Go programs read YAML 1.1, which takes ``no``/``on``/``y``/``off``, ``~``, ``0x1f``, ``012`` or ``1e3``
    as booleans, null or numbers where YAML 1.2 (and ruamel) sees strings; quoting every string is the one
    rule both agree on. Multi-line block scalars are strings in both and stay blocks.
    """
    if isinstance(node, LiteralScalarString):
        return node
    if isinstance(node, str):
        return DoubleQuotedScalarString(node)
    if isinstance(node, dict):
        return {quote_strings(k): quote_strings(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [quote_strings(v) for v in node]
    return node


def dump_go_yaml(docs: list[Any]) -> str:
    """Documents for a Go reader (kubeadm, kubelet, kube-proxy, helm, kubectl): every string quoted."""
    yaml = YAML()
    yaml.default_flow_style = False
    yaml.width = 4096  # a long value is never folded over lines
    out = io.StringIO()
    yaml.dump_all([quote_strings(d) for d in docs], out)
    return out.getvalue()


def dump(docs: list[dict[str, Any]]) -> str:
    return "# Managed by kubexm: regenerated on every run.\n" + dump_go_yaml(docs)


def cri_socket(cluster: Cluster) -> str:
    from kubexm.steps.runtime import CRI_SOCKETS

    return CRI_SOCKETS[cluster.spec.container_runtime.type]


def node_registration(cluster: Cluster, host: Host, control_plane: bool) -> dict[str, Any]:
    k8s = cluster.spec.kubernetes
    kubelet_args = {"node-ip": host.internal_ip, **k8s.kubelet_extra_args}
    worker_too = host.name in cluster.spec.role_groups.worker
    return {
        "name": host.name,
        "criSocket": cri_socket(cluster),
        "imagePullPolicy": "IfNotPresent",
        # A control-plane node that is also listed as a worker takes ordinary pods.
        "taints": ([dict(CONTROL_PLANE_TAINT)] if control_plane and not worker_too else [])
        + [parse_taint(t) for t in host.taints],
        "kubeletExtraArgs": _args(cluster, kubelet_args),
    }


def image_repository(cluster: Cluster) -> str:
    reg = cluster.spec.registry
    if not reg.private_registry:
        return "registry.k8s.io"
    return f"{reg.private_registry}/{reg.namespace_override}" if reg.namespace_override else reg.private_registry


def etcd_section(cluster: Cluster) -> dict[str, Any]:
    etcd = cluster.spec.etcd
    if etcd.type == "kubeadm":
        return {"local": {"dataDir": etcd.data_dir, "extraArgs": _args(cluster, etcd.extra_args)}}
    if etcd.type == "external":
        return {"external": {"endpoints": list(etcd.endpoints), "caFile": f"{PKI_DIR}/etcd/ca.crt",
                             "certFile": f"{PKI_DIR}/apiserver-etcd-client.crt",
                             "keyFile": f"{PKI_DIR}/apiserver-etcd-client.key"}}
    members = cluster.hosts_with_role("etcd")
    return {"external": {"endpoints": [f"https://{h.internal_ip}:2379" for h in members],
                         "caFile": f"{PKI_DIR}/etcd/ca.crt",
                         "certFile": f"{PKI_DIR}/apiserver-etcd-client.crt",
                         "keyFile": f"{PKI_DIR}/apiserver-etcd-client.key"}}


def cluster_configuration(cluster: Cluster, endpoint: str) -> dict[str, Any]:
    from kubexm.pki.layout import apiserver_sans

    k8s = cluster.spec.kubernetes
    dns, ips = apiserver_sans(cluster)
    gates = ",".join(f"{k}={str(v).lower()}" for k, v in sorted(k8s.feature_gates.items()))
    with_gates = {"feature-gates": gates} if gates else {}
    # CIS 1.2.15/1.3.2/1.4.1 (profiling off) and 1.3.7/1.4.2 (controller manager and scheduler serve on loopback
    # only, kubeadm's own default); the spec's extra args still win, e.g. to let a scraper reach them.
    apiserver_args = {"bind-address": "0.0.0.0", "profiling": "false", **with_gates, **k8s.api_server_extra_args}
    cm_args = {"bind-address": "127.0.0.1", "profiling": "false", **with_gates, **k8s.controller_manager_extra_args}
    scheduler_args = {"bind-address": "127.0.0.1", "profiling": "false", **with_gates, **k8s.scheduler_extra_args}
    conf: dict[str, Any] = {
        "apiVersion": api_version(cluster),
        "kind": "ClusterConfiguration",
        "clusterName": cluster.name,
        "kubernetesVersion": k8s.version,
        "controlPlaneEndpoint": endpoint,
        "certificatesDir": PKI_DIR,
        "imageRepository": image_repository(cluster),
        "networking": {"podSubnet": k8s.pod_cidr, "serviceSubnet": k8s.service_cidr, "dnsDomain": k8s.dns_domain},
        "etcd": etcd_section(cluster),
        "apiServer": {"certSANs": list(dns) + list(ips), "extraArgs": _args(cluster, apiserver_args)},
        "controllerManager": {"extraArgs": _args(cluster, cm_args)},
        "scheduler": {"extraArgs": _args(cluster, scheduler_args)},
    }
    if is_v1beta4(cluster):
        conf["encryptionAlgorithm"] = "ECDSA-P256" if cluster.spec.pki.key_type == "ecdsa" else "RSA-2048"
        conf["certificateValidityPeriod"] = f"{cluster.spec.pki.cert_validity_days * 24}h0m0s"
        conf["caCertificateValidityPeriod"] = f"{cluster.spec.pki.ca_validity_days * 24}h0m0s"
    return conf


def kubelet_configuration(cluster: Cluster) -> dict[str, Any]:
    k8s = cluster.spec.kubernetes
    conf: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": k8s.cgroup_driver,
        "clusterDNS": [kubelet_cluster_dns(cluster)],
        "clusterDomain": k8s.dns_domain,
        "maxPods": k8s.max_pods,
        "rotateCertificates": True,
        "serverTLSBootstrap": False,
        "failSwapOn": True,
        # Setting evictionHard replaces kubelet's defaults as a whole: a signal left out is never evicted on
        # (inode exhaustion among them), so every default signal is listed, plus PID exhaustion.
        "evictionHard": dict(EVICTION_HARD),
        "systemReserved": {"cpu": "100m", "memory": "256Mi"},
    }
    if k8s.minor >= 27:
        conf["containerRuntimeEndpoint"] = cri_socket(cluster)
    if k8s.feature_gates:
        conf["featureGates"] = dict(sorted(k8s.feature_gates.items()))
    return conf


def kubelet_cluster_dns(cluster: Cluster) -> str:
    """NodeLocal DNSCache's address when enabled, else CoreDNS's (the addon module owns the rule)."""
    from kubexm.addons import dns

    return dns.kubelet_cluster_dns(cluster)


def kube_proxy_configuration(cluster: Cluster) -> dict[str, Any]:
    from kubexm.spec.validate import NFTABLES_DEFAULT_MINOR, NFTABLES_GATED_MINORS

    k8s = cluster.spec.kubernetes
    conf: dict[str, Any] = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "mode": k8s.proxy_mode,
        "clusterCIDR": k8s.pod_cidr,
    }
    # kube-proxy gets the cluster's feature gates like the other components (kubeadm passes none to it).
    gates = dict(k8s.feature_gates)
    if k8s.proxy_mode == "ipvs":
        # kube-vip and MetalLB in ARP mode need strict ARP so nodes do not answer for each other's VIPs.
        conf["ipvs"] = {"strictARP": True}
    elif k8s.proxy_mode == "nftables" and k8s.minor < NFTABLES_DEFAULT_MINOR:
        # The same rule the spec validation applies: alpha behind NFTablesProxyMode before v1.31, absent before.
        if k8s.minor not in NFTABLES_GATED_MINORS:
            raise KubexmError(f"kube-proxy mode nftables needs Kubernetes v1.29 or later, not {k8s.version}",
                              hint="use spec.kubernetes.proxyMode ipvs or iptables for this version")
        gates["NFTablesProxyMode"] = True
    if gates:
        conf["featureGates"] = dict(sorted(gates.items()))
    return conf


def bootstrap_token(cluster: Cluster, token: str, ttl: str = "1h0m0s") -> dict[str, Any]:
    return {"token": token, "ttl": ttl, "usages": ["signing", "authentication"],
            "groups": ["system:bootstrappers:kubeadm:default-node-token"],
            "description": f"kubexm join token for {cluster.name}"}


def _replaces_kube_proxy(cluster: Cluster) -> bool:
    return cluster.spec.network.plugin == "cilium" and cluster.spec.network.cilium.kube_proxy_replacement


def init_configuration(cluster: Cluster, host: Host, token: str) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "apiVersion": api_version(cluster),
        "kind": "InitConfiguration",
        "bootstrapTokens": [bootstrap_token(cluster, token)],
        "localAPIEndpoint": {"advertiseAddress": host.internal_ip, "bindPort": 6443},
        "nodeRegistration": node_registration(cluster, host, control_plane=True),
    }
    if _replaces_kube_proxy(cluster):
        conf["skipPhases"] = ["addon/kube-proxy"]
    if is_v1beta4(cluster):
        conf["timeouts"] = {"controlPlaneComponentHealthCheck": "4m0s", "kubeletHealthCheck": "4m0s"}
    return conf


def init_config(cluster: Cluster, host: Host, token: str, endpoint: str) -> str:
    """The file `kubeadm init --config` reads on the first control-plane node."""
    docs = [init_configuration(cluster, host, token), cluster_configuration(cluster, endpoint),
            kubelet_configuration(cluster)]
    if not _replaces_kube_proxy(cluster):
        docs.append(kube_proxy_configuration(cluster))
    if not is_v1beta4(cluster):
        docs[1]["apiServer"]["timeoutForControlPlane"] = "4m0s"
    return dump(docs)


def join_config(cluster: Cluster, host: Host, token: str, ca_hash: str, endpoint: str, control_plane: bool) -> str:
    """The file `kubeadm join --config` reads; the token is only in this 0600 file."""
    conf: dict[str, Any] = {
        "apiVersion": api_version(cluster),
        "kind": "JoinConfiguration",
        "discovery": {"bootstrapToken": {"apiServerEndpoint": endpoint, "token": token,
                                         "caCertHashes": [ca_hash]}},
        "nodeRegistration": node_registration(cluster, host, control_plane),
    }
    if is_v1beta4(cluster):
        conf["timeouts"] = {"tlsBootstrap": "5m0s", "discovery": "5m0s"}
    else:
        conf["discovery"]["timeout"] = "5m0s"
    if control_plane:
        conf["controlPlane"] = {"localAPIEndpoint": {"advertiseAddress": host.internal_ip, "bindPort": 6443}}
    elif cluster.spec.control_plane_endpoint.load_balancer == "internal":
        # The worker's local API proxy is a static pod, so the manifests directory is not empty at join.
        conf["nodeRegistration"]["ignorePreflightErrors"] = ["DirAvailable--etc-kubernetes-manifests"]
    return dump([conf])


def token_config(cluster: Cluster, token: str) -> str:
    """For `kubeadm token create --config`: the token to create, read from a file instead of argv."""
    return dump([{"apiVersion": api_version(cluster), "kind": "InitConfiguration",
                  "bootstrapTokens": [bootstrap_token(cluster, token)]}])

"""NodeLocal DNSCache: a caching DNS agent on every node, answering on a link-local address.

CoreDNS itself comes with kubeadm; kubelet points pods at the cache's address when it is enabled
(``kubelet_cluster_dns``). Cluster zones are forwarded to CoreDNS, everything else to the spec's upstream
servers or the node's resolv.conf.

With kube-proxy in iptables mode the cache also takes over CoreDNS's Service IP (NOTRACK rules, as upstream
intends), so it must reach CoreDNS through the separate kube-dns-upstream Service, whose address node-cache
fills in at start (``__PILLAR__CLUSTER__DNS__``). In ipvs mode that IP already sits on kube-ipvs0 and cannot be
bound again, in nftables mode node-cache's iptables rules do not apply, and with Cilium's kube-proxy
replacement Service IPs are translated in eBPF: there the cache listens on the link-local address only and
forwards to CoreDNS's Service IP directly (upstream's documented IPVS setup).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any

from kubexm.addons.images import dump_manifest
from kubexm.addons.release import AddonRelease
from kubexm.errors import KubexmError
from kubexm.spec.models import Cluster
from kubexm.templates import render

NAMESPACE = "kube-system"
NODE_CACHE_IMAGE = "registry.k8s.io/dns/k8s-dns-node-cache"
UPSTREAM_SERVICE = "kube-dns-upstream"
METRICS_PORT = 9253
HEALTH_PORT = 8080


def cluster_dns_ip(cluster: Cluster) -> str:
    """CoreDNS's Service address: the 10th address of the service CIDR, as kubeadm assigns it."""
    return str(ipaddress.ip_network(cluster.spec.kubernetes.service_cidr).network_address + 10)


def kubelet_cluster_dns(cluster: Cluster) -> str:
    """What kubelet's clusterDNS (the pods' nameserver) is: the node cache when enabled, else CoreDNS."""
    dns = cluster.spec.dns
    return dns.nodelocaldns_ip if dns.nodelocaldns else cluster_dns_ip(cluster)


def intercepts_service_ip(cluster: Cluster) -> bool:
    """Whether the cache also answers on CoreDNS's Service IP (only kube-proxy's iptables mode allows it)."""
    net = cluster.spec.network
    kube_proxy_replaced = net.plugin == "cilium" and net.cilium.kube_proxy_replacement
    return cluster.spec.kubernetes.proxy_mode == "iptables" and not kube_proxy_replaced


def listen_addresses(cluster: Cluster) -> list[str]:
    """The addresses node-cache binds (its -localip argument)."""
    local = cluster.spec.dns.nodelocaldns_ip
    return [local, cluster_dns_ip(cluster)] if intercepts_service_ip(cluster) else [local]


# A Corefile word: a zone, an address (IPv6 in brackets, a port, a scheme like tls://) or a resolv.conf path.
# Anything else (a space, a brace, a quote, a '#') would change the Corefile's structure.
_COREFILE_WORD = re.compile(r"^[A-Za-z0-9._:/\[\]%@-]+$")


def _corefile_words(field: str, values: list[str]) -> list[str]:
    for value in values:
        if not _COREFILE_WORD.match(value):
            raise KubexmError(f"{field}: {value!r} cannot be written into the NodeLocal DNS Corefile",
                              hint="give a domain name, an address (optionally host:port) or a file path")
    return values


def corefile(cluster: Cluster) -> str:
    """The Corefile node-cache starts from; node-cache itself substitutes __PILLAR__CLUSTER__DNS__ with the
    kube-dns-upstream Service's address at start (upstream's mechanism, not something left to fill in)."""
    dns = cluster.spec.dns
    # Through kube-dns-upstream when the cache holds CoreDNS's own IP, else straight to CoreDNS.
    to_coredns = ["__PILLAR__CLUSTER__DNS__"] if intercepts_service_ip(cluster) else [cluster_dns_ip(cluster)]
    upstream = _corefile_words("spec.dns.upstreamServers", list(dns.upstream_servers)) or ["/etc/resolv.conf"]
    _corefile_words("spec.kubernetes.dnsDomain", [cluster.spec.kubernetes.dns_domain])
    zones = [
        {"name": cluster.spec.kubernetes.dns_domain, "cluster": True, "forward": to_coredns, "force_tcp": True},
        {"name": "in-addr.arpa", "cluster": False, "forward": to_coredns, "force_tcp": True},
        {"name": "ip6.arpa", "cluster": False, "forward": to_coredns, "force_tcp": True},
        {"name": ".", "cluster": False, "forward": upstream, "force_tcp": False},
    ]
    return render("addons/nodelocaldns.Corefile.j2", zones=zones, bind=listen_addresses(cluster),
                  local_ip=dns.nodelocaldns_ip)


def nodelocaldns_manifest(cluster: Cluster) -> str:
    """ServiceAccount, kube-dns-upstream Service, Corefile ConfigMap, DaemonSet and headless metrics Service."""
    dns = cluster.spec.dns
    ns = NAMESPACE
    labels = {"k8s-app": "node-local-dns"}
    prometheus = {"prometheus.io/port": str(METRICS_PORT), "prometheus.io/scrape": "true"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "node-local-dns", "namespace": ns,
                      "labels": {"kubernetes.io/cluster-service": "true"}}},
        # Same endpoints as kube-dns under another ClusterIP: the cache's way to CoreDNS when it has taken
        # over kube-dns's own IP.
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": UPSTREAM_SERVICE, "namespace": ns,
                      "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNSUpstream"}},
         "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}],
                  "selector": {"k8s-app": "kube-dns"}}},
        {"apiVersion": "v1", "kind": "ConfigMap",
         "metadata": {"name": "node-local-dns", "namespace": ns},
         "data": {"Corefile": corefile(cluster)}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "node-local-dns", "namespace": ns, "labels": labels},
         "spec": {
             "updateStrategy": {"rollingUpdate": {"maxUnavailable": "10%"}},
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels, "annotations": prometheus},
                 "spec": {
                     "priorityClassName": "system-node-critical",
                     "serviceAccountName": "node-local-dns",
                     "hostNetwork": True,
                     "dnsPolicy": "Default",  # the node's resolv.conf: the cache cannot resolve through itself
                     "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                     {"effect": "NoExecute", "operator": "Exists"},
                                     {"effect": "NoSchedule", "operator": "Exists"}],
                     "containers": [{
                         "name": "node-cache",
                         "image": f"{NODE_CACHE_IMAGE}:{dns.nodelocaldns_version}",
                         "resources": {"requests": {"cpu": "25m", "memory": "5Mi"}},
                         "args": ["-localip", ",".join(listen_addresses(cluster)), "-conf", "/etc/Corefile",
                                  "-upstreamsvc", UPSTREAM_SERVICE],
                         # Creates the dummy interface and the NOTRACK rules on the host.
                         "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
                         "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                   {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                   {"containerPort": METRICS_PORT, "name": "metrics", "protocol": "TCP"}],
                         "livenessProbe": {"httpGet": {"host": dns.nodelocaldns_ip, "path": "/health",
                                                       "port": HEALTH_PORT},
                                           "initialDelaySeconds": 60, "timeoutSeconds": 5},
                         "volumeMounts": [{"name": "xtables-lock", "mountPath": "/run/xtables.lock",
                                           "readOnly": False},
                                          {"name": "config-volume", "mountPath": "/etc/coredns"},
                                          {"name": "kube-dns-config", "mountPath": "/etc/kube-dns"}],
                     }],
                     "volumes": [
                         {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                         # Stub domains and upstreams of a kube-dns ConfigMap, when someone set one.
                         {"name": "kube-dns-config", "configMap": {"name": "kube-dns", "optional": True}},
                         # node-cache reads Corefile.base and writes the effective /etc/Corefile itself.
                         {"name": "config-volume", "configMap": {
                             "name": "node-local-dns", "items": [{"key": "Corefile", "path": "Corefile.base"}]}}],
                 },
             },
         }},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "node-local-dns", "namespace": ns, "labels": labels, "annotations": prometheus},
         "spec": {"clusterIP": "None",  # headless: Prometheus scrapes every node's cache, not one of them
                  "ports": [{"name": "metrics", "port": METRICS_PORT, "targetPort": METRICS_PORT}],
                  "selector": labels}},
    ]
    return dump_manifest(docs, cluster)


def nodelocaldns_release(cluster: Cluster) -> AddonRelease:
    return AddonRelease("nodelocaldns", NAMESPACE, manifest=nodelocaldns_manifest(cluster), category="dns")

"""NodeLocal DNSCache: a caching DNS agent on every node, answering on a link-local address.

CoreDNS itself comes with kubeadm. kubelet points pods at the local address (see kubeadm.kubelet_cluster_dns).
The node-cache binary fills __PILLAR__CLUSTER__DNS__ and __PILLAR__UPSTREAM__SERVERS__ itself at start
(from the kube-dns-upstream Service and the node's resolv.conf), as upstream intends.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from kubexm.addons.images import dump_manifest
from kubexm.addons.release import AddonRelease
from kubexm.spec.models import Cluster


def cluster_dns_ip(cluster: Cluster) -> str:
    """CoreDNS's Service address: the 10th of the service CIDR, as kubeadm assigns it."""
    return str(ipaddress.ip_network(cluster.spec.kubernetes.service_cidr).network_address + 10)


def corefile(cluster: Cluster) -> str:
    dns = cluster.spec.dns
    ip = dns.nodelocaldns_ip
    upstream = " ".join(dns.upstream_servers) or "__PILLAR__UPSTREAM__SERVERS__"
    zones = []
    for zone, forward, extra in ((cluster.spec.kubernetes.dns_domain, "__PILLAR__CLUSTER__DNS__",
                                  "    cache {\n        success 9984 30\n        denial 9984 5\n    }\n"),
                                 ("in-addr.arpa", "__PILLAR__CLUSTER__DNS__", "    cache 30\n"),
                                 ("ip6.arpa", "__PILLAR__CLUSTER__DNS__", "    cache 30\n"),
                                 (".", upstream, "    cache 30\n")):
        tcp = " {\n        force_tcp\n    }" if forward == "__PILLAR__CLUSTER__DNS__" else ""
        health = f"    health {ip}:8080\n" if zone == cluster.spec.kubernetes.dns_domain else ""
        zones.append(f"{zone}:53 {{\n    errors\n{extra}    reload\n    loop\n    bind {ip}\n"
                     f"    forward . {forward}{tcp}\n    prometheus :9253\n{health}}}\n")
    return "\n".join(zones)


def nodelocaldns_manifest(cluster: Cluster) -> str:
    dns = cluster.spec.dns
    ns = "kube-system"
    # With kube-proxy in ipvs mode the kube-dns Service IP is bound to kube-ipvs0, so the cache only listens
    # on its link-local address; in iptables mode it also intercepts the Service IP.
    local = dns.nodelocaldns_ip if cluster.spec.kubernetes.proxy_mode == "ipvs" else \
        f"{dns.nodelocaldns_ip},{cluster_dns_ip(cluster)}"
    labels = {"k8s-app": "node-local-dns"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "node-local-dns", "namespace": ns,
                      "labels": {"kubernetes.io/cluster-service": "true"}}},
        {"apiVersion": "v1", "kind": "Service",
         "metadata": {"name": "kube-dns-upstream", "namespace": ns,
                      "labels": {"k8s-app": "kube-dns", "kubernetes.io/name": "KubeDNSUpstream"}},
         "spec": {"ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}],
                  "selector": {"k8s-app": "kube-dns"}}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "node-local-dns", "namespace": ns},
         "data": {"Corefile": corefile(cluster)}},
        {"apiVersion": "apps/v1", "kind": "DaemonSet",
         "metadata": {"name": "node-local-dns", "namespace": ns, "labels": labels},
         "spec": {
             "updateStrategy": {"rollingUpdate": {"maxUnavailable": "10%"}},
             "selector": {"matchLabels": labels},
             "template": {
                 "metadata": {"labels": labels,
                              "annotations": {"prometheus.io/port": "9253", "prometheus.io/scrape": "true"}},
                 "spec": {
                     "priorityClassName": "system-node-critical",
                     "serviceAccountName": "node-local-dns",
                     "hostNetwork": True,
                     "dnsPolicy": "Default",
                     "tolerations": [{"key": "CriticalAddonsOnly", "operator": "Exists"},
                                     {"effect": "NoExecute", "operator": "Exists"},
                                     {"effect": "NoSchedule", "operator": "Exists"}],
                     "containers": [{
                         "name": "node-cache",
                         "image": f"registry.k8s.io/dns/k8s-dns-node-cache:{dns.nodelocaldns_version}",
                         "resources": {"requests": {"cpu": "25m", "memory": "5Mi"}},
                         "args": ["-localip", local, "-conf", "/etc/Corefile", "-upstreamsvc", "kube-dns-upstream"],
                         "securityContext": {"capabilities": {"add": ["NET_ADMIN"]}},
                         "ports": [{"containerPort": 53, "name": "dns", "protocol": "UDP"},
                                   {"containerPort": 53, "name": "dns-tcp", "protocol": "TCP"},
                                   {"containerPort": 9253, "name": "metrics", "protocol": "TCP"}],
                         "livenessProbe": {"httpGet": {"host": dns.nodelocaldns_ip, "path": "/health",
                                                       "port": 8080},
                                           "initialDelaySeconds": 60, "timeoutSeconds": 5},
                         "volumeMounts": [{"mountPath": "/run/xtables.lock", "name": "xtables-lock",
                                           "readOnly": False},
                                          {"name": "config-volume", "mountPath": "/etc/coredns"},
                                          {"name": "kube-dns-config", "mountPath": "/etc/kube-dns"}],
                     }],
                     "volumes": [
                         {"name": "xtables-lock", "hostPath": {"path": "/run/xtables.lock", "type": "FileOrCreate"}},
                         {"name": "kube-dns-config", "configMap": {"name": "kube-dns", "optional": True}},
                         {"name": "config-volume", "configMap": {
                             "name": "node-local-dns", "items": [{"key": "Corefile", "path": "Corefile.base"}]}}],
                 },
             },
         }},
    ]
    return dump_manifest(docs, cluster)


def nodelocaldns_release(cluster: Cluster) -> AddonRelease:
    return AddonRelease("nodelocaldns", "kube-system", manifest=nodelocaldns_manifest(cluster), category="dns")

"""What an addon is, and which ones a cluster file enables, in install order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kubexm.spec.models import Cluster

Category = Literal["network", "dns", "storage", "addon"]


@dataclass(frozen=True)
class AddonRelease:
    name: str
    namespace: str
    manifest: str | None = None  # multi-document YAML applied with kubectl
    chart: str | None = None  # chart name (or a local .tgz) installed with helm
    chart_repo: str | None = None
    chart_version: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    category: Category = "addon"


def enabled_addons(cluster: Cluster) -> list[AddonRelease]:
    """The network plugin, NodeLocal DNSCache, then the storage provisioners the spec enables."""
    from kubexm.addons.dns import nodelocaldns_release
    from kubexm.addons.network import network_release
    from kubexm.addons.storage import storage_releases

    out: list[AddonRelease] = []
    net = network_release(cluster)
    if net is not None:
        out.append(net)
    if cluster.spec.dns.nodelocaldns:
        out.append(nodelocaldns_release(cluster))
    out += storage_releases(cluster)
    return out

"""What an addon is, and which ones a cluster file enables, in install order."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from kubexm.spec.models import Cluster

# Which install task applies a release (modules/addons.py): the CNI first, then DNS, storage, user addons.
Category = Literal["network", "dns", "storage", "addon"]


@dataclass(frozen=True)
class AddonRelease:
    """One addon: either a multi-document manifest kubexm rendered, or a Helm chart with computed values."""

    name: str
    namespace: str
    manifest: str | None = None  # multi-document YAML applied with kubectl
    chart: str | None = None  # chart name in chart_repo (or a local .tgz), installed with helm
    chart_repo: str | None = None
    chart_version: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    category: Category = "addon"

    def __post_init__(self) -> None:
        if (self.manifest is None) == (self.chart is None):
            raise ValueError(f"addon {self.name}: give either a manifest or a chart, not both or neither")


def enabled_addons(cluster: Cluster) -> list[AddonRelease]:
    """The network plugin, NodeLocal DNSCache (when enabled), then the enabled storage provisioners."""
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

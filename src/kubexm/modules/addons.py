"""Network plugin, DNS cache, storage and user addons, applied from the first control-plane node.

Tags: `network`, `dns`, `storage`, `addons` (each task also answers to `addons`).
"""

from __future__ import annotations

from collections.abc import Callable

from kubexm.addons.release import Category
from kubexm.engine import Module, Task, first, role
from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.steps.addons import ApplyAddon, all_addons
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.kubernetes import WaitClusterHealthy


def _steps(category: Category) -> Callable[[HostContext], list[Step]]:
    def build(host: HostContext) -> list[Step]:
        releases = [r for r in all_addons(host.cluster) if r.category == category]
        steps: list[Step] = []
        if any(r.chart for r in releases):
            steps.append(InstallBinaries("helm", ("helm",)))
        return steps + [ApplyAddon(r.name) for r in releases]
    return build


def _task(name: str, category: Category, tag: str, description: str, then: list[Step] | None = None) -> Task:
    return Task(name, steps=_steps(category), hosts=first(role("control-plane")),
                tags=frozenset({tag, "addons"}), then=then or [], description=description,
                when=lambda c: any(r.category == category for r in all_addons(c)))


InstallCNI = _task("InstallCNI", "network", "network", "the network plugin (Calico, Flannel or Cilium)",
                   then=[WaitClusterHealthy(timeout=600)])
InstallDNS = _task("InstallNodeLocalDNS", "dns", "dns", "NodeLocal DNSCache on every node")
InstallStorage = _task("InstallStorage", "storage", "storage", "storage provisioners and the default class")
InstallAddons = _task("InstallAddons", "addon", "addons", "the cluster file's own addons (charts, manifests)")

AddonsModule = Module(
    "AddonsModule", tasks=[InstallCNI, InstallDNS, InstallStorage, InstallAddons],
    enabled=lambda c: c.spec.kubernetes.deploy_mode == "kubeadm", tags=frozenset({"addons"}),
    description="network plugin, DNS cache, storage and addons",
)

"""Which hosts a task targets: by role, all, the first of a group, or the deploy machine."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kubexm.hosts.base import DEPLOY
from kubexm.spec.models import Cluster

__all__ = ["DEPLOY", "Selector", "all_hosts", "deploy_machine", "first", "named", "rest", "role"]


@dataclass(frozen=True)
class Selector:
    label: str
    pick: Callable[[Cluster], list[str]]

    def __call__(self, cluster: Cluster) -> list[str]:
        return self.pick(cluster)

    def __or__(self, other: Selector) -> Selector:
        def union(cluster: Cluster) -> list[str]:
            names = self(cluster)
            return names + [n for n in other(cluster) if n not in names]

        return Selector(f"{self.label}|{other.label}", union)

    def __str__(self) -> str:
        return self.label


def role(name: str) -> Selector:
    return Selector(f"role:{name}", lambda c: [h.name for h in c.hosts_with_role(name)])


def all_hosts() -> Selector:
    return Selector("all", lambda c: [h.name for h in c.spec.hosts])


def first(selector: Selector) -> Selector:
    return Selector(f"first({selector.label})", lambda c: selector(c)[:1])


def rest(selector: Selector) -> Selector:
    return Selector(f"rest({selector.label})", lambda c: selector(c)[1:])


def deploy_machine() -> Selector:
    return Selector("deploy-machine", lambda c: [DEPLOY])


def named(*names: str) -> Selector:
    return Selector(f"hosts:{','.join(names)}", lambda c: [h.name for h in c.spec.hosts if h.name in names])

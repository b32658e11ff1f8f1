"""LoadBalancerModule: the control-plane endpoint before kubeadm needs it (tag `loadbalancer`)."""

from __future__ import annotations

from collections.abc import Callable

from kubexm.balancer.configs import CHECK_SCRIPT, HAPROXY_CFG, KEEPALIVED_CONF
from kubexm.balancer.plan import endpoint_plan
from kubexm.engine import Module, Task, first, role
from kubexm.engine.selectors import Selector
from kubexm.spec.models import Cluster
from kubexm.steps.balancer import (
    HaproxyConfig,
    InternalProxy,
    KeepalivedConfig,
    KubeVipManifest,
    WaitHaproxyServing,
)
from kubexm.steps.common import Systemd
from kubexm.steps.os import Packages


def balancers() -> Selector:
    return Selector("balancers", lambda c: list(endpoint_plan(c).balancers))


def _kind(name: str) -> Callable[[Cluster], bool]:
    return lambda c: c.spec.control_plane_endpoint.load_balancer == name


TAGS = frozenset({"loadbalancer"})

InstallHaproxyKeepalived = Task(
    "SetupLoadBalancer",
    steps=[Packages("loadbalancer", ("haproxy", "keepalived")), HaproxyConfig(), KeepalivedConfig(),
           Systemd("haproxy", restart_on=(HAPROXY_CFG,), on_change="reload-or-restart"), WaitHaproxyServing(),
           Systemd("keepalived", restart_on=(KEEPALIVED_CONF, CHECK_SCRIPT), on_change="reload-or-restart")],
    hosts=balancers(), tags=TAGS, when=_kind("haproxy-keepalived"), whole_cluster=True,
    description="haproxy to every apiserver and keepalived holding the VIP, on the balancer hosts",
)

KubeVipFirstNode = Task(
    "SetupKubeVip", steps=[KubeVipManifest(first=True)], hosts=first(role("control-plane")), tags=TAGS,
    when=_kind("kube-vip"),
    description="kube-vip static pod on the first control-plane node, ready before kubeadm init",
)

InternalApiProxy = Task(
    "SetupInternalProxy", steps=[InternalProxy()], hosts=balancers(), tags=TAGS, when=_kind("internal"),
    whole_cluster=True,
    description="a local haproxy static pod on every worker, forwarding 127.0.0.1:6443 to all apiservers",
)


def _managed(cluster: Cluster) -> bool:
    return cluster.spec.control_plane_endpoint.load_balancer in ("haproxy-keepalived", "kube-vip", "internal")


LoadBalancerModule = Module(
    "LoadBalancerModule", tasks=[InstallHaproxyKeepalived, KubeVipFirstNode, InternalApiProxy],
    enabled=_managed, tags=TAGS, description="the highly available control-plane endpoint",
)

"""KubernetesModule: kubeadm, kubelet and kubectl everywhere, the first control plane, the others, workers."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Task, deploy_machine, first, rest, role
from kubexm.engine.selectors import Selector
from kubexm.spec.models import Cluster
from kubexm.steps.balancer import KubeVipManifest
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.cert_timer import CertAutoRenewTimer
from kubexm.steps.kubernetes import (
    EnsureKubernetesPKI,
    ExpireJoinToken,
    KubeadmInit,
    KubeadmJoin,
    KubeletUnit,
    LabelNodes,
    PlaceKubernetesCerts,
    WaitClusterHealthy,
    WriteAdminKubeconfig,
)


def kube_nodes() -> Selector:
    return role("control-plane") | role("worker")


def workers_only() -> Selector:
    """Workers that are not also control-plane nodes (those join as control planes)."""
    return Selector("role:worker-only", lambda c: [h.name for h in c.hosts_with_role("worker")
                                                   if h.name not in c.spec.role_groups.control_plane])


TAGS = frozenset({"kubernetes"})

GenerateKubernetesPKI = Task(
    "GenerateKubernetesPKI", steps=[EnsureKubernetesPKI()], hosts=deploy_machine(), tags=TAGS | {"pki"},
    description="cluster CA, apiserver, front-proxy and service-account keys on the deploy machine",
)

InstallKubernetes = Task(
    "InstallKubernetes",
    steps=[InstallBinaries("kubeadm", ("kubeadm",)), InstallBinaries("kubelet", ("kubelet",)),
           InstallBinaries("kubectl", ("kubectl",)), InstallBinaries("crictl", ("crictl",)), KubeletUnit()],
    hosts=kube_nodes(), tags=TAGS,
    description="kubeadm, kubelet, kubectl and crictl from verified assets; the kubelet unit and drop-in",
)

BootstrapFirstMaster = Task(
    "BootstrapFirstMaster", steps=[PlaceKubernetesCerts(), KubeadmInit()],
    hosts=first(role("control-plane")), tags=TAGS | {"control-plane"},
    then=[WaitClusterHealthy(timeout=300, require_nodes_ready=False)],
    description="kubexm's certificates in place, then kubeadm init on the first control-plane node",
)

JoinOtherMasters = Task(
    "JoinOtherMasters", steps=[PlaceKubernetesCerts(), KubeadmJoin(control_plane=True)],
    hosts=rest(role("control-plane")), tags=TAGS | {"control-plane"}, strategy=SERIAL,
    description="one control-plane node at a time: certificates, kubeadm join --control-plane",
)

JoinWorkers = Task(
    "JoinWorkers", steps=[KubeadmJoin()], hosts=workers_only(), tags=TAGS | {"worker"},
    then=[ExpireJoinToken(), LabelNodes(), WaitClusterHealthy(timeout=300, require_nodes_ready=False)],
    then_on=first(role("control-plane")),
    description="kubeadm join on every worker in parallel; then the token is deleted and roles labelled",
)

KubeVipAllControlPlanes = Task(
    "KubeVipOnControlPlanes", steps=[KubeVipManifest()], hosts=role("control-plane"),
    tags=TAGS | {"loadbalancer"}, when=lambda c: c.spec.control_plane_endpoint.load_balancer == "kube-vip",
    whole_cluster=True,
    description="kube-vip on every control-plane node once joined (the first one back on admin.conf)",
)

FetchKubeconfig = Task(
    "FetchKubeconfig", steps=[WriteAdminKubeconfig()], hosts=deploy_machine(), tags=TAGS | {"kubeconfig"},
    description="admin kubeconfig on the deploy machine, merged as context kubexm-NAME",
)


CertAutoRenewal = Task(
    "CertAutoRenewal", steps=[CertAutoRenewTimer()], hosts=role("control-plane") | role("etcd"),
    tags=TAGS | {"pki", "certs"},
    description="spec.pki.autoRenew: a systemd timer renewing certificates before they expire (removed when off)",
)


def _kubeadm(cluster: Cluster) -> bool:
    return cluster.spec.kubernetes.deploy_mode == "kubeadm"


KubernetesModule = Module(
    "KubernetesModule",
    tasks=[GenerateKubernetesPKI, InstallKubernetes, BootstrapFirstMaster, JoinOtherMasters,
           KubeVipAllControlPlanes, JoinWorkers, FetchKubeconfig, CertAutoRenewal],
    enabled=_kubeadm, tags=TAGS,
    description="bring up Kubernetes with kubeadm on kubexm's certificates",
)

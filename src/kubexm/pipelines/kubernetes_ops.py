"""Day-2 Kubernetes pipelines: add and delete nodes, upgrade, cordon/uncordon, restart, delete the cluster."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role, rolling
from kubexm.engine.selectors import Selector
from kubexm.modules.assets import AssetsModule, DistributeAssets
from kubexm.modules.infrastructure import InfrastructureModule
from kubexm.modules.kubernetes import (
    FetchKubeconfig,
    GenerateKubernetesPKI,
    InstallKubernetes,
    kube_nodes,
    workers_only,
)
from kubexm.modules.loadbalancer import InstallHaproxyKeepalived, InternalApiProxy, LoadBalancerModule
from kubexm.modules.runtime import ContainerRuntimeModule
from kubexm.pipelines.etcd_ops import AddNodesEtcdModule, DeleteNodesEtcdModule
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.kube_ops import (
    CheckUpgradeSkew,
    Cordon,
    DeleteNodeObject,
    Drain,
    KubeadmReset,
    KubeadmUpgrade,
    RefuseLastControlPlane,
    RestartKubelet,
    TeardownNode,
    plan_upgrade,
)
from kubexm.steps.kubernetes import ExpireJoinToken, KubeadmJoin, LabelNodes, PlaceKubernetesCerts

K8S = frozenset({"kubernetes"})

# -- add nodes ---------------------------------------------------------------------------------
AddControlPlanes = Task(
    "AddControlPlaneNodes", steps=[PlaceKubernetesCerts(), KubeadmJoin(control_plane=True)],
    hosts=role("control-plane"), tags=K8S, strategy=SERIAL,
    description="certificates (new SANs included), then kubeadm join --control-plane, one node at a time",
)
# The apiserver certificate gains the new node's addresses: every control plane gets the new one
# (kube-apiserver reloads its serving certificate from disk).
RefreshControlPlaneCerts = Task(
    "RefreshControlPlaneCerts", steps=[PlaceKubernetesCerts()], hosts=role("control-plane"), tags=K8S,
    whole_cluster=True, description="the reissued apiserver certificate on every control-plane node",
)
AddWorkers = Task(
    "AddWorkerNodes", steps=[KubeadmJoin()], hosts=workers_only(), tags=K8S,
    then=[ExpireJoinToken(), LabelNodes()], then_on=first(role("control-plane")),
    description="kubeadm join on the new workers in parallel, then delete the token and label them",
)


def _kubexm_etcd(cluster: Cluster) -> bool:
    return cluster.spec.etcd.type == "kubexm"


AddNodesKubernetesModule = Module(
    "AddNodesKubernetesModule",
    tasks=[GenerateKubernetesPKI, InstallKubernetes, RefreshControlPlaneCerts, AddControlPlanes, AddWorkers,
           FetchKubeconfig],
    tags=K8S, description="join new control-plane and worker nodes",
)

ADD_KUBE_NODES = Pipeline(
    "AddKubernetesNodesPipeline",
    modules=[InfrastructureModule, AssetsModule, ContainerRuntimeModule,
             Module("AddNodesEtcd", AddNodesEtcdModule.tasks, enabled=_kubexm_etcd, tags=frozenset({"etcd"})),
             LoadBalancerModule, AddNodesKubernetesModule],
    description="add worker or control-plane nodes: OS, runtime, etcd member (control planes), join",
)

# -- delete nodes ------------------------------------------------------------------------------
CheckRemaining = Task("CheckRemainingControlPlane", steps=[RefuseLastControlPlane()], hosts=deploy_machine(),
                      tags=K8S, description="refuse to delete the last control-plane node")
RemoveFromKubernetes = Task(
    "RemoveNodes", steps=[Cordon(), Drain(), DeleteNodeObject(), KubeadmReset()], hosts=kube_nodes(), tags=K8S,
    strategy=SERIAL, description="cordon, drain, delete the Node, kubeadm reset and clean up, one node at a time",
)
DeleteNodesChecks = Module("DeleteNodesChecks", [CheckRemaining], tags=K8S,
                           description="refusals before anything changes")
DeleteNodesKubernetesModule = Module(
    "DeleteNodesKubernetesModule",
    # Balancers stop sending traffic to a leaving control plane before it is drained and reset.
    [InstallHaproxyKeepalived, InternalApiProxy, RemoveFromKubernetes],
    tags=K8S, description="remove nodes from Kubernetes",
)
DELETE_KUBE_NODES = Pipeline(
    "DeleteKubernetesNodesPipeline",
    # etcd first: its quorum check refuses a removal before anything of Kubernetes is touched.
    modules=[DeleteNodesChecks,
             Module("DeleteNodesEtcd", DeleteNodesEtcdModule.tasks, enabled=_kubexm_etcd, tags=frozenset({"etcd"})),
             DeleteNodesKubernetesModule],
    description="delete nodes: leave etcd when members (quorum kept), then drain and remove from Kubernetes",
)

# -- upgrade -----------------------------------------------------------------------------------
# The plan is reported while the task's steps are listed (plan_upgrade), which an offline `--plan` run does too.
PlanUpgrade = Task("PlanUpgrade", steps=plan_upgrade, hosts=deploy_machine(), tags=frozenset({"plan"}),
                   description="the ordered upgrade plan (refuses a skipped minor or a downgrade)")
CheckSkew = Task("CheckUpgradeSkew", steps=[CheckUpgradeSkew()], hosts=first(role("control-plane")),
                 tags=frozenset({"control-plane", "worker"}), description="running version vs --to-version")


def _upgrade_steps(apply: bool) -> list[object]:
    return [InstallBinaries("kubeadm", ("kubeadm",)), KubeadmUpgrade(apply=apply), Cordon(), Drain(upgrade=True),
            InstallBinaries("kubelet", ("kubelet",)), InstallBinaries("kubectl", ("kubectl",)), RestartKubelet(),
            Cordon(uncordon=True)]


UpgradeFirstControlPlane = Task(
    "UpgradeFirstControlPlane", steps=_upgrade_steps(True), hosts=first(role("control-plane")),  # type: ignore[arg-type]
    tags=frozenset({"control-plane"}), description="kubeadm upgrade apply on the first control-plane node",
)
UpgradeOtherControlPlanes = Task(
    "UpgradeOtherControlPlanes", steps=_upgrade_steps(False),  # type: ignore[arg-type]
    hosts=Selector("rest(role:control-plane)", lambda c: [h.name for h in c.hosts_with_role("control-plane")][1:]),
    tags=frozenset({"control-plane"}), strategy=SERIAL,
    description="kubeadm upgrade node on the other control-plane nodes, one at a time",
)


def _upgrade_workers() -> Task:
    steps = [Cordon(), Drain(upgrade=True), InstallBinaries("kubeadm", ("kubeadm",)), KubeadmUpgrade(),
             InstallBinaries("kubelet", ("kubelet",)), InstallBinaries("kubectl", ("kubectl",)), RestartKubelet(),
             Cordon(uncordon=True)]
    return Task("UpgradeWorkerNodes", steps=steps, hosts=workers_only(), tags=frozenset({"worker"}),
                strategy=rolling(1, option="node_concurrency"),
                description="workers --node-concurrency at a time: drain, upgrade, restart kubelet, uncordon")


UPGRADE_CLUSTER = Pipeline(
    "UpgradeClusterPipeline",
    # The new release files are relayed once the upgrade is known to be allowed, before the first node.
    modules=[Module("UpgradeControlPlaneModule", [PlanUpgrade, CheckSkew, DistributeAssets,
                                                  UpgradeFirstControlPlane, UpgradeOtherControlPlanes],
                    tags=frozenset({"control-plane"})),
             Module("UpgradeWorkersModule", [_upgrade_workers()], tags=frozenset({"worker"}))],
    description="upgrade Kubernetes: control planes one at a time, then workers in batches",
)

# -- cordon / uncordon / delete cluster ----------------------------------------------------------
CORDON_NODE = Pipeline("CordonNodePipeline", [Module("Cordon", [Task("Cordon", [Cordon()], hosts=kube_nodes())])],
                       description="mark nodes unschedulable")
UNCORDON_NODE = Pipeline("UncordonNodePipeline",
                         [Module("Uncordon", [Task("Uncordon", [Cordon(uncordon=True)], hosts=kube_nodes())])],
                         description="mark nodes schedulable again")

DELETE_CLUSTER = Pipeline(
    "DeleteClusterPipeline",
    [Module("TeardownModule", [Task("TeardownNodes", [TeardownNode()],
                                    hosts=Selector("all", lambda c: [h.name for h in c.spec.hosts]),
                                    on_failure="continue",
                                    description="reset every node in parallel; etcd backups are kept")])],
    description="delete the cluster from every node (backups kept)",
)

ALL = [ADD_KUBE_NODES, DELETE_KUBE_NODES, UPGRADE_CLUSTER, CORDON_NODE, UNCORDON_NODE, DELETE_CLUSTER]

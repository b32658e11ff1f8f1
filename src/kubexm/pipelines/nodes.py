"""Node pipelines: add nodes, delete nodes, cordon and uncordon (upgrades: ``pipelines.upgrade``)."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role
from kubexm.modules.assets import AssetsModule
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
from kubexm.steps.kubernetes import ExpireJoinToken, KubeadmJoin, LabelNodes, PlaceKubernetesCerts
from kubexm.steps.nodes import Cordon, DeleteNodeObject, Drain, KubeadmReset, RefuseLastControlPlane

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

# -- cordon / uncordon -------------------------------------------------------------------------
CORDON_NODE = Pipeline("CordonNodePipeline", [Module("Cordon", [Task("Cordon", [Cordon()], hosts=kube_nodes())])],
                       description="mark nodes unschedulable")
UNCORDON_NODE = Pipeline("UncordonNodePipeline",
                         [Module("Uncordon", [Task("Uncordon", [Cordon(uncordon=True)], hosts=kube_nodes())])],
                         description="mark nodes schedulable again")

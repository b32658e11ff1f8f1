"""The upgrade pipelines: Kubernetes (the plan, the skew check, control planes one at a time, then workers in
batches) and kubexm's etcd (one member at a time). Each keeps a rollback point before the first node changes."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role, rolling
from kubexm.engine.selectors import Selector
from kubexm.modules.assets import DistributeAssets
from kubexm.modules.kubernetes import kube_nodes, workers_only
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.etcd import EtcdService, WaitEtcdHealthy
from kubexm.steps.nodes import Cordon, Drain
from kubexm.steps.rollback import KeepRollbackPoint, NodeHealthy, SaveRollbackFiles
from kubexm.steps.upgrade import CheckUpgradeSkew, KubeadmUpgrade, RestartKubelet, plan_upgrade

# The plan is reported while the task's steps are listed (plan_upgrade), which an offline `--plan` run does too.
PlanUpgrade = Task("PlanUpgrade", steps=plan_upgrade, hosts=deploy_machine(), tags=frozenset({"plan"}),
                   description="the ordered upgrade plan (refuses a skipped minor or a downgrade)")
CheckSkew = Task("CheckUpgradeSkew", steps=[CheckUpgradeSkew()], hosts=first(role("control-plane")),
                 tags=frozenset({"control-plane", "worker"}), description="running version vs --to-version")

# What `kubexm rollback cluster` goes back to: an etcd snapshot and the record, then each node's copies, all
# before the first node changes. Tagged for both halves, so --control-plane-only and --workers-only keep them.
ROLLBACK_TAGS = frozenset({"control-plane", "worker", "rollback"})
KeepKubernetesRollbackPoint = Task(
    "KeepKubernetesRollbackPoint", steps=[KeepRollbackPoint("kubernetes")], hosts=deploy_machine(), tags=ROLLBACK_TAGS,
    description="etcd snapshot right before the upgrade, recorded in the state store as the rollback point",
)
SaveKubernetesRollbackFiles = Task(
    "SaveKubernetesRollbackFiles", steps=[SaveRollbackFiles("kubernetes")], hosts=kube_nodes(), tags=ROLLBACK_TAGS,
    description="each node keeps its kubeadm, kubelet, kubectl, static pod manifests and kubelet config",
)


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
    modules=[Module("UpgradeControlPlaneModule", [PlanUpgrade, CheckSkew, KeepKubernetesRollbackPoint,
                                                  SaveKubernetesRollbackFiles, DistributeAssets,
                                                  UpgradeFirstControlPlane, UpgradeOtherControlPlanes],
                    tags=frozenset({"control-plane"})),
             Module("UpgradeWorkersModule", [_upgrade_workers()], tags=frozenset({"worker"}))],
    description="upgrade Kubernetes: control planes one at a time, then workers in batches",
)


# -- etcd ---------------------------------------------------------------------------------------------
def _kubexm_etcd(cluster: Cluster) -> bool:
    return cluster.spec.etcd.type == "kubexm"


ETCD_TAGS = frozenset({"etcd"})
KeepEtcdRollbackPoint = Task(
    "KeepEtcdRollbackPoint", steps=[KeepRollbackPoint("etcd")], hosts=deploy_machine(), tags=ETCD_TAGS | {"rollback"},
    description="etcd snapshot right before the upgrade, recorded in the state store as the rollback point",
)
SaveEtcdRollbackFiles = Task(
    "SaveEtcdRollbackFiles", steps=[SaveRollbackFiles("etcd")], hosts=role("etcd"), tags=ETCD_TAGS | {"rollback"},
    description="each member keeps its etcd and etcdctl binaries, env file and unit",
)
UpgradeEtcdMembers = Task(
    "UpgradeEtcdMembers",
    # A running cluster keeps its quorum while one member restarts, so the restart waits for it to be ready.
    steps=[InstallBinaries("etcd", ("etcd", "etcdctl")), EtcdService(no_block=False), WaitEtcdHealthy(),
           NodeHealthy()],
    hosts=role("etcd"), tags=ETCD_TAGS, strategy=SERIAL,
    description="one member at a time: the new binaries, a restart, every member healthy before the next",
)
UPGRADE_ETCD = Pipeline(
    "UpgradeEtcdPipeline",
    [Module("UpgradeEtcdModule", [KeepEtcdRollbackPoint, SaveEtcdRollbackFiles, UpgradeEtcdMembers],
            enabled=_kubexm_etcd, tags=ETCD_TAGS)],
    description="upgrade kubexm's etcd one member at a time, keeping a rollback point",
)

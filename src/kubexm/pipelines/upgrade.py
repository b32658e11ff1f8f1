"""The upgrade pipeline: the plan, the skew check, control planes one at a time, then workers in batches."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role, rolling
from kubexm.engine.selectors import Selector
from kubexm.modules.assets import DistributeAssets
from kubexm.modules.kubernetes import workers_only
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.nodes import Cordon, Drain
from kubexm.steps.upgrade import CheckUpgradeSkew, KubeadmUpgrade, RestartKubelet, plan_upgrade

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

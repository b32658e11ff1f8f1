"""`kubexm rollback cluster`: the last upgrade's rollback point put back node by node, health gated; etcd's data
from the snapshot taken right before the upgrade only when asked (tag `etcd-data`, skipped by default)."""

from __future__ import annotations

from dataclasses import dataclass

from kubexm.engine import SERIAL, HostContext, Module, Pipeline, Step, Task, deploy_machine
from kubexm.engine.selectors import Selector
from kubexm.errors import StepFailed
from kubexm.pipelines.etcd_ops import RestoreETCD, StopETCD, VerifyETCDBackup
from kubexm.spec.models import Cluster
from kubexm.steps.common import Systemd
from kubexm.steps.rollback import (
    RESTARTS,
    FinishRollback,
    NodeHealthy,
    RestoreRollbackFiles,
    point_for_rollback,
)

ETCD_DATA_TAG = "etcd-data"


def _workers_first() -> Selector:
    """Every host, workers first: a kubelet may be older than its API server, never newer, so the upgrade's
    order (control planes first) is reversed on the way back."""
    def pick(cluster: Cluster) -> list[str]:
        cps = [h.name for h in cluster.hosts_with_role("control-plane")]
        return [h.name for h in cluster.spec.hosts if h.name not in cps] + cps
    return Selector("all(workers first)", pick)


def _restore_steps(host: HostContext) -> list[Step]:
    """Nodes the upgrade reached: files back, the unit restarted on them, the health gate. Others: nothing."""
    point = point_for_rollback(host.run_ctx)
    if host.name not in point.get("nodes", []):
        return []
    unit, restart_on = RESTARTS[str(point["component"])]
    if unit == "kubelet" and not set(host.roles) & {"control-plane", "worker"}:
        return []
    return [RestoreRollbackFiles(), Systemd(unit, restart_on=restart_on), NodeHealthy()]


@dataclass(frozen=True)
class CheckRollbackPoint(Step):
    """Before anything changes: refuse when the state store has no rollback point for this cluster."""

    mutates = False

    def describe(self) -> str:
        return "find the last upgrade's rollback point"

    async def run(self, host: HostContext) -> None:
        point = point_for_rollback(host.run_ctx)
        if ETCD_DATA_TAG not in host.run_ctx.options.skip_tags and not point.get("snapshot"):
            raise StepFailed(f"the rollback point {point['id']} has no etcd snapshot to restore",
                             hint="roll back without --restore-etcd-data")
        host.emit("message", message=f"rolling back {point['component']} {point['to']} -> {point.get('from')}")


FindRollbackPoint = Task("FindRollbackPoint", steps=[CheckRollbackPoint()], hosts=deploy_machine(), tags=frozenset({"rollback"}),
                         description="the last upgrade's rollback point from the state store")
RestoreNodeFiles = Task(
    "RestoreNodeFiles", steps=_restore_steps, hosts=_workers_first(), tags=frozenset({"rollback"}), strategy=SERIAL,
    description="one node at a time: binaries and configs back, the unit restarted, health checked",
)
FinishRollbackTask = Task("FinishRollback", steps=[FinishRollback()], hosts=deploy_machine(),
                          tags=frozenset({"rollback"}), description="the rollback point is marked as used")

RollbackModule = Module("RollbackModule", [FindRollbackPoint, RestoreNodeFiles], tags=frozenset({"rollback"}),
                        description="binaries and configs as they were before the last upgrade")
# The snapshot is restored with the previous binaries back in place: the same etcd that wrote it reads it.
RollbackEtcdDataModule = Module("RollbackEtcdDataModule", [VerifyETCDBackup, StopETCD, RestoreETCD],
                                enabled=lambda c: c.spec.etcd.type == "kubexm", tags=frozenset({ETCD_DATA_TAG}),
                                description="etcd's data from the snapshot taken right before the upgrade")
FinishRollbackModule = Module("FinishRollbackModule", [FinishRollbackTask], tags=frozenset({"rollback"}))

ROLLBACK_CLUSTER = Pipeline(
    "RollbackClusterPipeline", [RollbackModule, RollbackEtcdDataModule, FinishRollbackModule],
    description="undo the last upgrade: binaries and configs node by node; etcd data only when asked",
)

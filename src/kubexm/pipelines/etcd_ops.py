"""Day-2 etcd pipelines: backup, restore, membership (certificates: kubexm.pipelines.certs)."""

from __future__ import annotations

from kubexm.engine import SERIAL, HostContext, Module, Pipeline, Step, Task, all_hosts, deploy_machine, first, role
from kubexm.modules.etcd import GenerateEtcdPKI
from kubexm.steps.etcd import EtcdBootstrap, EtcdService, WaitEtcdHealthy, install_steps
from kubexm.steps.etcd_backup import BackupEtcd, RestoreMember, StopEtcd, VerifyBackup
from kubexm.steps.etcd_members import CleanEtcdNode, JoinEtcdCluster, LeaveEtcdCluster

BackupETCD = Task("BackupETCD", steps=[BackupEtcd()], hosts=deploy_machine(), tags=frozenset({"etcd", "backup"}),
                  description="snapshot on a healthy member, verified copy on the deploy machine, retention")

VerifyETCDBackup = Task("VerifyETCDBackup", steps=[VerifyBackup()], hosts=deploy_machine(),
                        tags=frozenset({"etcd", "restore"}), description="check the archive's checksums first")
StopETCD = Task("StopETCD", steps=[StopEtcd()], hosts=role("etcd"), tags=frozenset({"etcd", "restore"}),
                description="stop every member")
RestoreETCD = Task("RestoreETCD", steps=[RestoreMember()], hosts=role("etcd"), tags=frozenset({"etcd", "restore"}),
                   then=[WaitEtcdHealthy()], then_on=first(role("etcd")),
                   description="restore the snapshot on every member with its own name and peer URL, start, wait")


EtcdBackupModule = Module("EtcdBackupModule", [BackupETCD], description="etcd snapshots")
EtcdRestoreModule = Module("EtcdRestoreModule", [VerifyETCDBackup, StopETCD, RestoreETCD],
                           description="restore etcd from a kubexm backup")

BACKUP_CLUSTER = Pipeline("BackupClusterPipeline", [EtcdBackupModule], description="back up etcd")
RESTORE_CLUSTER = Pipeline("RestoreClusterPipeline", [EtcdRestoreModule], description="restore etcd from a backup")


def _join_steps(host: HostContext) -> list[Step]:
    # Same files as a fresh install, but the member joins through `member add` instead of bootstrapping.
    return [s for s in install_steps(host) if not isinstance(s, EtcdBootstrap | EtcdService)] + [JoinEtcdCluster()]


AddEtcdMember = Task("AddEtcdMember", steps=_join_steps, hosts=role("etcd"), tags=frozenset({"etcd"}),
                     strategy=SERIAL, description="add the selected hosts as etcd members, one at a time")
RemoveEtcdMember = Task("RemoveEtcdMember", steps=[LeaveEtcdCluster(), CleanEtcdNode()], hosts=all_hosts(),
                        tags=frozenset({"etcd"}), strategy=SERIAL,
                        description="remove the selected hosts from etcd one at a time, then clean them")

AddNodesEtcdModule = Module("AddEtcdMembersModule", [GenerateEtcdPKI, AddEtcdMember],
                            description="grow the etcd cluster")
DeleteNodesEtcdModule = Module("RemoveEtcdMembersModule", [RemoveEtcdMember], description="shrink the etcd cluster")
ADD_NODES = Pipeline("AddNodesPipeline", [AddNodesEtcdModule], description="add nodes (etcd members so far)")
DELETE_NODES = Pipeline("DeleteNodesPipeline", [DeleteNodesEtcdModule],
                        description="delete nodes (etcd membership so far)")

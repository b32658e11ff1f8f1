"""Day-2 etcd pipelines: backup, restore, certificate check and renewal."""

from __future__ import annotations

from kubexm.engine import SERIAL, Module, Pipeline, Task, all_hosts, deploy_machine, first, role
from kubexm.modules.etcd import GenerateEtcdPKI
from kubexm.steps.certs import CertsReport, CollectCerts, RenewEtcdLeaves, RestartEtcdIfChanged
from kubexm.steps.etcd import PlaceEtcdCerts, WaitEtcdHealthy
from kubexm.steps.etcd_backup import BackupEtcd, RestoreMember, StopEtcd, VerifyBackup

BackupETCD = Task("BackupETCD", steps=[BackupEtcd()], hosts=deploy_machine(), tags=frozenset({"etcd", "backup"}),
                  description="snapshot on a healthy member, verified copy on the deploy machine, retention")

VerifyETCDBackup = Task("VerifyETCDBackup", steps=[VerifyBackup()], hosts=deploy_machine(),
                        tags=frozenset({"etcd", "restore"}), description="check the archive's checksums first")
StopETCD = Task("StopETCD", steps=[StopEtcd()], hosts=role("etcd"), tags=frozenset({"etcd", "restore"}),
                description="stop every member")
RestoreETCD = Task("RestoreETCD", steps=[RestoreMember()], hosts=role("etcd"), tags=frozenset({"etcd", "restore"}),
                   then=[WaitEtcdHealthy()], then_on=first(role("etcd")),
                   description="restore the snapshot on every member with its own name and peer URL, start, wait")

CheckCerts = Task("CheckCerts", steps=[CollectCerts()], hosts=all_hosts(), tags=frozenset({"certs"}),
                  then=[CertsReport()], then_on=deploy_machine(), on_failure="continue",
                  description="every certificate on every node and the deploy machine, with expiry")
RenewEtcdCerts = Task("RenewEtcdCerts", steps=[RenewEtcdLeaves()], hosts=deploy_machine(),
                      tags=frozenset({"certs", "etcd"}), description="new etcd leaves from the same CA")
RollEtcdCerts = Task("RollEtcdCerts", steps=[PlaceEtcdCerts(), RestartEtcdIfChanged()], hosts=role("etcd"),
                     tags=frozenset({"certs", "etcd"}), strategy=SERIAL,
                     description="distribute, then restart one member at a time, waiting for health in between")

EtcdBackupModule = Module("EtcdBackupModule", [BackupETCD], description="etcd snapshots")
EtcdRestoreModule = Module("EtcdRestoreModule", [VerifyETCDBackup, StopETCD, RestoreETCD],
                           description="restore etcd from a kubexm backup")
CertsCheckModule = Module("CertsCheckModule", [CheckCerts], description="certificate expiry")
CertsRenewModule = Module("CertsRenewModule", [GenerateEtcdPKI, RenewEtcdCerts, RollEtcdCerts],
                          description="renew etcd certificates with a rolling restart")

BACKUP_CLUSTER = Pipeline("BackupClusterPipeline", [EtcdBackupModule], description="back up etcd")
RESTORE_CLUSTER = Pipeline("RestoreClusterPipeline", [EtcdRestoreModule], description="restore etcd from a backup")
CHECK_CERTS = Pipeline("CheckCertsPipeline", [CertsCheckModule], description="show certificate expiry everywhere")
RENEW_CERTS = Pipeline("RenewCertsPipeline", [CertsRenewModule], description="renew certificates without downtime")

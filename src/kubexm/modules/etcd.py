"""EtcdModule: a TLS etcd cluster as systemd units on the etcd hosts (etcd type `kubexm`)."""

from __future__ import annotations

from kubexm.engine import Module, Task, deploy_machine, first, role
from kubexm.spec.models import Cluster
from kubexm.steps.etcd import CheckExternalEtcd, EnsureEtcdPKI, WaitEtcdHealthy, install_steps

GenerateEtcdPKI = Task(
    "GenerateEtcdPKI", steps=[EnsureEtcdPKI()], hosts=deploy_machine(), tags=frozenset({"etcd", "pki"}),
    description="etcd CA, member server/peer and client certificates on the deploy machine",
)

InstallEtcdCluster = Task(
    "InstallEtcdCluster", steps=install_steps, hosts=role("etcd"), tags=frozenset({"etcd"}),
    then=[WaitEtcdHealthy()], then_on=first(role("etcd")),
    description="binaries, certificates, config and systemd unit on every member, then wait for health",
)


def _kubexm_etcd(cluster: Cluster) -> bool:
    # type external: the user runs etcd; type kubeadm: stacked etcd comes with the control plane.
    return cluster.spec.etcd.type == "kubexm"


EtcdModule = Module(
    "EtcdModule", tasks=[GenerateEtcdPKI, InstallEtcdCluster], enabled=_kubexm_etcd, tags=frozenset({"etcd"}),
    description="install and start a TLS etcd cluster",
)


CheckExternalEtcdTask = Task(
    "CheckExternalEtcd", steps=[CheckExternalEtcd()], hosts=deploy_machine(), tags=frozenset({"etcd"}),
    description="etcd type external: verify the given endpoints over TLS; install nothing",
)

ExternalEtcdModule = Module(
    "ExternalEtcdModule", tasks=[CheckExternalEtcdTask], enabled=lambda c: c.spec.etcd.type == "external",
    tags=frozenset({"etcd"}), description="use an existing etcd cluster",
)

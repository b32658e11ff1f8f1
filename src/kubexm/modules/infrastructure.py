"""InfrastructureModule: prepare every node's OS for Kubernetes (tag `os`)."""

from __future__ import annotations

from kubexm.engine import Module, Task, all_hosts
from kubexm.steps.os import (
    BasePackages,
    DisableSwap,
    Firewall,
    HostsFile,
    KernelModules,
    SELinuxPermissive,
    SetHostname,
    SyncTime,
    Sysctl,
)

PrepareNodesOS = Task(
    "PrepareNodesOS",
    steps=[SetHostname(), HostsFile(), DisableSwap(), Firewall(), SELinuxPermissive(), KernelModules(), Sysctl(),
           BasePackages()],
    hosts=all_hosts(), tags=frozenset({"os"}),
    description="hostname, /etc/hosts, swap, firewall, SELinux, kernel modules, sysctl, base packages",
)

SyncTimeTask = Task(
    "SyncTime", steps=[SyncTime()], hosts=all_hosts(), tags=frozenset({"os", "ntp"}),
    description="chrony from spec.system.ntpServers, or the first control-plane node for the others",
)

InfrastructureModule = Module(
    "InfrastructureModule", tasks=[PrepareNodesOS, SyncTimeTask], tags=frozenset({"os"}),
    description="prepare the operating system of every node",
)

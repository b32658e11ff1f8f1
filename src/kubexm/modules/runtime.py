"""ContainerRuntimeModule: containerd the way kubelet expects it (tag `runtime`)."""

from __future__ import annotations

from kubexm.engine import Module, Task, all_hosts
from kubexm.steps.common import Systemd
from kubexm.steps.os import Packages
from kubexm.steps.runtime import CONFIG, RUNTIME_PACKAGES, ContainerdConfig, RefuseRuntimeSwitch

InstallContainerd = Task(
    "InstallContainerd",
    steps=[RefuseRuntimeSwitch(), Packages("containerd", RUNTIME_PACKAGES), ContainerdConfig(),
           Systemd("containerd", restart_on=(CONFIG,))],
    hosts=all_hosts(), tags=frozenset({"runtime", "containerd"}),
    description="containerd, runc and CNI plugins; config.toml with the cgroup driver, sandbox image and registries",
)

ContainerRuntimeModule = Module(
    "ContainerRuntimeModule", tasks=[InstallContainerd], tags=frozenset({"runtime"}),
    enabled=lambda c: c.spec.container_runtime.type == "containerd",
    description="install and configure the container runtime (containerd so far)",
)

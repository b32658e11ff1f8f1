"""ContainerRuntimeModule: the runtime the spec chooses, configured the way kubelet expects (tag `runtime`)."""

from __future__ import annotations

from collections.abc import Callable

from kubexm.engine import Module, Task, all_hosts
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.common import Systemd
from kubexm.steps.os import Packages
from kubexm.steps.runtime import (
    CONFIG,
    CRI_DOCKER_SOCKET,
    CRI_DOCKER_UNIT,
    CRIO_CONF,
    CRIO_REGISTRIES,
    DOCKER_DAEMON,
    RUNTIME_PACKAGES,
    ContainerdConfig,
    CrioConfig,
    DockerConfig,
    ImportImages,
    RefuseRuntimeSwitch,
)


def _runtime(name: str) -> Callable[[Cluster], bool]:
    return lambda c: c.spec.container_runtime.type == name


InstallContainerd = Task(
    "InstallContainerd",
    steps=[RefuseRuntimeSwitch(), Packages("containerd", RUNTIME_PACKAGES), ContainerdConfig(),
           Systemd("containerd", restart_on=(CONFIG,))],
    hosts=all_hosts(), tags=frozenset({"runtime", "containerd"}), when=_runtime("containerd"),
    description="containerd, runc and CNI plugins; config.toml with the cgroup driver, sandbox image and registries",
)

InstallDocker = Task(
    "InstallDocker",
    steps=[RefuseRuntimeSwitch(),
           # Debian/Ubuntu ship docker.io; RHEL-family hosts need Docker's repository (docker-ce) or local .rpms.
           Packages("docker", ("docker.io", "containernetworking-plugins"),
                    rpm_names=("docker-ce", "containernetworking-plugins")),
           InstallBinaries("cri-dockerd", ("cri-dockerd",)), DockerConfig(),
           Systemd("docker", restart_on=(DOCKER_DAEMON,)),
           Systemd("cri-docker.socket", restart_on=(CRI_DOCKER_SOCKET,)),
           Systemd("cri-docker.service", restart_on=(CRI_DOCKER_UNIT, "/usr/local/bin/cri-dockerd"))],
    hosts=all_hosts(), tags=frozenset({"runtime", "docker"}), when=_runtime("docker"),
    description="Docker with cri-dockerd as kubelet's CRI endpoint; daemon.json with the cgroup driver and registries",
)

InstallCrio = Task(
    "InstallCrio",
    steps=[RefuseRuntimeSwitch(),
           # cri-o comes from the CRI-O project's packages (or local .deb/.rpm files); skopeo imports images.
           Packages("crio", ("cri-o", "skopeo", "containernetworking-plugins")), CrioConfig(),
           Systemd("crio", restart_on=(CRIO_CONF, CRIO_REGISTRIES))],
    hosts=all_hosts(), tags=frozenset({"runtime", "crio"}), when=_runtime("crio"),
    description="CRI-O with a drop-in for the cgroup manager and pause image; registries.conf.d for mirrors",
)

LoadImages = Task(
    "LoadImages",
    steps=[ImportImages()], hosts=all_hosts(), tags=frozenset({"runtime", "images"}),
    when=lambda c: bool(c.spec.assets.local_source) and c.spec.container_runtime.import_images,
    description="import image archives of the local asset source into the runtime (air-gapped nodes)",
)


ContainerRuntimeModule = Module(
    "ContainerRuntimeModule", tasks=[InstallContainerd, InstallDocker, InstallCrio, LoadImages],
    tags=frozenset({"runtime"}),
    description="install and configure the container runtime the spec chooses (containerd, docker, CRI-O)",
)

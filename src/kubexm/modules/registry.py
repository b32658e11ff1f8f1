"""RegistryModule: a private image registry on the hosts of role registry (spec.registry.type docker-registry)."""

from __future__ import annotations

from kubexm.engine import Module, Task, deploy_machine, role
from kubexm.spec.models import Cluster
from kubexm.steps.registry import EnsureRegistryPKI, install_steps, remove_steps

TAGS = frozenset({"registry"})


def _wanted(cluster: Cluster) -> bool:
    return cluster.spec.registry.type == "docker-registry" and bool(cluster.hosts_with_role("registry"))


GenerateRegistryPKI = Task(
    "GenerateRegistryPKI", steps=[EnsureRegistryPKI()], hosts=deploy_machine(), tags=TAGS | {"pki"},
    description="registry CA and each registry host's serving certificate on the deploy machine",
)

InstallRegistry = Task(
    "InstallRegistry", steps=install_steps, hosts=role("registry"), tags=TAGS,
    description="docker-registry package, certificate, htpasswd users, storage, config and unit; then GET /v2/",
)

RemoveRegistry = Task(
    "RemoveRegistry", steps=remove_steps, hosts=role("registry"), tags=TAGS,
    description="stop and disable the registry; with --purge also delete its images and configuration",
)

RegistryModule = Module(
    "RegistryModule", tasks=[GenerateRegistryPKI, InstallRegistry], enabled=_wanted, tags=TAGS,
    description="run the CNCF distribution registry with TLS and htpasswd auth",
)

RegistryDownModule = Module(
    "RegistryDownModule", tasks=[RemoveRegistry], tags=TAGS, description="stop (and optionally purge) the registry",
)

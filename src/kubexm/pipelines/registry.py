"""`kubexm registry up|down`."""

from __future__ import annotations

from kubexm.engine import Pipeline
from kubexm.modules.registry import RegistryDownModule, RegistryModule

REGISTRY_UP = Pipeline("RegistryUpPipeline", [RegistryModule],
                       description="a private registry on the hosts of role registry")
REGISTRY_DOWN = Pipeline("RegistryDownPipeline", [RegistryDownModule],
                         description="stop the private registry (--purge: delete its images too)")
ALL = [REGISTRY_UP, REGISTRY_DOWN]

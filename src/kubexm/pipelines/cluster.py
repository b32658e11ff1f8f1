"""Cluster lifecycle pipelines: create a cluster (every component module the spec enables), delete it."""

from __future__ import annotations

from kubexm.engine import Module, Pipeline, Task
from kubexm.engine.selectors import Selector
from kubexm.modules.addons import AddonsModule
from kubexm.modules.assets import AssetsModule
from kubexm.modules.etcd import EtcdModule, ExternalEtcdModule
from kubexm.modules.infrastructure import InfrastructureModule
from kubexm.modules.kubernetes import KubernetesModule
from kubexm.modules.loadbalancer import LoadBalancerModule
from kubexm.modules.preflight import PreflightModule
from kubexm.modules.runtime import ContainerRuntimeModule
from kubexm.steps.nodes import TeardownNode

CREATE_CLUSTER = Pipeline(
    "CreateClusterPipeline",
    modules=[PreflightModule, InfrastructureModule, AssetsModule, EtcdModule, ExternalEtcdModule,
             ContainerRuntimeModule, LoadBalancerModule, KubernetesModule, AddonsModule],
    description="create a cluster: preflight, then every component module the spec enables",
)

DELETE_CLUSTER = Pipeline(
    "DeleteClusterPipeline",
    [Module("TeardownModule", [Task("TeardownNodes", [TeardownNode()],
                                    hosts=Selector("all", lambda c: [h.name for h in c.spec.hosts]),
                                    on_failure="continue",
                                    description="reset every node in parallel; etcd backups are kept")])],
    description="delete the cluster from every node (backups kept)",
)

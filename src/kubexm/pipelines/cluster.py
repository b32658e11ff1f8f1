"""Cluster lifecycle pipelines. ``create cluster`` grows as modules land (etcd, runtime, kubernetes, ...)."""

from __future__ import annotations

from kubexm.engine import Pipeline
from kubexm.modules.addons import AddonsModule
from kubexm.modules.assets import AssetsModule
from kubexm.modules.etcd import EtcdModule, ExternalEtcdModule
from kubexm.modules.infrastructure import InfrastructureModule
from kubexm.modules.kubernetes import KubernetesModule
from kubexm.modules.loadbalancer import LoadBalancerModule
from kubexm.modules.preflight import PreflightModule
from kubexm.modules.runtime import ContainerRuntimeModule

CREATE_CLUSTER = Pipeline(
    "CreateClusterPipeline",
    modules=[PreflightModule, InfrastructureModule, AssetsModule, EtcdModule, ExternalEtcdModule,
             ContainerRuntimeModule, LoadBalancerModule, KubernetesModule, AddonsModule],
    description="create a cluster: preflight, then every component module the spec enables",
)

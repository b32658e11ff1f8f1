"""Every built-in pipeline, in the order the registry loads them."""

from __future__ import annotations

from kubexm.pipelines.adhoc import RUN_COMMAND
from kubexm.pipelines.certs import CHECK_CERTS, RENEW_CERTS, ROTATE_CA
from kubexm.pipelines.cluster import CREATE_CLUSTER, DELETE_CLUSTER
from kubexm.pipelines.config_sync import CONFIG_SYNC
from kubexm.pipelines.etcd_ops import (
    ADD_NODES,
    BACKUP_CLUSTER,
    DELETE_NODES,
    RESTORE_CLUSTER,
)
from kubexm.pipelines.nodes import ADD_KUBE_NODES, CORDON_NODE, DELETE_KUBE_NODES, UNCORDON_NODE
from kubexm.pipelines.registry import ALL as REGISTRY_OPS
from kubexm.pipelines.rollback import ROLLBACK_CLUSTER
from kubexm.pipelines.tokens import ALL as TOKEN_OPS
from kubexm.pipelines.upgrade import UPGRADE_CLUSTER, UPGRADE_ETCD

ALL = [CREATE_CLUSTER, RUN_COMMAND, BACKUP_CLUSTER, RESTORE_CLUSTER, CHECK_CERTS, RENEW_CERTS, ROTATE_CA, ADD_NODES,
       DELETE_NODES,
       ADD_KUBE_NODES, DELETE_KUBE_NODES, UPGRADE_CLUSTER, CORDON_NODE, UNCORDON_NODE, DELETE_CLUSTER, *REGISTRY_OPS,
       *TOKEN_OPS, CONFIG_SYNC, UPGRADE_ETCD, ROLLBACK_CLUSTER]

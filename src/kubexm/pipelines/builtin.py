"""Every built-in pipeline, in the order the registry loads them."""

from __future__ import annotations

from kubexm.pipelines.adhoc import RUN_COMMAND
from kubexm.pipelines.cluster import CREATE_CLUSTER
from kubexm.pipelines.etcd_ops import (
    ADD_NODES,
    BACKUP_CLUSTER,
    CHECK_CERTS,
    DELETE_NODES,
    RENEW_CERTS,
    RESTORE_CLUSTER,
)
from kubexm.pipelines.kubernetes_ops import ALL as KUBERNETES_OPS

ALL = [CREATE_CLUSTER, RUN_COMMAND, BACKUP_CLUSTER, RESTORE_CLUSTER, CHECK_CERTS, RENEW_CERTS, ADD_NODES, DELETE_NODES,
       *KUBERNETES_OPS]

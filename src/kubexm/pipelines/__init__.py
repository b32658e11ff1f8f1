"""Pipelines: the ordered modules behind each user intent. ``ALL`` is what the registry loads."""

from __future__ import annotations

from kubexm.pipelines.adhoc import RUN_COMMAND
from kubexm.pipelines.cluster import CREATE_CLUSTER

ALL = [CREATE_CLUSTER, RUN_COMMAND]

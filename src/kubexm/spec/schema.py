"""JSON schema of the cluster file, for editors and CI linters."""

from __future__ import annotations

from typing import Any

from kubexm.spec.models import Cluster


def json_schema() -> dict[str, Any]:
    schema = Cluster.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "kubexm Cluster (kubexm.io/v1alpha1)"
    return schema

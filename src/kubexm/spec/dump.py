"""Serialise a Cluster back to YAML (camelCase keys), with or without its secrets."""

from __future__ import annotations

import io
from typing import Any

from pydantic import BaseModel, SecretStr

from kubexm.spec.models import Cluster

REDACTED = "<redacted>"


def plain_data(value: Any, secrets: bool = False) -> Any:
    """A model dump (mode="python") with every SecretStr revealed when ``secrets``, else redacted."""
    if isinstance(value, SecretStr):
        return value.get_secret_value() if secrets else REDACTED
    if isinstance(value, dict):
        return {k: plain_data(v, secrets) for k, v in value.items()}
    if isinstance(value, list):
        return [plain_data(v, secrets) for v in value]
    return value


def redacted_secrets(cluster: Cluster) -> list[str]:
    """The secret fields (YAML paths) that hold the marker ``<redacted>`` instead of a secret: a spec
    read back from the state store, or a file written from one. Running it would send the marker as the
    password (and write it into registry auths on the nodes)."""
    found: list[str] = []

    def walk(value: object, path: str) -> None:
        if isinstance(value, SecretStr):
            if value.get_secret_value() == REDACTED:
                found.append(path)
        elif isinstance(value, BaseModel):
            for name, field in type(value).model_fields.items():
                walk(getattr(value, name), f"{path}.{field.alias or name}" if path else field.alias or name)
        elif isinstance(value, list):
            for index, item in enumerate(value):
                walk(item, f"{path}[{index}]")
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{path}.{key}")

    walk(cluster, "")
    return found


def cluster_data(cluster: Cluster, secrets: bool = False) -> dict[str, Any]:
    """Plain data by alias, defaults left out; secret fields redacted unless ``secrets``."""
    raw = cluster.model_dump(by_alias=True, exclude_defaults=True, mode="python")
    raw["apiVersion"] = cluster.api_version
    raw["kind"] = cluster.kind
    data: dict[str, Any] = plain_data(raw, secrets)
    return data


def dump_cluster(cluster: Cluster, secrets: bool = False) -> str:
    from ruamel.yaml import YAML  # here: commands that only read a cluster file need not load the dumper

    yaml = YAML()  # round-trip dumper: keeps the field order of the models
    yaml.default_flow_style = False
    out = io.StringIO()
    data = cluster_data(cluster, secrets)
    ordered = {k: data[k] for k in ("apiVersion", "kind", "metadata", "spec") if k in data}
    yaml.dump(ordered, out)
    return out.getvalue()

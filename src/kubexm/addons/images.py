"""Images rewritten to the private registry (air-gapped sites mirror every image there)."""

from __future__ import annotations

import io
from typing import Any

from ruamel.yaml import YAML

from kubexm.spec.models import Cluster

_KNOWN_REGISTRY_HINTS = (".", ":", "localhost")


def split_image(image: str) -> tuple[str, str]:
    """(registry, path:tag) with Docker Hub's implicit registry and library/ namespace made explicit."""
    first, _, rest = image.partition("/")
    if rest and (any(h in first for h in _KNOWN_REGISTRY_HINTS)):
        return first, rest
    return "docker.io", image if rest else f"library/{image}"


def rewrite_image(image: str, cluster: Cluster) -> str:
    reg = cluster.spec.registry
    if not reg.private_registry:
        return image
    _, path = split_image(image)
    if reg.namespace_override:
        path = f"{reg.namespace_override}/{path.rsplit('/', 1)[-1]}"
    return f"{reg.private_registry}/{path}"


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = doc.get("spec") or {}
    pod = spec.get("template", {}).get("spec") if isinstance(spec.get("template"), dict) else spec
    if not isinstance(pod, dict):
        return []
    return [c for key in ("initContainers", "containers") for c in pod.get(key) or [] if isinstance(c, dict)]


def rewrite_manifest(text: str, cluster: Cluster) -> str:
    """Every container image of a multi-document manifest, rewritten; other content untouched."""
    if not cluster.spec.registry.private_registry:
        return text
    yaml = YAML()
    yaml.preserve_quotes = True
    docs = [d for d in yaml.load_all(text) if d is not None]
    for doc in docs:
        for container in _containers(doc):
            if "image" in container:
                container["image"] = rewrite_image(str(container["image"]), cluster)
        data = doc.get("data") if doc.get("kind") == "ConfigMap" else None
        if isinstance(data, dict) and "helperPod.yaml" in data:
            helper = yaml.load(data["helperPod.yaml"])
            for container in _containers(helper):
                container["image"] = rewrite_image(str(container["image"]), cluster)
            out = io.StringIO()
            yaml.dump(helper, out)
            data["helperPod.yaml"] = out.getvalue()
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return out.getvalue()


def dump_manifest(docs: list[dict[str, Any]], cluster: Cluster) -> str:
    yaml = YAML()
    yaml.default_flow_style = False
    out = io.StringIO()
    yaml.dump_all(docs, out)
    return rewrite_manifest(out.getvalue(), cluster)

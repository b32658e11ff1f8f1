"""Image references rewritten to the private registry: air-gapped sites mirror every image there.

``docker.io/flannel/flannel:v0.26.4`` becomes ``<private>/flannel/flannel:v0.26.4``, or with
``spec.registry.namespaceOverride`` ``<private>/<namespace>/flannel:v0.26.4``. Docker Hub's implicit
``library/`` is made explicit (``busybox:1.36`` -> ``<private>/library/busybox:1.36``), which is where
mirroring tools put official images.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, MutableMapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import LiteralScalarString

from kubexm.spec.models import Cluster

DOCKER_HUB = "docker.io"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_CONTAINER_LISTS = ("initContainers", "containers", "ephemeralContainers")


def split_image(image: str) -> tuple[str, str]:
    """(registry, path[:tag|@digest]) with Docker Hub's implicit registry and ``library/`` made explicit."""
    first, sep, rest = image.partition("/")
    # The first component is a registry host only when it looks like one (a dot, a port, or localhost),
    # the rule docker and containerd use; otherwise the reference is on Docker Hub.
    if sep and ("." in first or ":" in first or first == "localhost"):
        registry, path = first, rest
    else:
        registry, path = DOCKER_HUB, image
    if registry in _DOCKER_HUB_NAMES:
        registry = DOCKER_HUB
        if "/" not in path:
            path = f"library/{path}"
    return registry, path


def _private(cluster: Cluster) -> str | None:
    registry = cluster.spec.registry.private_registry
    return registry.rstrip("/") if registry else None


def private_path(image: str, cluster: Cluster) -> str:
    """The path (without registry) an image or repository has in the private registry.

    For charts that take the registry and the repository as separate values.
    """
    _, path = split_image(image)
    namespace = cluster.spec.registry.namespace_override
    if namespace:
        path = f"{namespace.strip('/')}/{path.rsplit('/', 1)[-1]}"
    return path


def rewrite_image(image: str, cluster: Cluster) -> str:
    """``image`` as pulled from the private registry; unchanged without one (or when already there).

    Works for repositories without a tag too (chart values such as ``image.repository``).
    """
    private = _private(cluster)
    if not private or image.startswith(private + "/"):
        return image
    return f"{private}/{private_path(image, cluster)}"


def _containers(node: Any) -> Iterator[MutableMapping[str, Any]]:
    """Every container mapping below ``node``: pods, pod templates, CronJob templates and CRDs alike."""
    if isinstance(node, MutableMapping):
        for key, value in node.items():
            if key in _CONTAINER_LISTS and isinstance(value, list):
                yield from (c for c in value if isinstance(c, MutableMapping))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def _yaml() -> YAML:
    yaml = YAML()  # round-trip: comments, quoting and block scalars of the input survive
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold long strings (args, JSON one-liners)
    return yaml


def _dump(docs: list[Any]) -> str:
    out = io.StringIO()
    _yaml().dump_all(docs, out)
    return out.getvalue()


def _rewrite_embedded_pods(doc: MutableMapping[str, Any], cluster: Cluster) -> None:
    """Pod specs a controller reads from a ConfigMap (local-path's helperPod.yaml) name images too."""
    if doc.get("kind") != "ConfigMap" or not isinstance(doc.get("data"), MutableMapping):
        return
    data = doc["data"]
    for key, text in list(data.items()):
        if not (isinstance(key, str) and key.endswith((".yaml", ".yml")) and isinstance(text, str)):
            continue
        try:
            pod = _yaml().load(text)
        except Exception:  # not YAML after all: leave the value alone
            continue
        if isinstance(pod, MutableMapping) and pod.get("kind") == "Pod":
            for container in _containers(pod):
                if isinstance(container.get("image"), str):
                    container["image"] = rewrite_image(container["image"], cluster)
            data[key] = LiteralScalarString(_dump([pod]).removeprefix("---\n"))


def rewrite_document(doc: MutableMapping[str, Any], cluster: Cluster) -> None:
    """Rewrite, in place, every container and initContainer image of one Kubernetes object."""
    for container in _containers(doc):
        if isinstance(container.get("image"), str):
            container["image"] = rewrite_image(container["image"], cluster)
    _rewrite_embedded_pods(doc, cluster)


def rewrite_manifest(text: str, cluster: Cluster) -> str:
    """Every container image of a multi-document manifest, rewritten; other content untouched."""
    if not _private(cluster):
        return text
    docs = [d for d in _yaml().load_all(text) if d is not None]
    for doc in docs:
        if isinstance(doc, MutableMapping):
            rewrite_document(doc, cluster)
    return _dump(docs)


def _literal_blocks(node: Any) -> Any:
    """Multi-line strings (Corefile, JSON configs, scripts) as YAML block scalars, readable on the host."""
    if isinstance(node, dict):
        return {k: _literal_blocks(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_literal_blocks(v) for v in node]
    if isinstance(node, str) and "\n" in node:
        return LiteralScalarString(node)
    return node


def dump_manifest(docs: list[dict[str, Any]], cluster: Cluster) -> str:
    """A multi-document manifest from plain objects, images already rewritten for the private registry.

    kubectl reads YAML 1.1: every string kubexm wrote is double-quoted, so a value such as ``no`` or ``0x1f``
    from the cluster file stays a string."""
    from kubexm.kube.kubeadm import quote_strings

    out = [_literal_blocks(d) for d in docs]
    if _private(cluster):
        for doc in out:
            rewrite_document(doc, cluster)
    return _dump([quote_strings(d) for d in out])

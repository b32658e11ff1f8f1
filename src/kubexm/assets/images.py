"""Container image archives (``docker save`` / ``ctr export`` / OCI tarballs) for air-gapped nodes.

kubexm reads the image names out of each archive on the deploy machine, so a node can be asked
"do you have these already?" before a large file is uploaded and imported.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from kubexm.errors import KubexmError

# containerd's own annotation; ctr import names images after it (and after docker's RepoTags).
CONTAINERD_NAME = "io.containerd.image.name"


def normalize(ref: str) -> str:
    """A reference the way containerd stores it: docker.io/library/busybox:latest for ``busybox``."""
    name, _, digest = ref.partition("@")
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    first = name.split("/", 1)[0]
    if "/" not in name or not ("." in first or ":" in first or first == "localhost"):
        name = "docker.io/" + (name if "/" in name else "library/" + name)
    return name + (f"@{digest}" if digest else "")


def _member_json(tar: tarfile.TarFile, name: str) -> object | None:
    try:
        member = tar.extractfile(name)
    except KeyError:
        return None
    return json.load(member) if member else None


def archive_refs(path: Path) -> list[str]:
    """The image references ``ctr images import`` will create from this archive, normalized."""
    try:
        with tarfile.open(path) as tar:
            docker = _member_json(tar, "manifest.json")
            index = _member_json(tar, "index.json")
    except (tarfile.TarError, OSError, json.JSONDecodeError) as exc:
        raise KubexmError(f"{path} is not a readable image archive ({exc})",
                          hint="use an archive made by `docker save`, `ctr images export` or skopeo") from None
    refs: list[str] = []
    for entry in docker if isinstance(docker, list) else []:
        refs += [normalize(t) for t in entry.get("RepoTags") or []]
    if isinstance(index, dict):
        for m in index.get("manifests", []):
            name = (m.get("annotations") or {}).get(CONTAINERD_NAME)
            if name:
                refs.append(normalize(name))
    if not refs:
        raise KubexmError(f"{path} names no image (no RepoTags and no {CONTAINERD_NAME} annotation)",
                          hint="export it with a name: `docker save IMAGE:TAG`, `ctr images export F IMAGE:TAG`")
    return sorted(set(refs))

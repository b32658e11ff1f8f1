"""Real image archives built offline: a one-layer image in `docker save` layout (what ctr, docker and
skopeo import), so air-gapped import can be tested without any registry."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def docker_archive(path: Path, tags: list[str], files: dict[str, bytes], arch: str = "amd64") -> Path:
    """Write an image archive holding ``files`` in one layer, tagged ``tags``."""
    layer_buf = io.BytesIO()
    with tarfile.open(fileobj=layer_buf, mode="w") as layer:
        for name, data in sorted(files.items()):
            _add(layer, name, data)
    layer_bytes = layer_buf.getvalue()
    diff_id = "sha256:" + hashlib.sha256(layer_bytes).hexdigest()
    config = json.dumps({
        "architecture": arch, "os": "linux",
        "config": {"Cmd": ["/hello"], "Env": ["PATH=/"]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": "kubexm test image"}],
    }, sort_keys=True).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    layer_dir = hashlib.sha256(layer_bytes).hexdigest()
    manifest = json.dumps([{"Config": config_name, "RepoTags": tags, "Layers": [f"{layer_dir}/layer.tar"]}]).encode()
    with tarfile.open(path, "w") as tar:
        _add(tar, f"{layer_dir}/layer.tar", layer_bytes)
        _add(tar, config_name, config)
        _add(tar, "manifest.json", manifest)
    return path

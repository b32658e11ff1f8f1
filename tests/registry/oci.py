"""Small real OCI image layouts built in Python: multi-arch indexes whose layers are gzip'd tars."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

INDEX = "application/vnd.oci.image.index.v1+json"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class LayoutWriter:
    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
        self.entries: list[dict[str, object]] = []

    def blob(self, data: bytes) -> dict[str, object]:
        digest = _digest(data)
        (self.root / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(data)
        return {"digest": digest, "size": len(data)}

    def layer(self, files: dict[str, bytes]) -> tuple[dict[str, object], str]:
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w") as tar:
            for name, data in sorted(files.items()):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), 0
                tar.addfile(info, io.BytesIO(data))
        diff_id = _digest(raw.getvalue())
        packed = gzip.compress(raw.getvalue(), mtime=0)
        return {"mediaType": LAYER, **self.blob(packed)}, diff_id

    def manifest(self, arch: str, layers: list[tuple[dict[str, object], str]]) -> dict[str, object]:
        config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"]},
                             "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
        doc = {"schemaVersion": 2, "mediaType": MANIFEST, "config": {"mediaType": CONFIG, **self.blob(config)},
               "layers": [desc for desc, _ in layers]}
        return {"mediaType": MANIFEST, **self.blob(json.dumps(doc).encode()),
                "platform": {"os": "linux", "architecture": arch}}

    def index(self, ref: str, children: list[dict[str, object]]) -> str:
        doc = {"schemaVersion": 2, "mediaType": INDEX, "manifests": children}
        desc = {"mediaType": INDEX, **self.blob(json.dumps(doc).encode()),
                "annotations": {"org.opencontainers.image.ref.name": ref}}
        self.entries.append(desc)
        self._write_index()
        return str(desc["digest"])

    def single(self, ref: str, manifest: dict[str, object]) -> str:
        desc = {k: v for k, v in manifest.items() if k != "platform"}
        desc["annotations"] = {"org.opencontainers.image.ref.name": ref}
        self.entries.append(desc)
        self._write_index()
        return str(desc["digest"])

    def _write_index(self) -> None:
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": self.entries}))


def multiarch(writer: LayoutWriter, ref: str, shared: bytes, extra: int = 0) -> str:
    """An amd64 + arm64 index; both share one layer made from ``shared``; each has one of its own (``extra``
    bytes of incompressible data, to make a layer larger than a chunk)."""
    import os

    common = writer.layer({"shared.txt": shared})
    children = []
    for arch in ("amd64", "arm64"):
        own = writer.layer({f"{arch}.bin": os.urandom(extra) if extra else arch.encode() * 100})
        children.append(writer.manifest(arch, [common, own]))
    return writer.index(ref, children)

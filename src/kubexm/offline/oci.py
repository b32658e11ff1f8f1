"""Container images from local OCI layouts and docker archives, re-written as one OCI archive per image.

Sources (``--images-from DIR``): OCI image layout directories (``oci-layout`` + ``index.json``), OCI archives
(the same as a tar) and ``docker save`` archives. An image is found by the name its source gives it
(containerd's ``io.containerd.image.name``, a full ``org.opencontainers.image.ref.name``, docker's RepoTags).
Every blob copied is checked against its digest, so a corrupt source cannot reach the bundle. The archive
written names the image the way ``ctr images import`` and kubexm's image import read it.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm.assets.images import CONTAINERD_NAME, normalize
from kubexm.errors import KubexmError

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


class _Layout:
    """Read access to an OCI layout in a directory or a tar."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tar: tarfile.TarFile | None = None
        if path.is_file():
            try:
                self._tar = tarfile.open(path)  # noqa: SIM115 - closed by close()
            except (tarfile.TarError, OSError) as exc:
                raise KubexmError(f"{path} is not a readable image archive ({exc})",
                                  hint="use an OCI layout, an OCI archive or a `docker save` archive") from None

    def has(self, name: str) -> bool:
        if self._tar is None:
            return (self.path / name).is_file()
        try:
            self._tar.getmember(name)
            return True
        except KeyError:
            try:
                self._tar.getmember("./" + name)
                return True
            except KeyError:
                return False

    def read(self, name: str) -> bytes:
        if self._tar is None:
            return (self.path / name).read_bytes()
        for candidate in (name, "./" + name):
            try:
                fh = self._tar.extractfile(candidate)
            except KeyError:
                continue
            if fh is not None:
                return fh.read()
        raise KubexmError(f"{self.path}: {name} is missing", hint="the image source is incomplete")

    def blob(self, digest: str) -> bytes:
        algo, _, hexd = digest.partition(":")
        if algo != "sha256":
            raise KubexmError(f"{self.path}: blob {digest} uses {algo}, kubexm verifies sha256 only")
        data = self.read(f"blobs/sha256/{hexd}")
        if hashlib.sha256(data).hexdigest() != hexd:
            raise KubexmError(f"{self.path}: blob {digest} does not match its digest (the source is corrupt)",
                              hint="export the image again")
        return data

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()


@dataclass(frozen=True)
class Source:
    path: Path
    kind: str  # oci | docker


def _names_of(layout: _Layout) -> tuple[str, list[str]]:
    if layout.has("index.json"):
        index = json.loads(layout.read("index.json"))
        names = []
        for m in index.get("manifests", []):
            ann = m.get("annotations") or {}
            name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME) or ""
            if "/" in name or ":" in name:  # a bare tag names no repository
                names.append(normalize(name))
        return "oci", names
    if layout.has("manifest.json"):
        return "docker", [normalize(t) for e in json.loads(layout.read("manifest.json")) for t in e.get("RepoTags") or []]
    return "", []


def scan(directory: Path) -> dict[str, Source]:
    """Image reference -> source, for every layout or archive directly in ``directory`` (or it itself)."""
    if not directory.is_dir():
        raise KubexmError(f"--images-from {directory} is not a directory",
                          hint="give a directory of OCI layouts, OCI archives or docker archives")
    candidates = [directory, *sorted(p for p in directory.iterdir() if p.is_dir() or p.suffix == ".tar")]
    found: dict[str, Source] = {}
    for path in candidates:
        if path.is_dir() and not (path / "index.json").is_file():
            continue
        layout = _Layout(path)
        try:
            kind, names = _names_of(layout)
        except (json.JSONDecodeError, KubexmError, OSError):
            continue
        finally:
            layout.close()
        for name in names:
            found.setdefault(name, Source(path, kind))
    return found


def _descriptor_for(layout: _Layout, ref: str) -> dict[str, Any]:
    index = json.loads(layout.read("index.json"))
    for m in index.get("manifests", []):
        ann = m.get("annotations") or {}
        name = ann.get(CONTAINERD_NAME) or ann.get(REF_NAME) or ""
        if name and ("/" in name or ":" in name) and normalize(name) == ref:
            return dict(m)
    raise KubexmError(f"{layout.path} does not hold {ref}")


def _platforms_and_blobs(layout: _Layout, desc: dict[str, Any], blobs: dict[str, bytes]) -> list[str]:
    """Copy (verified) every blob below ``desc`` into ``blobs``; return the platforms it holds."""
    data = layout.blob(desc["digest"])
    blobs[desc["digest"]] = data
    doc = json.loads(data)
    media = desc.get("mediaType") or doc.get("mediaType", "")
    if media in INDEX_TYPES or "manifests" in doc:
        platforms: list[str] = []
        for child in doc.get("manifests", []):
            arch = (child.get("platform") or {}).get("architecture", "")
            below = _platforms_and_blobs(layout, child, blobs)  # every child: a registry refuses a partial index
            if arch != "unknown":  # buildkit's attestations are not a platform
                platforms += [arch] if arch else below
        return sorted(set(platforms))
    config = layout.blob(doc["config"]["digest"])
    blobs[doc["config"]["digest"]] = config
    for layer in doc.get("layers", []):
        blob = layout.blob(layer["digest"])
        if len(blob) != layer.get("size", len(blob)):
            raise KubexmError(f"{layout.path}: layer {layer['digest']} has the wrong size")
        blobs[layer["digest"]] = blob
    arch = json.loads(config).get("architecture", "")
    return [arch] if arch else []


def _from_docker(layout: _Layout, ref: str, blobs: dict[str, bytes]) -> tuple[dict[str, Any], list[str]]:
    """A legacy ``docker save`` image as an OCI manifest (layers keep their bytes, so diff ids still hold)."""
    for entry in json.loads(layout.read("manifest.json")):
        if ref not in [normalize(t) for t in entry.get("RepoTags") or []]:
            continue
        config = layout.read(entry["Config"])
        config_doc = json.loads(config)
        layers = []
        for name, diff_id in zip(entry["Layers"], config_doc.get("rootfs", {}).get("diff_ids", []), strict=False):
            data = layout.read(name)
            digest = "sha256:" + hashlib.sha256(data).hexdigest()
            gz = data[:2] == b"\x1f\x8b"
            if not gz and digest != diff_id:
                raise KubexmError(f"{layout.path}: layer {name} does not match its diff id (the archive is corrupt)")
            blobs[digest] = data
            layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if gz else ""),
                           "digest": digest, "size": len(data)})
        config_digest = "sha256:" + hashlib.sha256(config).hexdigest()
        blobs[config_digest] = config
        manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                               "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config)},
                               "layers": layers}, separators=(",", ":")).encode()
        digest = "sha256:" + hashlib.sha256(manifest).hexdigest()
        blobs[digest] = manifest
        arch = config_doc.get("architecture", "")
        return {"mediaType": OCI_MANIFEST, "digest": digest, "size": len(manifest)}, [arch] if arch else []
    raise KubexmError(f"{layout.path} does not hold {ref}")


def export(source: Source, ref: str, out: Path) -> tuple[str, list[str]]:
    """Write ``ref`` from ``source`` as an OCI archive at ``out``; returns (manifest digest, platforms)."""
    layout = _Layout(source.path)
    blobs: dict[str, bytes] = {}
    try:
        if source.kind == "docker":
            desc, platforms = _from_docker(layout, ref, blobs)
        else:
            desc = _descriptor_for(layout, ref)
            platforms = _platforms_and_blobs(layout, desc, blobs)
    finally:
        layout.close()
    tag = ref.split("@", 1)[0].rsplit("/", 1)[-1].partition(":")[2] or "latest"
    write_archive(out, ref, tag, desc.get("mediaType", OCI_MANIFEST), str(desc["digest"]), int(desc["size"]), blobs)
    return str(desc["digest"]), platforms


def write_archive(out: Path, ref: str, tag: str, media_type: str, digest: str, size: int,
                  blobs: dict[str, bytes]) -> None:
    """An OCI archive (oci-layout, index.json naming ``ref``, blobs) holding one image: what bundles carry."""
    entry = {"mediaType": media_type, "digest": digest, "size": size, "annotations": {CONTAINERD_NAME: ref, REF_NAME: tag}}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [entry]}).encode()}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in _entries(files, blobs):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))


def _entries(files: dict[str, bytes], blobs: dict[str, bytes]) -> Iterator[tuple[str, bytes]]:
    yield from files.items()
    for digest, data in sorted(blobs.items()):
        yield f"blobs/sha256/{digest.partition(':')[2]}", data

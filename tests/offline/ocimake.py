"""Small real container images written by hand (no image can be pulled here): OCI layouts, OCI archives and
``docker save`` archives with a real gzip/tar layer, config with diff ids, manifest and index."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

CONTAINERD_NAME = "io.containerd.image.name"


def _layer(content: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo("hello.txt")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return raw.getvalue()


def _put(blobs: dict[str, bytes], data: bytes) -> str:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return digest


def _image(blobs: dict[str, bytes], ref: str, arch: str) -> dict[str, object]:
    raw = _layer(f"{ref} {arch}\n".encode())
    gz = gzip.compress(raw, mtime=0)
    config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": ["/hello"]},
                         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(raw).hexdigest()]}}).encode()
    cdig = _put(blobs, config)
    ldig = _put(blobs, gz)
    manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                           "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cdig,
                                      "size": len(config)},
                           "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": ldig,
                                       "size": len(gz)}]}).encode()
    return {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _put(blobs, manifest),
            "size": len(manifest), "platform": {"architecture": arch, "os": "linux"}}


def layout_files(ref: str, arches: tuple[str, ...] = ("amd64",)) -> dict[str, bytes]:
    """The files of an OCI layout holding ``ref`` (an index when there are several architectures)."""
    blobs: dict[str, bytes] = {}
    descs = [_image(blobs, ref, a) for a in arches]
    if len(descs) == 1:
        top = {k: v for k, v in descs[0].items() if k != "platform"}
    else:
        index = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": descs}).encode()
        top = {"mediaType": "application/vnd.oci.image.index.v1+json", "digest": _put(blobs, index), "size": len(index)}
    top["annotations"] = {CONTAINERD_NAME: ref, "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps({"schemaVersion": 2, "manifests": [top]}).encode()}
    files.update({f"blobs/sha256/{d.split(':')[1]}": b for d, b in blobs.items()})
    return files


def oci_dir(root: Path, ref: str, arches: tuple[str, ...] = ("amd64",)) -> Path:
    target = root / ref.replace("/", "_").replace(":", "_")
    for name, data in layout_files(ref, arches).items():
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        (target / name).write_bytes(data)
    return target


def _tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def oci_archive(root: Path, ref: str, arches: tuple[str, ...] = ("amd64",)) -> Path:
    return _tar(root / (ref.replace("/", "_").replace(":", "_") + ".tar"), layout_files(ref, arches))


def docker_archive(root: Path, ref: str, arch: str = "amd64") -> Path:
    """A legacy ``docker save`` archive: uncompressed layer, config, manifest.json with RepoTags."""
    raw = _layer(f"{ref} {arch} docker\n".encode())
    layer_id = hashlib.sha256(raw).hexdigest()
    config = json.dumps({"architecture": arch, "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_id}"]}}).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    files = {config_name: config, f"{layer_id}/layer.tar": raw,
             "manifest.json": json.dumps([{"Config": config_name, "RepoTags": [ref],
                                           "Layers": [f"{layer_id}/layer.tar"]}]).encode()}
    return _tar(root / (ref.replace("/", "_").replace(":", "_") + ".docker.tar"), files)

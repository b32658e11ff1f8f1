"""Copy an image from its registry into an OCI archive, the same shape ``oci.export`` writes from local files.

Used by ``offline package`` for images the ``--images-from`` directory does not hold. Every manifest and blob
is checked against its digest before it is kept; a reference pinned by digest must match it. For an image
index only the platforms the bundle is built for are fetched, and the archive's index lists just those (its
digest then differs from the registry's index; each platform's manifest keeps its own digest). An index
pinned by digest is kept whole, with every platform, so the pinned digest stays true.
"""

from __future__ import annotations

import hashlib
import json
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from kubexm.addons.images import DOCKER_HUB, split_image
from kubexm.errors import KubexmError
from kubexm.offline.oci import INDEX_TYPES, OCI_MANIFEST, write_archive
from kubexm.offline.registry_client import MANIFEST_TYPES, RegistryClient, RegistryError

# Docker Hub's API is not served under the name images use.
API_HOST = {DOCKER_HUB: "registry-1.docker.io"}
REDIRECTS = (301, 302, 303, 307, 308)


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def split_reference(ref: str) -> tuple[str, str, str]:
    """(registry, repository, tag or digest) of an image reference."""
    registry, path = split_image(ref)
    if "@" in path:
        repo, _, reference = path.partition("@")
    else:
        repo, _, reference = path.rpartition(":") if ":" in path.rsplit("/", 1)[-1] else (path, "", "latest")
    return registry, repo, reference


class Puller:
    """One registry's pulls (credentials from spec.registry.auths when it names this registry)."""

    def __init__(self, registry: str, *, username: str | None = None, password: str | None = None,
                 ca_file: str | None = None, insecure: bool = False) -> None:
        self.registry = registry
        self.client = RegistryClient(API_HOST.get(registry, registry), username=username, password=password,
                                     ca_file=ca_file, insecure=insecure)

    def close(self) -> None:
        self.client.close()

    def _get(self, repo: str, kind: str, ref: str, accept: str | None = None) -> tuple[bytes, str]:
        scopes = [f"repository:{repo}:pull"]
        headers = {"Accept": accept} if accept else {}
        resp = self.client.request("GET", f"/v2/{repo}/{kind}/{ref}", scopes=scopes, headers=headers)
        if resp.status in REDIRECTS and kind == "blobs":
            return self._follow(resp.header("location"), repo, ref), ""
        if resp.status == 404:
            raise KubexmError(f"{self.registry}/{repo}: {kind[:-1]} {ref} is not in the registry",
                              hint="check the image name and tag, or provide it with --images-from")
        self.client.expect(resp, f"GET {kind[:-1]} {repo}@{ref}", 200)
        return resp.body, resp.header("content-type").split(";")[0].strip()

    def _follow(self, location: str, repo: str, digest: str) -> bytes:
        """A blob the registry serves from elsewhere (a CDN): fetched without the registry's credentials."""
        if not location:
            raise RegistryError(f"{self.registry}/{repo}: blob {digest} redirected without a Location")
        url = urllib.parse.urljoin(f"https://{self.client.registry}/", location)
        if urllib.parse.urlsplit(url).scheme != "https":
            raise RegistryError(f"{self.registry}/{repo}: blob {digest} redirected to a non-HTTPS address",
                                hint="kubexm fetches blobs over HTTPS only")
        context = self.client._context(None, False)
        try:
            with urllib.request.urlopen(url, timeout=300, context=context) as fh:
                data: bytes = fh.read()
        except OSError as exc:
            raise RegistryError(f"{self.registry}/{repo}: blob {digest} could not be fetched from where the registry "
                                f"sent it: {exc}") from None
        return data

    def manifest(self, repo: str, ref: str) -> tuple[bytes, str]:
        data, media = self._get(repo, "manifests", ref, ", ".join(MANIFEST_TYPES))
        if ref.startswith("sha256:") and _digest(data) != ref:
            raise KubexmError(f"{self.registry}/{repo}@{ref}: the registry answered with a manifest of another digest",
                              hint="the registry or a proxy altered it; pull from another source")
        if not media:
            media = json.loads(data).get("mediaType", OCI_MANIFEST)
        return data, media

    def blob(self, repo: str, digest: str) -> bytes:
        data, _ = self._get(repo, "blobs", digest)
        if _digest(data) != digest:
            raise KubexmError(f"{self.registry}/{repo}: blob {digest} arrived damaged (its content has another digest)",
                              hint="run the same command again; a proxy may be altering downloads")
        return data


def pull(ref: str, out: Path, arches: list[str], puller: Puller) -> tuple[str, list[str]]:
    """Write ``ref`` as an OCI archive at ``out``; returns (the archive's manifest digest, platforms)."""
    _, repo, reference = split_reference(ref)
    blobs: dict[str, bytes] = {}
    data, media = puller.manifest(repo, reference)
    doc: dict[str, Any] = json.loads(data)
    platforms: list[str] = []
    if media in INDEX_TYPES or "manifests" in doc:
        pinned = reference.startswith("sha256:")
        keep = []
        for desc in doc.get("manifests", []):
            plat = desc.get("platform") or {}
            arch = plat.get("architecture", "")
            if plat.get("os", "linux") != "linux" or (not pinned and arch not in arches):
                continue
            child, _ = puller.manifest(repo, desc["digest"])
            _image_blobs(puller, repo, json.loads(child), blobs)
            blobs[desc["digest"]] = child
            keep.append(desc)
            platforms.append(arch)
        if not keep:
            raise KubexmError(f"image {ref} has no linux/{'|'.join(arches)} platform in its registry",
                              hint="build the bundle for the architectures the image has (--arch)")
        if not pinned:
            doc = {**doc, "manifests": keep}
            data = json.dumps(doc, separators=(",", ":")).encode()
    else:
        config = _image_blobs(puller, repo, doc, blobs)
        arch = json.loads(config).get("architecture", "") if config else ""
        platforms = [arch] if arch else []
    digest = _digest(data)
    blobs[digest] = data
    tag = reference if not reference.startswith("sha256:") else "latest"
    write_archive(out, ref, tag, media, digest, len(data), blobs)
    return digest, sorted(set(platforms))


def _image_blobs(puller: Puller, repo: str, manifest: dict[str, Any], blobs: dict[str, bytes]) -> bytes | None:
    """Fetch the config and layers of one image manifest into ``blobs``; returns the config."""
    config = None
    for i, desc in enumerate([manifest.get("config"), *manifest.get("layers", [])]):
        if not desc:
            continue
        if desc["digest"] not in blobs:
            blobs[desc["digest"]] = puller.blob(repo, desc["digest"])
        if i == 0:
            config = blobs[desc["digest"]]
    return config

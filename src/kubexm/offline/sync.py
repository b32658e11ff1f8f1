"""`kubexm offline sync`: push every image of a bundle's OCI layouts into a registry.

Every architecture goes: an index (manifest list) is pushed with all its child manifests. What the registry
already has is skipped by digest (a tag that already points at the image's digest costs one HEAD), blobs a
repository lacks are mounted from a repository of this registry that has them, or uploaded (one PUT, or
PATCH chunks for large blobs). Work runs in parallel, bounded, with retries; a manifest counts as pushed only
when the registry answered with its digest and a HEAD of its tag names that digest, so an interrupted run
leaves nothing reported as pushed that is not, and a re-run resumes by skipping what arrived.

Input: a directory holding OCI image layouts (``oci-layout``, ``index.json``, ``blobs/sha256/...``) at any
depth, or an uncompressed tar of one (read in place, nothing extracted).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import posixpath
import tarfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, TypeVar, cast

from kubexm.errors import KubexmError
from kubexm.offline.registry_client import (
    BlobCorrupt,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    TransientError,
)

INDEX_TYPES = frozenset({"application/vnd.oci.image.index.v1+json",
                         "application/vnd.docker.distribution.manifest.list.v2+json"})
MANIFEST_TYPES = frozenset({"application/vnd.oci.image.manifest.v1+json",
                            "application/vnd.docker.distribution.manifest.v2+json"})
REF_NAME = "org.opencontainers.image.ref.name"
CONTAINERD_NAME = "io.containerd.image.name"
CHUNK_SIZE = 64 * 1024 * 1024
# At most this many "is the image there already?" HEADs at once. Each request in flight needs a worker thread,
# and each thread its own TLS connection: a re-run that finds everything present would otherwise open
# `parallel` connections for one cheap HEAD per image. Measured on a loopback registry with htpasswd auth
# (24 images, 2 cores): 1 or 2 connections finish the HEADs in ~90 ms, 8 in ~110 ms, 16 in ~150 ms: the
# registry checks the password's bcrypt hash per request, so more connections add handshakes, not speed.
# Images to push start uploading as soon as their own HEAD answered, with the full `parallel`.
PROBES = 2
T = TypeVar("T")


class BundleError(KubexmError):
    """The bundle lacks something or holds something damaged; names the image and the digest."""


# -- reading layouts --------------------------------------------------------------------------------------------

class _Source:
    """Files of a bundle by name, each a byte range of a file on disk: a directory's files, the members of an
    uncompressed tar, and the members of the OCI archives (tars) inside either (``images/x.tar/index.json``),
    all read in place, nothing extracted."""

    def __init__(self, bundle: Path) -> None:
        self.files: dict[str, tuple[Path, int, int]] = {}
        if bundle.is_dir():
            for dirpath, _, names in os.walk(bundle):
                for name in names:
                    path = Path(dirpath, name)
                    rel = path.relative_to(bundle).as_posix()
                    self.files[rel] = (path, 0, path.stat().st_size)
                    if name.endswith(".tar"):
                        self._nested(rel, path, 0, path.stat().st_size)
            return
        try:
            with tarfile.open(bundle, "r:") as tar:  # "r:": uncompressed only, so members can be read in place
                members = [m for m in tar.getmembers() if m.isfile()]
        except tarfile.ReadError as exc:
            raise BundleError(f"{bundle} is not an uncompressed tar ({exc})",
                              hint="pass the bundle .tar as `kubexm offline package` wrote it, or a directory "
                                   "holding OCI layouts (unpack a compressed archive first)") from None
        for m in members:
            name = posixpath.normpath(m.name)
            self.files[name] = (bundle, m.offset_data, m.size)
            if name.endswith(".tar"):
                self._nested(name, bundle, m.offset_data, m.size)

    def _nested(self, name: str, path: Path, offset: int, size: int) -> None:
        """An OCI archive inside: its members become ``NAME/member``; any other tar stays one file."""
        if size == 0:
            return
        with path.open("rb") as fh:
            try:
                with tarfile.open(fileobj=cast(BinaryIO, _Window(fh, offset, size)), mode="r:") as inner:
                    members = [m for m in inner.getmembers() if m.isfile()]
            except tarfile.TarError:
                return
        inner_files = {posixpath.normpath(m.name): m for m in members}
        if "oci-layout" not in inner_files:
            return
        for member_name, m in inner_files.items():
            self.files[f"{name}/{member_name}"] = (path, offset + m.offset_data, m.size)

    def exists(self, name: str) -> bool:
        return posixpath.normpath(name) in self.files

    def size(self, name: str) -> int:
        return self.files[posixpath.normpath(name)][2]

    def open(self, name: str, offset: int, length: int) -> BinaryIO:
        path, start, _ = self.files[posixpath.normpath(name)]
        fh = path.open("rb")
        fh.seek(start + offset)
        return cast(BinaryIO, _Limited(fh, length))

    def names(self) -> list[str]:
        return [n for n in self.files if posixpath.basename(n) == "oci-layout"]

    def read(self, name: str) -> bytes:
        with self.open(name, 0, self.size(name)) as fh:
            return fh.read()


class _Window(io.RawIOBase):
    """A seekable view of ``size`` bytes at ``offset`` of an open file, for tarfile to index a nested tar."""

    def __init__(self, fh: BinaryIO, offset: int, size: int) -> None:
        self.fh, self.start, self.end, self.pos = fh, offset, offset + size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.end - self.start}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def read(self, size: int = -1) -> bytes:
        left = self.end - self.start - self.pos
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        self.fh.seek(self.start + self.pos)
        data = self.fh.read(n)
        self.pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


class _Limited(io.RawIOBase):
    """At most ``length`` bytes of an open file, for http.client to stream as a request body."""

    def __init__(self, fh: BinaryIO, length: int) -> None:
        self.fh = fh
        self.left = length

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if self.left <= 0:
            return b""
        n = self.left if size is None or size < 0 else min(size, self.left)
        data = self.fh.read(n)
        self.left -= len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self) -> None:
        self.fh.close()
        super().close()


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: str = ""
    urls: tuple[str, ...] = ()

    @classmethod
    def of(cls, data: dict[str, Any], where: str) -> Descriptor:
        try:
            digest, size = str(data["digest"]), int(data["size"])
        except (KeyError, TypeError, ValueError):
            raise BundleError(f"{where}: a descriptor without digest or size",
                              hint="the bundle is damaged; rebuild it") from None
        algo, _, hexa = digest.partition(":")
        if algo != "sha256" or len(hexa) != 64 or any(c not in "0123456789abcdef" for c in hexa):
            raise BundleError(f"{where}: unsupported or malformed digest {digest!r}", hint="rebuild the bundle")
        plat = data.get("platform") or {}
        platform = "/".join(p for p in (plat.get("os"), plat.get("architecture"), plat.get("variant")) if p)
        return cls(str(data.get("mediaType", "")), digest, size, platform, tuple(data.get("urls") or ()))


@dataclass(frozen=True)
class Layout:
    source: _Source
    prefix: str  # the layout's directory within the bundle ("" for its root)

    def blob(self, digest: str) -> str:
        algo, _, hexa = digest.partition(":")
        return posixpath.join(self.prefix, "blobs", algo, hexa) if self.prefix else f"blobs/{algo}/{hexa}"

    def has(self, digest: str) -> bool:
        return self.source.exists(self.blob(digest))

    def read_verified(self, desc: Descriptor, image: str) -> bytes:
        if not self.has(desc.digest):
            raise BundleError(f"image {image}: blob {desc.digest} is missing from the bundle",
                              hint="the bundle is incomplete: rebuild it (kubexm offline package resumes)")
        data = self.source.read(self.blob(desc.digest))
        if "sha256:" + hashlib.sha256(data).hexdigest() != desc.digest:
            raise BundleError(f"image {image}: blob {desc.digest} in the bundle does not match its digest",
                              hint="the bundle is damaged: run `kubexm offline verify` and rebuild or copy it again")
        return data


@dataclass(frozen=True)
class BundleImage:
    source: str  # the reference the image had where it came from (registry.k8s.io/pause:3.10)
    layout: Layout
    top: Descriptor


def _looks_like_reference(name: str) -> bool:
    return "/" in name or (":" in name and not name.startswith(":"))


def _repository_of(directory: str) -> str:
    """The image name a layout directory stands for: from its first component that is a registry host
    (``images/registry.k8s.io/pause`` is ``registry.k8s.io/pause``), else the whole path."""
    parts = directory.split("/")
    for i, part in enumerate(parts[:-1]):
        if "." in part or ":" in part or part == "localhost":
            return "/".join(parts[i:])
    return directory


def find_images(bundle: Path) -> list[BundleImage]:
    """Every image named in the index.json of every OCI layout in ``bundle`` (a directory or a tar)."""
    if not bundle.exists():
        raise BundleError(f"{bundle} does not exist", hint="give the bundle file or a directory of OCI layouts")
    source = _Source(bundle)
    images: list[BundleImage] = []
    for marker in sorted(source.names()):
        prefix = posixpath.dirname(marker)
        layout = Layout(source, prefix)
        index_name = posixpath.join(prefix, "index.json") if prefix else "index.json"
        if not source.exists(index_name):
            raise BundleError(f"{bundle}: the OCI layout {prefix or '.'} has no index.json", hint="rebuild the bundle")
        try:
            index = json.loads(source.read(index_name))
        except ValueError:
            raise BundleError(f"{bundle}: {index_name} is not JSON", hint="the bundle is damaged; rebuild it") from None
        for entry in index.get("manifests") or []:
            notes = entry.get("annotations") or {}
            name = notes.get(CONTAINERD_NAME) or notes.get(REF_NAME) or ""
            if not name:
                continue  # an unnamed manifest: nothing to tag it with
            if not _looks_like_reference(name):
                # A bare tag (skopeo's oci:DIR:TAG): the layout's directory names the repository.
                if not prefix:
                    raise BundleError(f"{bundle}: image tag {name!r} in a layout without a repository name",
                                      hint="name images by their full reference in the layout's index.json")
                name = f"{_repository_of(prefix)}:{name}"
            images.append(BundleImage(name, layout, Descriptor.of(entry, f"{index_name} ({name})")))
    if not images:
        raise BundleError(f"{bundle} holds no named images in OCI layouts",
                          hint="build the bundle with `kubexm offline package`, or give a directory of OCI layouts")
    return images


def target_repository(source: str, namespace: str | None, prefix: str = "") -> tuple[str, str | None]:
    """(repository in the target registry, tag or None) for a source reference: the registry host is dropped,
    Docker Hub's ``library/`` made explicit; ``namespace`` replaces all but the last path component (as
    spec.registry.namespaceOverride does for the names nodes pull); ``prefix``: the registry's path prefix."""
    from kubexm.addons.images import split_image

    _, path = split_image(source)
    path, _, _ = path.partition("@")
    tag = None
    last = path.rsplit("/", 1)[-1]
    if ":" in last:
        path, _, tag = path.rpartition(":")
    if namespace:
        path = f"{namespace.strip('/')}/{path.rsplit('/', 1)[-1]}"
    if prefix:
        path = f"{prefix.strip('/')}/{path}"
    return path, tag


# -- pushing ----------------------------------------------------------------------------------------------------

@dataclass
class ImageResult:
    source: str
    target: str
    digest: str
    status: str  # "pushed", "present" (already there), "failed"
    platforms: list[str] = field(default_factory=list)
    error: str = ""


@dataclass
class SyncReport:
    registry: str
    images: list[ImageResult] = field(default_factory=list)
    blobs_uploaded: int = 0
    blobs_mounted: int = 0
    blobs_present: int = 0
    manifests_pushed: int = 0
    bytes_uploaded: int = 0
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def failed(self) -> list[ImageResult]:
        return [i for i in self.images if i.status == "failed"]

    def as_dict(self) -> dict[str, Any]:
        return {"registry": self.registry, "images": [vars(i) for i in self.images],
                "blobs": {"uploaded": self.blobs_uploaded, "mounted": self.blobs_mounted,
                          "present": self.blobs_present},
                "manifestsPushed": self.manifests_pushed, "bytesUploaded": self.bytes_uploaded,
                "requests": self.requests}


class Syncer:
    def __init__(self, client: RegistryClient, *, namespace: str | None = None, prefix: str = "",
                 parallel: int = 8, chunk_size: int = CHUNK_SIZE, attempts: int = 3,
                 progress: Callable[[ImageResult], None] | None = None) -> None:
        self.client = client
        self.namespace = namespace
        self.prefix = prefix
        self.parallel = max(1, parallel)
        self.chunk_size = chunk_size
        self.attempts = attempts
        self.progress = progress
        self.report = SyncReport(client.registry)
        self._pool = ThreadPoolExecutor(max_workers=self.parallel, thread_name_prefix="kubexm-sync")
        self._slots = asyncio.Semaphore(self.parallel)
        # Probes get threads of their own: a semaphore alone does not bound connections, because the pool may
        # start a fresh thread (and so a fresh TLS connection) while an idle one is still being released.
        self._probe_pool = (self._pool if self.parallel <= PROBES
                            else ThreadPoolExecutor(max_workers=PROBES, thread_name_prefix="kubexm-probe"))
        self._blobs: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._manifests: dict[tuple[str, str], asyncio.Future[None]] = {}
        self._where: dict[str, str] = {}  # blob digest -> a repository of this registry known to hold it
        self._inflight: dict[str, asyncio.Future[None]] = {}  # blob digest -> its first upload in this run

    async def _io(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    async def _probe(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._slots:
            return await asyncio.get_running_loop().run_in_executor(self._probe_pool, fn, *args)

    async def _once(self, table: dict[tuple[str, str], asyncio.Future[None]], key: tuple[str, str],
                    work: Callable[[], Any]) -> None:
        """Run ``work`` once per key, however many images share it; later callers wait for the first."""
        fut = table.get(key)
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            table[key] = fut
            try:
                await work()
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved: a failure no other image waits for is not "never retrieved"
                del table[key]
                raise
            fut.set_result(None)
            return
        await asyncio.shield(fut)

    async def _blob(self, layout: Layout, repo: str, desc: Descriptor, image: str) -> None:
        async def work() -> None:
            if await self._io(self.client.blob_exists, repo, desc.digest):
                self.report.blobs_present += 1
                self._where.setdefault(desc.digest, repo)
                return
            if not layout.has(desc.digest):
                if desc.urls:  # a foreign layer: clients fetch it from its URLs, registries never held it
                    return
                raise BundleError(f"image {image}: blob {desc.digest} is missing from the bundle",
                                  hint="the bundle is incomplete: rebuild it (kubexm offline package resumes)")
            size = layout.source.size(layout.blob(desc.digest))
            if size != desc.size:
                raise BundleError(f"image {image}: blob {desc.digest} is {size} bytes in the bundle, not {desc.size}",
                                  hint="the bundle is damaged: rebuild it or copy it again")
            # One upload of a blob per run: a repository that needs it too waits for that upload, then mounts.
            other = self._inflight.get(desc.digest)
            mine = None
            if other is None:
                mine = self._inflight[desc.digest] = asyncio.get_running_loop().create_future()
            else:
                await asyncio.wait([other])  # its failure is its image's; this one then uploads on its own
            try:
                await self._upload(layout, repo, desc)
            finally:
                if mine is not None:
                    mine.set_result(None)
            self._where.setdefault(desc.digest, repo)

        await self._once(self._blobs, (repo, desc.digest), work)

    async def _upload(self, layout: Layout, repo: str, desc: Descriptor) -> None:
        name = layout.blob(desc.digest)

        def opener(offset: int, length: int) -> BinaryIO:
            return layout.source.open(name, offset, length)

        delay = 0.5
        for attempt in range(1, self.attempts + 1):
            try:
                mount = self._where.get(desc.digest)
                location = await self._io(self.client.start_upload, repo, desc.digest,
                                          mount if mount and mount != repo else None)
                if location is None:
                    self.report.blobs_mounted += 1
                    return
                await self._io(self.client.upload_blob, repo, desc.digest, opener, desc.size, location,
                               self.chunk_size)
                self.report.blobs_uploaded += 1
                self.report.bytes_uploaded += desc.size
                return
            except BlobCorrupt:
                raise
            except TransientError:
                if attempt == self.attempts:
                    raise
                await asyncio.sleep(delay)  # a new upload session: the failed one may hold part of the data
                delay *= 2

    async def _manifest(self, layout: Layout, repo: str, desc: Descriptor, reference: str | None,
                        image: str, platforms: list[str]) -> None:
        """Push a manifest (and, for an index, every child) by digest, then under ``reference`` when given."""
        data = layout.read_verified(desc, image)
        try:
            doc = json.loads(data)
        except ValueError:
            raise BundleError(f"image {image}: manifest {desc.digest} is not JSON", hint="rebuild the bundle") from None
        media = desc.media_type or str(doc.get("mediaType", ""))
        if not media:
            media = ("application/vnd.oci.image.index.v1+json" if "manifests" in doc
                     else "application/vnd.oci.image.manifest.v1+json")

        async def children() -> None:
            if media in INDEX_TYPES or "manifests" in doc:
                subs = [Descriptor.of(m, f"{image} {desc.digest}") for m in doc.get("manifests") or []]
                platforms.extend(s.platform for s in subs if s.platform)
                await asyncio.gather(*(self._manifest(layout, repo, s, None, image, platforms) for s in subs))
            else:
                blobs = [Descriptor.of(doc["config"], f"{image} config")] if doc.get("config") else []
                blobs += [Descriptor.of(layer, f"{image} layer") for layer in doc.get("layers") or []]
                await asyncio.gather(*(self._blob(layout, repo, b, image) for b in blobs))

        async def by_digest() -> None:
            if await self._io(self.client.manifest_digest, repo, desc.digest) == desc.digest:
                return
            await children()
            await self._io(self.client.put_manifest, repo, desc.digest, data, media)
            self.report.manifests_pushed += 1

        if reference is None:
            await self._once(self._manifests, (repo, desc.digest), by_digest)
            return
        # The image itself goes up once, under its tag (the registry keeps it by digest as well).
        if await self._io(self.client.manifest_digest, repo, desc.digest) != desc.digest:
            await children()
        await self._io(self.client.put_manifest, repo, reference, data, media)
        self.report.manifests_pushed += 1

    async def _image(self, image: BundleImage) -> ImageResult:
        repo, tag = target_repository(image.source, self.namespace, self.prefix)
        target = f"{self.client.registry}/{repo}" + (f":{tag}" if tag else f"@{image.top.digest}")
        result = ImageResult(image.source, target, image.top.digest, "failed")
        try:
            reference = tag or image.top.digest
            there = await self._probe(self.client.manifest_digest, repo, reference)
            if there == image.top.digest:
                result.status = "present"
            else:
                await self._manifest(image.layout, repo, image.top, tag, image.source, result.platforms)
                # Counted as pushed only when the registry itself names the image's digest for the reference.
                got = await self._io(self.client.manifest_digest, repo, reference)
                if got != image.top.digest:
                    raise RegistryError(f"registry {self.client.registry}: {repo}:{reference} points at {got}, "
                                        f"not {image.top.digest}, after the push")
                result.status = "pushed"
        except KubexmError as exc:
            result.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
            result.status = "failed"
            if isinstance(exc, RegistryAuthError) or _fatal(exc):
                raise
        if self.progress:
            self.progress(result)
        return result

    async def run(self, images: list[BundleImage]) -> SyncReport:
        try:
            await self._probe(self.client.ping)  # on a probe thread: a no-op re-run stays on PROBES connections
            self.report.images = list(await asyncio.gather(*(self._image(i) for i in images)))
        finally:
            self._pool.shutdown(wait=True)
            self._probe_pool.shutdown(wait=True)
            self.client.close()
            self.report.requests = dict(self.client.stats.requests)
        return self.report


def _fatal(exc: KubexmError) -> bool:
    """Failures no other image can escape (the registry is gone or rejects us): stop instead of trying each."""
    text = exc.message
    return "refused the connection" in text or "not trusted" in text or "cannot resolve" in text


def sync_bundle(bundle: Path, registry: str, *, namespace: str | None = None, username: str | None = None,
                password: str | None = None, ca_file: str | None = None, insecure: bool = False, parallel: int = 8,
                chunk_size: int = CHUNK_SIZE, progress: Callable[[ImageResult], None] | None = None) -> SyncReport:
    """Push every image of ``bundle`` into ``registry`` (``host[:port][/prefix]``); see the module doc."""
    host, _, prefix = registry.partition("/")
    images = find_images(bundle)
    client = RegistryClient(host, username=username, password=password, ca_file=ca_file, insecure=insecure)
    syncer = Syncer(client, namespace=namespace, prefix=prefix, parallel=parallel, chunk_size=chunk_size,
                    progress=progress)
    return asyncio.run(syncer.run(images))

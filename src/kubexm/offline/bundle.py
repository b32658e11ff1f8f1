"""The bundle file: an uncompressed tar of verified files with ``manifest.yaml`` first.

The manifest lists every file as a local asset source does (component, version, arch, file, sha256, plus
name and group for packages, images and charts), with its size and where it came from, so an unpacked
bundle *is* a ``spec.assets.localSource`` directory. ``manifest.yaml.sha256`` (the manifest's own digest)
comes first and a sidecar ``<bundle>.sha256`` (sha256sum format) covers the whole file. Reading streams the
tar once and checks each member against the manifest, so a truncated or altered bundle is named by member.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ruamel.yaml import YAML

from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file

MANIFEST = "manifest.yaml"
MANIFEST_DIGEST = "manifest.yaml.sha256"
KIND = "OfflineBundle"
API_VERSION = "kubexm.io/v1alpha1"


@dataclass(frozen=True)
class Item:
    """One file of the bundle, in the local source's manifest vocabulary."""

    component: str  # kubelet, etcd, ... | deb | image | chart | python
    version: str
    arch: str  # amd64, arm64, or all
    file: str  # path inside the bundle
    sha256: str
    size: int
    source: str  # URL, local path, apt, --images-from path, pypi
    name: str = ""  # deb package, image reference, chart name, distribution
    group: str = ""  # deb group (base, containerd, ...)
    platforms: tuple[str, ...] = ()  # images: the architectures the archive holds
    digest: str = ""  # images: the manifest (or index) digest

    def as_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v not in ("", ())}
        if self.platforms:
            d["platforms"] = list(self.platforms)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Item:
        return cls(str(d["component"]), str(d["version"]), str(d["arch"]), str(d["file"]), str(d["sha256"]).lower(),
                   int(d.get("size", 0)), str(d.get("source", "")), str(d.get("name", "")), str(d.get("group", "")),
                   tuple(str(p) for p in d.get("platforms") or ()), str(d.get("digest", "")))

    def label(self) -> str:
        what = self.name or self.component
        return f"{what} {self.version} ({self.arch})" if self.component not in ("image",) else f"image {self.name}"


@dataclass
class Manifest:
    items: list[Item]
    meta: dict[str, Any] = field(default_factory=dict)

    def to_yaml(self) -> bytes:
        doc = {"apiVersion": API_VERSION, "kind": KIND, **self.meta, "files": [i.as_dict() for i in self.items]}
        out = io.StringIO()
        yaml = YAML()
        yaml.width = 4096
        yaml.dump(doc, out)
        return out.getvalue().encode()

    @classmethod
    def parse(cls, data: bytes, where: str) -> Manifest:
        try:
            doc = YAML(typ="safe").load(data.decode())
            if not isinstance(doc, dict) or doc.get("kind") != KIND:
                raise ValueError(f"not a {KIND} manifest")
            items = [Item.from_dict(d) for d in doc.get("files") or []]
        except Exception as exc:
            raise KubexmError(f"{where}: {MANIFEST} is not readable ({exc})",
                              hint="the bundle is damaged or was not written by `kubexm offline package`") from None
        meta = {k: v for k, v in doc.items() if k not in ("apiVersion", "kind", "files")}
        return cls(items, meta)

    def total_size(self) -> int:
        return sum(i.size for i in self.items)


def write(output: Path, manifest: Manifest, blob: Callable[[Item], Path],
          progress: Callable[[int], None] | None = None) -> str:
    """Write the bundle atomically (``.partial`` then rename) and its sidecar; returns the bundle's sha256."""
    data = manifest.to_yaml()
    partial = output.with_name(output.name + ".partial")
    seen: set[str] = set()
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        _add_bytes(tar, MANIFEST_DIGEST, f"{hashlib.sha256(data).hexdigest()}  {MANIFEST}\n".encode())
        _add_bytes(tar, MANIFEST, data)
        for item in manifest.items:
            if item.file in seen:
                continue
            seen.add(item.file)
            info = tarfile.TarInfo(item.file)
            info.size = item.size
            info.mode = 0o644
            with open(blob(item), "rb") as fh:
                tar.addfile(info, fh)
            if progress:
                progress(item.size)
    digest = sha256_file(partial)
    os.replace(partial, output)
    sidecar(output).write_text(f"{digest}  {output.name}\n")
    return digest


def sidecar(bundle: Path) -> Path:
    return bundle.with_name(bundle.name + ".sha256")


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def _open(bundle: Path) -> tarfile.TarFile:
    try:
        return tarfile.open(bundle, "r|")
    except FileNotFoundError:
        raise KubexmError(f"{bundle}: no such file", hint="give the path of a bundle `kubexm offline package` wrote") from None
    except (tarfile.TarError, OSError) as exc:
        raise KubexmError(f"{bundle} is not a bundle ({exc})",
                          hint="give the path of a bundle `kubexm offline package` wrote") from None


def _members(bundle: Path, tar: tarfile.TarFile) -> Iterator[tuple[tarfile.TarInfo, IO[bytes] | None]]:
    current = "the start of the archive"
    try:
        for member in tar:
            current = member.name
            yield member, tar.extractfile(member)
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise KubexmError(f"{bundle.name} is truncated or damaged at {current} ({exc})",
                          hint="copy the bundle again (compare it with its .sha256 file)") from None


def read_manifest(bundle: Path) -> Manifest:
    """The manifest alone (the first members): fast, checks the manifest's own digest."""
    with _open(bundle) as tar:
        digest_line = ""
        for member, fh in _members(bundle, tar):
            data = fh.read() if fh else b""
            if member.name == MANIFEST_DIGEST:
                digest_line = data.decode(errors="replace")
                continue
            if member.name != MANIFEST:
                break
            _check_manifest_digest(bundle, data, digest_line)
            return Manifest.parse(data, bundle.name)
    raise KubexmError(f"{bundle.name} has no {MANIFEST} at its start",
                      hint="the file is not a kubexm bundle, or it is truncated")


def _check_manifest_digest(bundle: Path, data: bytes, digest_line: str) -> None:
    want = digest_line.split()[:1]
    if not want:
        raise KubexmError(f"{bundle.name}: {MANIFEST_DIGEST} is missing", hint="the bundle is damaged; copy it again")
    if hashlib.sha256(data).hexdigest() != want[0].lower():
        raise KubexmError(f"{bundle.name}: {MANIFEST} does not match {MANIFEST_DIGEST} (it was altered)",
                          hint="rebuild the bundle with `kubexm offline package` or copy it again")


def verify(bundle: Path, on_member: Callable[[str, int], None] | None = None) -> Manifest:
    """Every member checked against the manifest (sha256 and size), then the sidecar if present."""
    manifest: Manifest | None = None
    expected: dict[str, Item] = {}
    seen: set[str] = set()
    digest_line = ""
    with _open(bundle) as tar:
        for member, fh in _members(bundle, tar):
            if member.name == MANIFEST_DIGEST and fh:
                digest_line = fh.read().decode(errors="replace")
                continue
            if member.name == MANIFEST and fh:
                data = fh.read()
                _check_manifest_digest(bundle, data, digest_line)
                manifest = Manifest.parse(data, bundle.name)
                expected = {i.file: i for i in manifest.items}
                continue
            if manifest is None:
                raise KubexmError(f"{bundle.name} has no {MANIFEST} at its start",
                                  hint="the file is not a kubexm bundle, or it is truncated")
            item = expected.get(member.name)
            if item is None or fh is None:
                raise KubexmError(f"{bundle.name}: member {member.name} is not in the manifest (the bundle was altered)",
                                  hint="rebuild the bundle with `kubexm offline package`")
            digest = hashlib.sha256()
            size = 0
            try:
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023 - consumed within this iteration
                    digest.update(chunk)
                    size += len(chunk)
            except (tarfile.TarError, EOFError, OSError) as exc:
                raise KubexmError(f"{bundle.name} is truncated or damaged at {member.name} ({exc})",
                                  hint="copy the bundle again (compare it with its .sha256 file)") from None
            if size != item.size or digest.hexdigest() != item.sha256:
                raise KubexmError(f"{bundle.name}: member {member.name} does not match its sha256 in the manifest",
                                  hint="the bundle was altered or damaged; copy it again or rebuild it")
            seen.add(member.name)
            if on_member:
                on_member(member.name, size)
    if manifest is None:
        raise KubexmError(f"{bundle.name} has no {MANIFEST}", hint="the file is not a kubexm bundle")
    missing = sorted(set(expected) - seen)
    if missing:
        raise KubexmError(f"{bundle.name} is truncated: member {missing[0]} is missing"
                          + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""),
                          hint="copy the bundle again (compare it with its .sha256 file)")
    side = sidecar(bundle)
    if side.is_file():
        want = side.read_text().split()[:1]
        if want and sha256_file(bundle) != want[0].lower():
            raise KubexmError(f"{bundle.name} does not match {side.name}",
                              hint="the bundle or its checksum file was altered; copy both again")
    return manifest


def extract(bundle: Path, into: Path) -> Manifest:
    """Unpack a verified bundle as a local asset source directory (members are plain relative files)."""
    manifest = verify(bundle)
    into.mkdir(parents=True, exist_ok=True)
    with _open(bundle) as tar:
        for member, fh in _members(bundle, tar):
            if fh is None or member.name.startswith(("/", "..")) or "/../" in member.name:
                continue
            target = into / member.name
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as out:
                for chunk in iter(lambda: fh.read(1 << 20), b""):  # noqa: B023
                    out.write(chunk)
    return manifest

"""Component files (binaries, archives): catalog with checksums, download cache, local sources.

Every file is verified against its sha256 when it is downloaded and again every time it is
used, so a corrupted cache or a tampered local source stops the run before a host sees it.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kubexm import paths
from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file

MANIFEST = "manifest.yaml"


@dataclass(frozen=True)
class Asset:
    component: str
    version: str
    arch: str
    file: str
    sha256: str
    url: str | None = None  # None for files that only come from a local source


sha256_of = sha256_file  # the one file-hashing helper, shared with uploads


@lru_cache(maxsize=1)
def catalog() -> dict[str, Any]:
    text = resources.files("kubexm.assets").joinpath("catalog.yaml").read_text()
    data: dict[str, Any] = YAML(typ="safe").load(text)
    return data


def _fill(template: str, version: str, arch: str) -> str:
    return template.format(version=version, v=version.lstrip("v"), arch=arch)


def from_catalog(component: str, version: str, arch: str, mirror: str | None = None,
                 extra: dict[str, dict[str, dict[str, str]]] | None = None) -> Asset:
    """The catalog entry (or a user-supplied checksum) for one file; errors say how to fix a gap."""
    entry = catalog().get(component)
    if entry is None:
        raise KubexmError(f"kubexm has no catalog entry for component '{component}'",
                          hint=f"known: {', '.join(sorted(catalog()))}")
    sha = ((extra or {}).get(component, {}).get(version, {}) or {}).get(arch) or \
        (entry["versions"].get(version) or {}).get(arch)
    if not sha:
        known = ", ".join(v for v, a in entry["versions"].items() if arch in a) or "none"
        raise KubexmError(
            f"no published sha256 known for {component} {version} ({arch}); kubexm does not download what it cannot verify",
            hint=f"versions with checksums: {known}; or add spec.assets.checksums.{component}.{version}.{arch}, "
                 "or provide the file in spec.assets.localSource")
    url = _fill(entry["url"], version, arch)
    if mirror:
        parsed = urllib.parse.urlsplit(url)
        url = mirror.rstrip("/") + "/" + parsed.netloc + parsed.path
    return Asset(component, version, arch, _fill(entry["file"], version, arch), sha.lower(), url)


class LocalSource:
    """A directory with ``manifest.yaml`` listing component, version, arch, file and sha256.

    It replaces downloads entirely (air-gapped sites, or files built locally such as
    distribution packages repacked in the upstream layout).
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def entries(self) -> list[dict[str, str]]:
        path = self.root / MANIFEST
        try:
            data = YAML(typ="safe").load(path.read_text()) or {}
        except FileNotFoundError:
            raise KubexmError(f"local asset source {self.root} has no {MANIFEST}",
                              hint="create it with kubexm.assets.LocalSource.add() or write it by hand") from None
        return list(data.get("files", []))

    def find(self, component: str, version: str, arch: str, name: str = "") -> Asset | None:
        """The entry for a component (``name`` picks one package when a component holds many, e.g. debs)."""
        for e in self.entries():
            if (e.get("component"), str(e.get("version")), e.get("arch")) == (component, version, arch) and \
                    (not name or e.get("name") == name):
                return Asset(component, version, arch, str(e["file"]), str(e["sha256"]).lower())
        return None

    def add(self, component: str, version: str, arch: str, file: Path, name: str = "", group: str = "") -> Asset:
        """Copy ``file`` into the source and record it in the manifest with its sha256."""
        self.root.mkdir(parents=True, exist_ok=True)
        target = self.root / file.name
        if file.resolve() != target.resolve():
            shutil.copyfile(file, target)
        try:
            entries = self.entries()
        except KubexmError:
            entries = []
        entries = [e for e in entries if (e.get("component"), str(e.get("version")), e.get("arch"), e.get("name", ""),
                                          e.get("group", "")) != (component, version, arch, name, group)]
        asset = Asset(component, version, arch, file.name, sha256_of(target))
        entry = {"component": component, "version": version, "arch": arch, "file": file.name, "sha256": asset.sha256}
        if name:
            entry["name"] = name
        if group:
            entry["group"] = group
        entries.append(entry)
        yaml = YAML()
        with open(self.root / MANIFEST, "w") as fh:
            yaml.dump({"files": entries}, fh)
        return asset


def verified(path: Path, asset: Asset) -> Path:
    got = sha256_of(path)
    if got != asset.sha256:
        raise KubexmError(
            f"checksum mismatch for {asset.component} {asset.version} ({asset.arch}) at {path}: "
            f"expected {asset.sha256}, found {got}",
            hint="the file is corrupt or was replaced; delete it to fetch it again, or fix the local source")
    return path


class AssetStore:
    """Where a run gets its files: the local source if configured, else the download cache."""

    def __init__(self, local: Path | None = None, mirror: str | None = None,
                 checksums: dict[str, dict[str, dict[str, str]]] | None = None, cache: Path | None = None) -> None:
        self.local = LocalSource(local) if local else None
        self.mirror = mirror
        self.checksums = checksums or {}
        self.cache = cache or paths.home() / "cache" / "assets"

    def get(self, component: str, version: str, arch: str, name: str = "") -> tuple[Asset, Path]:
        """The verified local path of a component's file (downloading it once if needed)."""
        if self.local is not None:
            asset = self.local.find(component, version, arch, name)
            if asset is None:
                raise KubexmError(f"{component} {version} ({arch}) is not in the local asset source {self.local.root}",
                                  hint=f"add it to {self.local.root / MANIFEST}")
            return asset, verified(self.local.root / asset.file, asset)
        asset = from_catalog(component, version, arch, self.mirror, self.checksums)
        target = self.cache / component / version / arch / asset.file
        if target.is_file():
            if sha256_of(target) == asset.sha256:
                return asset, target
            target.unlink()  # corrupted cache entry: fetch it again
        return asset, self._download(asset, target)

    def _download(self, asset: Asset, target: Path) -> Path:
        assert asset.url is not None
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{asset.file}.")
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(asset.url, timeout=60) as response:
                shutil.copyfileobj(response, out, 1 << 20)
            verified(Path(tmp), asset)
            os.replace(tmp, target)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            Path(tmp).unlink(missing_ok=True)
            reason = getattr(exc, "reason", None) or exc
            raise KubexmError(f"cannot download {asset.component} {asset.version} from {asset.url}: {reason}",
                              hint="check the network or set spec.assets.mirror, or use spec.assets.localSource "
                                   "for air-gapped hosts") from None
        except KubexmError:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

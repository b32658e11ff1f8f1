"""Collecting everything a cluster file needs into a work directory, then into one bundle.

The work directory (``<bundle>.work`` next to the output) keeps every fetched file under its sha256
(``blobs/<sha256>``), so a re-run after an interruption fetches only what is missing. Nothing enters it
unverified: catalog files against their published sha256, local-source files against their manifest, debs
against apt's signed Packages index, image blobs against their digests, charts against their repository's
index digest, wheels against PyPI's hashes (pip checks them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ruamel.yaml import YAML

from kubexm.assets import AssetStore, LocalSource, from_catalog, verified
from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file
from kubexm.offline.bundle import Item
from kubexm.offline.images import registry_of, required_images
from kubexm.spec.models import Cluster

if TYPE_CHECKING:
    from kubexm.offline.pull import Puller

KINDS = ("binaries", "debs", "images", "charts", "python")


@dataclass
class Options:
    arches: list[str]
    os_names: list[str]
    images_from: Path | None = None
    skip: set[str] = field(default_factory=set)


def needed_binaries(cluster: Cluster) -> list[tuple[str, str]]:
    """(component, version) of every release file the cluster's hosts install."""
    from kubexm.steps.addons import all_addons
    from kubexm.steps.binaries import component_version

    spec = cluster.spec
    names = ["kubeadm", "kubelet", "kubectl", "crictl"] if spec.kubernetes.deploy_mode == "kubeadm" else []
    if spec.etcd.type == "kubexm":
        names.append("etcd")
    if spec.container_runtime.type == "docker":
        names.append("cri-dockerd")
    if spec.kubernetes.deploy_mode == "kubeadm" and any(r.chart for r in all_addons(cluster)):
        names.append("helm")
    return [(n, component_version(cluster, n)) for n in names]


def package_groups(cluster: Cluster) -> dict[str, list[str]]:
    """Debian package groups the OS, runtime and balancer modules install (names as the modules use them)."""
    from kubexm.steps.os import wanted_packages
    from kubexm.steps.runtime import RUNTIME_PACKAGES

    runtime = cluster.spec.container_runtime.type
    groups = {"base": wanted_packages(cluster)}
    groups[runtime] = {"containerd": list(RUNTIME_PACKAGES), "docker": ["docker.io", "containernetworking-plugins"],
                       "crio": ["cri-o", "skopeo", "containernetworking-plugins"]}[runtime]
    if cluster.spec.control_plane_endpoint.load_balancer == "haproxy-keepalived":
        groups["loadbalancer"] = ["haproxy", "keepalived"]
    return groups


class WorkDir:
    """Files by sha256, plus the items already collected (a journal that makes re-runs resume)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.blobs = root / "blobs"
        self.blobs.mkdir(parents=True, exist_ok=True)
        self.journal = root / "items.json"

    def blob(self, sha: str) -> Path:
        return self.blobs / sha

    def has(self, sha: str) -> bool:
        path = self.blob(sha)
        if not path.is_file():
            return False
        if sha256_file(path) == sha:
            return True
        path.unlink()  # damaged by an interruption: fetch again
        return False

    def put(self, path: Path, sha: str, move: bool = False) -> None:
        """Store ``path`` under ``sha`` after checking it is that."""
        got = sha256_file(path)
        if got != sha:
            raise KubexmError(f"{path.name}: sha256 {got} is not the expected {sha}",
                              hint="the file is corrupt or was replaced; delete it and re-run")
        tmp = self.blob(sha).with_suffix(".partial")
        if move:
            os.replace(path, tmp)
        else:
            shutil.copyfile(path, tmp)
        os.replace(tmp, self.blob(sha))

    def load(self) -> dict[str, dict[str, object]]:
        try:
            data: dict[str, dict[str, object]] = json.loads(self.journal.read_text())
            return data
        except (OSError, json.JSONDecodeError):
            return {}

    def record(self, key: str, item: Item) -> None:
        items = self.load()
        items[key] = item.as_dict()
        tmp = self.journal.with_suffix(".partial")
        tmp.write_text(json.dumps(items, indent=1))
        os.replace(tmp, self.journal)

    def known(self, key: str) -> Item | None:
        """An item collected by an earlier run whose file is still intact."""
        data = self.load().get(key)
        if data is None:
            return None
        item = Item.from_dict(data)
        return item if self.has(item.sha256) else None


Report = Callable[[str, Item, bool], None]  # (kind, item, fetched now)


class Collector:
    def __init__(self, cluster: Cluster, work: WorkDir, options: Options, report: Report) -> None:
        self.cluster = cluster
        self.work = work
        self.options = options
        self.report = report
        self.items: list[Item] = []
        self.unresolved: list[str] = []
        self._pullers: dict[str, Puller] = {}

    def _keep(self, kind: str, item: Item, fetched: bool) -> None:
        self.items.append(item)
        self.report(kind, item, fetched)

    def run(self) -> list[Item]:
        steps = {"binaries": self.binaries, "debs": self.debs, "images": self.images, "charts": self.charts,
                 "python": self.python}
        try:
            for kind in KINDS:
                if kind not in self.options.skip:
                    steps[kind]()
        finally:
            for puller in self._pullers.values():
                puller.close()
        return self.items

    # --- release binaries ------------------------------------------------------------------------------
    def binaries(self) -> None:
        spec = self.cluster.spec.assets
        local = LocalSource(Path(spec.local_source).expanduser()) if spec.local_source else None
        for component, version in needed_binaries(self.cluster):
            for arch in self.options.arches:
                key = f"bin/{component}/{version}/{arch}"
                if local is not None:
                    asset = local.find(component, version, arch)
                    if asset is None:
                        raise KubexmError(f"{component} {version} ({arch}) is not in the local source {local.root}",
                                          hint=f"add it to {local.root / 'manifest.yaml'} with its sha256")
                    source = str(local.root / asset.file)
                else:
                    asset = from_catalog(component, version, arch, spec.mirror, spec.checksums)
                    source = asset.url or ""
                item = Item(component, version, arch, f"files/{component}/{version}/{arch}/{asset.file}", asset.sha256,
                            0, source)
                fetched = False
                if not self.work.has(asset.sha256):
                    if local is not None:
                        self.work.put(verified(local.root / asset.file, asset), asset.sha256)
                    else:
                        store = AssetStore(mirror=spec.mirror, checksums=spec.checksums, cache=self.work.root / "downloads")
                        _, path = store.get(component, version, arch)
                        self.work.put(path, asset.sha256, move=True)
                    fetched = True
                item = _sized(item, self.work)
                self.work.record(key, item)
                self._keep("binary", item, fetched)

    # --- Debian packages ---------------------------------------------------------------------------------
    def debs(self) -> None:
        from kubexm.offline.debs import collect

        groups = package_groups(self.cluster)
        for os_name in self.options.os_names:
            for arch in self.options.arches:
                for group, debs in collect(self.work.root, arch, os_name, groups).items():
                    for deb in debs:
                        fetched = not self.work.has(deb.sha256)
                        if fetched:
                            self.work.put(deb.path, deb.sha256)
                        item = Item("deb", deb.version, deb.arch, f"debs/{os_name}/{group}/{deb.path.name}", deb.sha256,
                                    deb.path.stat().st_size, "apt", name=deb.package, group=group)
                        self._keep("deb", item, fetched)

    # --- container images --------------------------------------------------------------------------------
    def images(self) -> None:
        from kubexm.offline import oci

        wanted = required_images(self.cluster)
        sources = oci.scan(self.options.images_from) if self.options.images_from else {}
        for image in wanted.images:
            key = f"image/{image.ref}"
            item = self.work.known(key)
            fetched = False
            if item is None:
                source = sources.get(image.ref)
                with tempfile.TemporaryDirectory(dir=self.work.root) as tmp:
                    out = Path(tmp) / "image.tar"
                    if source is not None:
                        digest, platforms = oci.export(source, image.ref, out)
                        origin = str(source.path)
                    else:  # not among the local archives: copied from its registry, every blob verified
                        digest, platforms, where = self._pull(image.ref, image.needed_by, out)
                        origin = f"registry {where}"
                    sha = sha256_file(out)
                    self.work.put(out, sha, move=True)
                safe = image.ref.replace("/", "_").replace(":", "_").replace("@", "_")
                item = Item("image", image.tag, "all" if len(platforms) != 1 else platforms[0], f"images/{safe}.tar",
                            sha, self.work.blob(sha).stat().st_size, origin, name=image.ref,
                            platforms=tuple(platforms), digest=digest)
                self.work.record(key, item)
                fetched = True
            missing = [a for a in self.options.arches if a not in item.platforms]
            if missing:
                raise KubexmError(f"image {image.ref} from {item.source} has no {', '.join(missing)} platform "
                                  f"(it holds {', '.join(item.platforms) or 'none'})",
                                  hint="provide a multi-architecture image, or build the bundle for fewer --arch")
            self._keep("image", item, fetched)
        self.unresolved = wanted.unresolved

    def _pull(self, ref: str, needed_by: str, out: Path) -> tuple[str, list[str], str]:
        """Copy ``ref`` from its registry into ``out``: (manifest digest, platforms, where it came from)."""
        from kubexm.offline.pull import Puller, pull

        registry = registry_of(ref)
        spec = self.cluster.spec
        # Through the spec's first mirror of that registry when it has one (a pull-through cache, as the nodes
        # use it), else from the registry itself; the archive keeps the upstream name either way.
        mirror = next((m.endpoints[0] for m in spec.container_runtime.registry_mirrors
                       if m.registry == registry and m.endpoints), None)
        source = urllib.parse.urlsplit(mirror).netloc if mirror else registry
        puller = self._pullers.get(source)
        if puller is None:
            auth = next((a for a in spec.registry.auths if a.registry == source), None)
            puller = self._pullers[source] = Puller(
                source, username=auth.username if auth else None,
                password=auth.password.get_secret_value() if auth else None,
                ca_file=auth.ca_file if auth and auth.ca_file else None,
                insecure=source in spec.container_runtime.insecure_registries)
        try:
            return (*pull(ref, out, self.options.arches, puller), source)
        except KubexmError as exc:
            where = f"not in {self.options.images_from}, and " if self.options.images_from else ""
            raise KubexmError(f"image {ref} (needed by {needed_by}): {where}copying it from {source} failed: "
                              f"{exc.message}",
                              hint=exc.hint or "put an OCI layout, OCI archive or `docker save` archive of it in the "
                                               "--images-from directory, named with its full reference") from None

    # --- charts ---------------------------------------------------------------------------------------------
    def charts(self) -> None:
        from kubexm.steps.addons import all_addons

        if self.cluster.spec.kubernetes.deploy_mode != "kubeadm":
            return
        for release in all_addons(self.cluster):
            if not release.chart:
                continue
            key = f"chart/{release.name}/{release.chart}/{release.chart_version}"
            item = self.work.known(key)
            fetched = False
            if item is None:
                item = self._chart(release.chart, release.chart_repo, release.chart_version)
                self.work.record(key, item)
                fetched = True
            self._keep("chart", item, fetched)

    def _chart(self, chart: str, repo: str | None, version: str | None) -> Item:
        local = Path(chart).expanduser()
        if local.suffix == ".tgz" and local.is_file():
            sha = sha256_file(local)
            self.work.put(local, sha)
            return Item("chart", version or "local", "all", f"charts/{local.name}", sha, local.stat().st_size,
                        str(local), name=local.name.rsplit("-", 1)[0] if version else local.stem)
        if not repo or not version:
            raise KubexmError(f"chart {chart}: kubexm needs its repository and version to fetch it",
                              hint="set spec.addons[].repo and .version, or give a local .tgz path as chart")
        index_url = repo.rstrip("/") + "/index.yaml"
        try:
            with urllib.request.urlopen(index_url, timeout=60) as response:
                index = YAML(typ="safe").load(response.read().decode())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise KubexmError(f"cannot read the chart index {index_url}: {getattr(exc, 'reason', exc)}",
                              hint="check the repository URL, or give the chart as a local .tgz") from None
        entries = [e for e in (index or {}).get("entries", {}).get(chart, []) if str(e.get("version")) == version]
        if not entries or not entries[0].get("digest") or not entries[0].get("urls"):
            raise KubexmError(f"chart {chart} {version} has no entry with a digest in {index_url}",
                              hint="kubexm does not take a chart it cannot verify; give it as a local .tgz")
        entry = entries[0]
        url = urllib.parse.urljoin(index_url, entry["urls"][0])
        sha = str(entry["digest"]).lower()
        name = f"{chart}-{version}.tgz"
        if not self.work.has(sha):
            tmp = self.work.root / f".{name}.partial"
            try:
                with urllib.request.urlopen(url, timeout=120) as response, open(tmp, "wb") as out:
                    shutil.copyfileobj(response, out, 1 << 20)
            except (urllib.error.URLError, OSError) as exc:
                tmp.unlink(missing_ok=True)
                raise KubexmError(f"cannot download chart {chart} {version} from {url}: {getattr(exc, 'reason', exc)}",
                                  hint="check the network; a re-run resumes") from None
            try:
                self.work.put(tmp, sha, move=True)
            finally:
                tmp.unlink(missing_ok=True)
        return Item("chart", version, "all", f"charts/{name}", sha, self.work.blob(sha).stat().st_size, url, name=chart)

    # --- kubexm itself ---------------------------------------------------------------------------------------
    def python(self) -> None:
        project = _project_dir()
        wheels = self.work.root / "wheels"
        wheels.mkdir(exist_ok=True)
        # pip checks every download against the index's sha256; the kubexm wheel is built from this checkout.
        proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--wheel-dir", str(wheels), str(project)],
                              capture_output=True, text=True, check=False, timeout=1800)
        if proc.returncode != 0:
            raise KubexmError(f"pip could not collect kubexm's wheels: {proc.stderr.strip()[-300:]}",
                              hint="check that the Python package index is reachable; a re-run resumes")
        for wheel in sorted(wheels.glob("*.whl")):
            sha = sha256_file(wheel)
            fetched = not self.work.has(sha)
            if fetched:
                self.work.put(wheel, sha)
            dist, version = wheel.name.split("-")[:2]
            source = "built from " + str(project) if dist == "kubexm" else "pypi"
            self._keep("python", Item("python", version, _wheel_arch(wheel.name), f"python/{wheel.name}", sha,
                                      wheel.stat().st_size, source, name=dist), fetched)


def _wheel_arch(name: str) -> str:
    """A wheel's architecture from its platform tag: pure wheels serve any deploy machine, compiled ones this
    machine's (pip resolves for the Python and platform it runs on)."""
    platform = name.removesuffix(".whl").split("-")[-1]
    if platform == "any":
        return "all"
    return "arm64" if "aarch64" in platform else "amd64" if "x86_64" in platform else platform


def _sized(item: Item, work: WorkDir) -> Item:
    return Item(**{**item.__dict__, "size": work.blob(item.sha256).stat().st_size})


def _project_dir() -> Path:
    """The kubexm source tree (an editable install) to build its wheel from."""
    from importlib.metadata import PackageNotFoundError, distribution

    try:
        direct = distribution("kubexm").read_text("direct_url.json")
    except PackageNotFoundError:
        direct = None
    if direct:
        url = json.loads(direct).get("url", "")
        if url.startswith("file://"):
            return Path(urllib.parse.unquote(url[len("file://"):]))
    here = Path(__file__).resolve().parents[3]
    if (here / "pyproject.toml").is_file():
        return here
    raise KubexmError("kubexm's source tree is not found to build its wheel",
                      hint="run from a checkout (pip install -e .), or add --skip python")

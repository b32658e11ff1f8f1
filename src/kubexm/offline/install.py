"""``create cluster --offline-bundle``: install from a bundle and from nothing else.

The bundle is checked against the cluster file first (its manifest only, before anything is read in full or
any node is contacted), then verified member by member and unpacked into kubexm's asset cache. An unpacked
bundle *is* a local asset source (same manifest vocabulary), so the run gets its binaries, image archives and
OS packages from it by pointing spec.assets.localSource there. Packages are the one place where a local
source falls back to the network (apt/dnf for what it lacks): a bundle source never does, and its .debs are
installed without downgrading what a node already has newer.
"""

from __future__ import annotations

import hashlib
import posixpath
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from ruamel.yaml import YAML

from kubexm import paths
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, shell
from kubexm.offline import bundle as bundle_file
from kubexm.spec.models import Cluster

if TYPE_CHECKING:
    from kubexm.engine.context import HostContext
    from kubexm.steps.os import Packages

MARKER = ".kubexm-unpacked"  # holds the manifest digest once every member is in place
PACKAGE_DIR = "/var/lib/kubexm/packages"
SHOWN = 5  # missing things named in the one-line error; the rest counted


class CoverageError(KubexmError):
    """The bundle lacks something the cluster file needs; names what."""


def cache_root() -> Path:
    return paths.home() / "cache" / "offline"


def check_covers(manifest: bundle_file.Manifest, cluster: Cluster, bundle: Path) -> None:
    """One line naming what the cluster needs and the bundle lacks (the first few, then a count)."""
    from kubexm.offline.coverage import missing

    gaps = missing(manifest, cluster)
    if not gaps:
        return
    shown = "; ".join(gaps[:SHOWN]) + (f"; and {len(gaps) - SHOWN} more" if len(gaps) > SHOWN else "")
    raise CoverageError(f"{bundle.name} does not cover cluster {cluster.name}: missing {shown}",
                        hint=f"`kubexm offline verify {bundle} -f CLUSTER_FILE` lists every gap; rebuild the bundle "
                             "with `kubexm offline package -f CLUSTER_FILE -o BUNDLE`")


def unpack(bundle: Path, manifest: bundle_file.Manifest, root: Path | None = None) -> Path:
    """The bundle verified (every member against the manifest, the whole file against its sidecar) and unpacked
    into the asset cache, in a directory named by the manifest's digest: a second run with the same bundle
    verifies it again but does not write the files again."""
    digest = hashlib.sha256(manifest.to_yaml()).hexdigest()
    target = (root or cache_root()) / digest[:24]
    marker = target / MARKER
    if marker.is_file() and marker.read_text().strip() == digest:
        bundle_file.verify(bundle)
        return target
    # A half-written directory from an interrupted run is overwritten member by member.
    bundle_file.extract(bundle, target)
    marker.write_text(digest + "\n")
    return target


def with_bundle_source(cluster: Cluster, source: Path) -> Cluster:
    """The cluster with spec.assets.localSource pointing at the unpacked bundle (the cluster file is not changed)."""
    assets = cluster.spec.assets.model_copy(update={"local_source": str(source)})
    return cluster.model_copy(update={"spec": cluster.spec.model_copy(update={"assets": assets})})


def prepare(cluster: Cluster, bundle: Path, root: Path | None = None) -> Cluster:
    """Coverage first (manifest only: cheap, and names every gap before the long read), then verify and unpack."""
    manifest = bundle_file.read_manifest(bundle)
    check_covers(manifest, cluster, bundle)
    return with_bundle_source(cluster, unpack(bundle, manifest, root))


@lru_cache(maxsize=8)
def _is_bundle_dir(manifest_path: str, mtime: float) -> bool:
    try:
        doc = YAML(typ="safe").load(Path(manifest_path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and doc.get("kind") == bundle_file.KIND


def bundle_source(cluster: Cluster) -> Path | None:
    """The local asset source when it is an unpacked offline bundle, else None."""
    source = cluster.spec.assets.local_source
    if not source:
        return None
    manifest = Path(source).expanduser() / bundle_file.MANIFEST
    try:
        mtime = manifest.stat().st_mtime
    except OSError:
        return None
    return Path(source).expanduser() if _is_bundle_dir(str(manifest), mtime) else None


def bundle_debs(cluster: Cluster, arch: str, group: str) -> list[tuple[str, Path]]:
    """(package name, verified local file) of the bundle's .debs of ``group`` for ``arch``."""
    from kubexm.assets import LocalSource
    from kubexm.steps.binaries import asset_store

    source = bundle_source(cluster)
    if source is None:
        return []
    store = asset_store(cluster)
    out = []
    for e in LocalSource(source).entries():
        if e.get("component") == "deb" and e.get("arch") in (arch, "all") and e.get("group", "base") == group:
            name = str(e.get("name", ""))
            _, path = store.get("deb", str(e["version"]), str(e["arch"]), name=name)
            out.append((name, path))
    return out


def install_debs_command(directory: str, files: list[str]) -> Cmd:
    """dpkg -i of the bundle's .debs a node lacks or has older; one it has at the same or a newer version is
    left alone (the bundle's closure is made against a minimal system: a node may already run newer ones)."""
    return shell(
        "cd -- {dir} || exit 1; set --; "
        "for f in {files}; do "
        "p=$(dpkg-deb -f \"$f\" Package) && v=$(dpkg-deb -f \"$f\" Version) || exit 1; "
        "s=$(dpkg-query -W -f='${{db:Status-Abbrev}}|${{Version}}\\n' \"$p\" 2>/dev/null | head -n 1); "
        "case \"$s\" in ii*|hi*) dpkg --compare-versions \"${{s#*|}}\" ge \"$v\" && continue;; esac; "
        "set -- \"$@\" \"$f\"; done; "
        "if [ \"$#\" -gt 0 ]; then DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i \"$@\"; fi",
        dir=directory, files=files)


async def install_packages(step: Packages, host: HostContext) -> None:
    """Packages.run when the local source is a bundle: the group's .debs uploaded and installed, never the
    network; a package the bundle does not hold stops the step naming it."""
    import asyncio

    missing = await step._missing(host)
    if not missing:
        return
    facts = await host.facts()
    if facts.os_family != "debian":
        raise StepFailed(f"{host.name} is {facts.os_family}: offline bundles hold Debian packages only, "
                         f"and {', '.join(missing)} are missing there",
                         hint="install them on the node by hand, or use Debian nodes")
    debs = await asyncio.to_thread(bundle_debs, host.cluster, facts.arch, step.group)
    names = {n for n, _ in debs}
    absent = [p for p in missing if p.split("=", 1)[0].split(":", 1)[0] not in names]
    if absent:
        raise StepFailed(f"the offline bundle has no {', '.join(absent)} (package group {step.group}, {facts.arch}) "
                         f"and {host.name} does not have them installed",
                         hint="rebuild the bundle with `kubexm offline package -f CLUSTER_FILE --os debian12` "
                              "for this cluster file")
    directory = posixpath.join(PACKAGE_DIR, step.group)
    await host.run(shell("mkdir -p -- {dir}", dir=directory))
    files = []
    for _, path in debs:
        await host.upload(path, posixpath.join(directory, path.name))
        files.append(path.name)
    await host.run(install_debs_command(directory, files), timeout=900,
                   display=f"install {', '.join(missing)} from {len(files)} bundle package files")
    still = await step._missing(host)
    if still:
        raise StepFailed(f"packages still missing after installing the bundle's: {', '.join(still)}",
                         hint="the bundle's package closure does not fit this node; rebuild it for the node's OS")

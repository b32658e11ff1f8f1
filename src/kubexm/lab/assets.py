"""A local asset source for the lab, built from this machine's Debian packages.

Lab nodes have no route out and upstream release downloads are not reachable here, so the
lab repacks Debian's etcd-server/etcd-client binaries in the upstream release layout
(``etcd-vX.Y.Z-linux-ARCH/etcd``) and lists them in a kubexm local source manifest.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from kubexm.assets import LocalSource
from kubexm.errors import KubexmError
from kubexm.lab.base import cache_root

PACKAGES = ("etcd-server", "etcd-client")


def _apt_download(packages: tuple[str, ...], into: Path) -> list[Path]:
    for attempt in (1, 2):
        proc = subprocess.run(["apt-get", "download", *packages], cwd=into, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return sorted(into.glob("*.deb"))
        if attempt == 1:  # package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    raise KubexmError(f"apt-get download {' '.join(packages)} failed: {proc.stderr.strip()[-300:]}",
                      hint="check that apt can reach its mirror (`apt-get update`)")


def _deb_version(deb: Path) -> str:
    raw = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=True).stdout
    m = re.match(r"(?:\d+:)?(\d+\.\d+\.\d+)", raw.strip())
    if not m:
        raise KubexmError(f"cannot read the upstream version of {deb.name} ({raw.strip()})")
    return "v" + m.group(1)


def _deb_arch(deb: Path) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), "Architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def etcd_local_source() -> tuple[Path, str]:
    """Return (local source dir, etcd version), building it once per machine."""
    root = cache_root().parent / "lab-assets"
    source = LocalSource(root)
    try:
        entries = [e for e in source.entries() if e.get("component") == "etcd"]
    except KubexmError:
        entries = []
    if entries and (root / entries[0]["file"]).is_file():
        return root, str(entries[0]["version"])
    work = Path(tempfile.mkdtemp(prefix="kubexm-etcd-"))
    try:
        debs = _apt_download(PACKAGES, work)
        version = _deb_version(debs[0])
        arch = _deb_arch(debs[0])
        unpacked = work / "x"
        for deb in debs:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(unpacked)], check=True)
        top = f"etcd-{version}-linux-{arch}"
        archive = work / f"{top}.tar.gz"
        with tarfile.open(archive, "w:gz") as tar:
            for binary in ("etcd", "etcdctl"):
                tar.add(unpacked / "usr/bin" / binary, arcname=f"{top}/{binary}")
        source.add("etcd", version, arch, archive)
        return root, version
    finally:
        shutil.rmtree(work, ignore_errors=True)


# Node packages kubexm's OS module installs (socat, conntrack, ...); lab nodes have no mirror, so the lab
# provides them as .deb files, with every dependency the lab's base does not already have.
NODE_PACKAGES = ("socat", "conntrack", "ebtables", "ipset", "chrony", "ipvsadm")
# The container runtime the lab offers (Debian's containerd, runc and CNI plugins), as its own group.
RUNTIME_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
# The HA endpoint's balancer packages (group `loadbalancer`).
BALANCER_PACKAGES = ("haproxy", "keepalived")


def _download_for_base(packages: tuple[str, ...], base: Path, into: Path) -> list[Path]:
    """Let apt decide, against the lab base's own dpkg status, exactly which .debs a node needs."""
    (into / "partial").mkdir(parents=True, exist_ok=True)
    argv = ["apt-get", "install", "-y", "-qq", "--download-only", "--no-install-recommends",
            f"-o=Dir::State::status={base}/var/lib/dpkg/status", f"-o=Dir::Cache::archives={into}/",
            "-o=Debug::NoLocking=1", *packages]
    for attempt in (1, 2):
        proc = subprocess.run(argv, capture_output=True, text=True, check=False)
        if proc.returncode == 0:
            return sorted(into.glob("*.deb"))
        if attempt == 1:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, check=False)
    raise KubexmError(f"apt-get could not fetch {' '.join(packages)} for the lab: {proc.stderr.strip()[-300:]}",
                      hint="check that apt can reach its mirror (`apt-get update`)")


def deb_local_source(base: Path) -> Path:
    """Add the node, runtime and balancer packages (with their dependencies the lab base lacks) as
    `deb` entries of groups `base`, `containerd` and `loadbalancer` to the lab's local source."""
    root = cache_root().parent / "lab-assets"
    source = LocalSource(root)
    try:
        have = {(e.get("group", "base"), e.get("name")) for e in source.entries() if e.get("component") == "deb"}
    except KubexmError:
        have = set()
    for group, packages in (("base", NODE_PACKAGES), ("containerd", RUNTIME_PACKAGES),
                            ("loadbalancer", BALANCER_PACKAGES)):
        if {(group, p) for p in packages} <= have:
            continue
        work = Path(tempfile.mkdtemp(prefix="kubexm-debs-"))
        try:
            for deb in _download_for_base(packages, base, work):
                name = subprocess.run(["dpkg-deb", "-f", str(deb), "Package"], capture_output=True, text=True,
                                      check=True).stdout.strip()
                version = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True,
                                         check=True).stdout.strip()
                source.add("deb", version, _deb_arch(deb), deb, name=name, group=group)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return root

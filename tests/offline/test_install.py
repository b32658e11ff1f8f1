"""``create cluster --offline-bundle`` on the deploy machine: coverage before anything is read in full, a verified
unpack into the asset cache that the run then reads as its local source, and Debian packages from the bundle's
.debs only (never apt, never a downgrade)."""

from __future__ import annotations

import asyncio
import os
import shlex
import shutil
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, RunContext, RunOptions, Task, all_hosts
from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file
from kubexm.hosts.pool import ConnectionPool
from kubexm.offline import bundle as bundle_file
from kubexm.offline.bundle import Item, Manifest
from kubexm.offline.fetch import needed_binaries, package_groups
from kubexm.offline.images import required_images
from kubexm.offline.install import (
    MARKER,
    CoverageError,
    bundle_source,
    cache_root,
    install_debs_command,
    prepare,
)
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import asset_store
from kubexm.steps.os import Packages

CLUSTER = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: air}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: w1, address: 10.0.0.2}
  roleGroups: {etcd: [cp1], control-plane: [cp1], worker: [w1]}
  network: {plugin: none}
""")


def make_bundle(tmp: Path, cluster: Cluster = CLUSTER, drop: tuple[str, ...] = (),
                debs: tuple[tuple[str, str, Path], ...] = ()) -> Path:
    """A bundle holding a file for every binary and image the cluster needs (less ``drop``), written by kubexm's
    own bundle writer; binaries hold their own name so a test can tell them apart after the unpack."""
    files = tmp / "files"
    files.mkdir(exist_ok=True)
    items: list[Item] = []
    blobs: dict[str, Path] = {}

    def add(component: str, version: str, arch: str, name: str, data: bytes | Path, **extra: Any) -> None:
        path = data if isinstance(data, Path) else files / f"{component}-{len(items)}"
        if not isinstance(data, Path):
            path.write_bytes(data)
        items.append(Item(component, version, arch, f"{component}/{path.name}", sha256_file(path), path.stat().st_size,
                          "test", name=name, **extra))
        blobs[items[-1].file] = path

    for component, version in needed_binaries(cluster):
        if component not in drop:
            add(component, version, "amd64", "", f"{component} {version}\n".encode())
    for image in required_images(cluster).images:
        if image.ref not in drop:
            add("image", image.tag, "amd64", image.ref, image.ref.encode(), platforms=("amd64",))
    for name, group, path in debs:
        add("deb", "1.0", "amd64", name, path, group=group)
    out = tmp / "bundle.tar"
    bundle_file.write(out, Manifest(items, {"arches": ["amd64"], "os": ["debian12"] if debs else []}),
                      lambda i: blobs[i.file])
    return out


def test_the_run_reads_binaries_from_the_unpacked_bundle(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    prepared = prepare(CLUSTER, bundle)
    source = prepared.spec.assets.local_source
    assert source is not None and Path(source).parent == cache_root()
    assert CLUSTER.spec.assets.local_source is None  # the caller's cluster is not changed
    assert bundle_source(prepared) == Path(source) and bundle_source(CLUSTER) is None
    version = dict(needed_binaries(CLUSTER))["kubeadm"]
    _, path = asset_store(prepared).get("kubeadm", version, "amd64")
    assert path.read_bytes() == f"kubeadm {version}\n".encode()
    assert (Path(source) / MARKER).is_file()


def test_a_gap_is_named_in_one_line_before_anything_is_unpacked(tmp_path: Path) -> None:
    version = dict(needed_binaries(CLUSTER))["kubeadm"]
    bundle = make_bundle(tmp_path, drop=("kubeadm", "registry.k8s.io/pause:3.10"))
    with pytest.raises(CoverageError) as err:
        prepare(CLUSTER, bundle)
    message = err.value.message
    assert "\n" not in message and "does not cover cluster air" in message
    assert f"kubeadm {version} (amd64)" in message and "image registry.k8s.io/pause:3.10" in message
    assert "kubexm offline verify" in (err.value.hint or "")
    assert not cache_root().exists() or not any(cache_root().iterdir())


def test_a_bundle_for_another_version_names_what_it_has(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    newer = CLUSTER.model_copy(deep=True)
    newer.spec.kubernetes.version = "v1.34.1"
    with pytest.raises(CoverageError) as err:
        prepare(newer, bundle)
    assert "kubeadm v1.34.1 (amd64); the bundle has" in err.value.message


def _tamper(bundle: Path, member_prefix: str) -> str:
    """Flip one byte inside the first member whose name starts with ``member_prefix``; returns its name."""
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if m.name.startswith(member_prefix))
    with open(bundle, "r+b") as fh:
        fh.seek(member.offset_data)
        byte = fh.read(1)
        fh.seek(member.offset_data)
        fh.write(bytes([byte[0] ^ 0xFF]))
    return member.name


def test_a_tampered_member_is_refused_and_nothing_is_marked_unpacked(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    name = _tamper(bundle, "kubelet/")
    with pytest.raises(KubexmError) as err:
        prepare(CLUSTER, bundle)
    assert f"member {name} does not match its sha256" in err.value.message
    assert not list(cache_root().glob(f"*/{MARKER}"))


def test_a_second_run_verifies_the_bundle_again(tmp_path: Path) -> None:
    bundle = make_bundle(tmp_path)
    first = prepare(CLUSTER, bundle)
    _tamper(bundle, "etcd/")
    with pytest.raises(KubexmError) as err:
        prepare(CLUSTER, bundle)
    assert "does not match" in err.value.message
    # The unpacked copy of the good bundle is still intact and still verified on use.
    version = dict(needed_binaries(CLUSTER))["etcd"]
    _, path = asset_store(first).get("etcd", version, "amd64")
    assert path.read_bytes() == f"etcd {version}\n".encode()


# -- packages ------------------------------------------------------------------------------------------------


def build_deb(tmp: Path, name: str, version: str) -> Path:
    root = tmp / f"{name}-{version}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(f"Package: {name}\nVersion: {version}\nArchitecture: all\n"
                                             "Maintainer: kubexm tests <t@t>\nDescription: test package\n")
    out = tmp / f"{name}_{version}_all.deb"
    subprocess.run(["dpkg-deb", "--build", "--root-owner-group", str(root), str(out)], check=True,
                   capture_output=True)
    return out


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_debs_the_node_has_newer_or_equal_are_not_installed(tmp_path: Path) -> None:
    # Real dpkg-deb, dpkg-query (on a status database of our own) and dpkg --compare-versions; only `dpkg -i`
    # is recorded instead of run.
    debs = tmp_path / "debs"
    debs.mkdir()
    files = [build_deb(debs, "newer-here", "1.0"), build_deb(debs, "older-here", "2.0"),
             build_deb(debs, "absent", "1.0"), build_deb(debs, "same-here", "3.1")]
    admin = tmp_path / "admin"
    (admin / "info").mkdir(parents=True)
    (admin / "available").write_text("")
    (admin / "status").write_text("".join(
        f"Package: {n}\nStatus: install ok installed\nVersion: {v}\nArchitecture: all\nMaintainer: x\nDescription: x\n\n"
        for n, v in (("newer-here", "1:0.5"), ("older-here", "1.9"), ("same-here", "3.1"))))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "dpkg-i.log"
    real = shutil.which("dpkg")
    (bin_dir / "dpkg").write_text(f'#!/bin/sh\nif [ "$1" = --compare-versions ]; then exec {real} "$@"; fi\n'
                                  f'printf "%s\\n" "$@" > {log}\n')
    (bin_dir / "dpkg").chmod(0o755)
    cmd = install_debs_command(str(debs), [f.name for f in files])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "DPKG_ADMINDIR": str(admin)}
    res = subprocess.run(["sh", "-c", str(cmd)], env=env, capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    args = log.read_text().split()
    assert args[:2] == ["--force-confold", "-i"]
    assert sorted(args[2:]) == ["absent_1.0_all.deb", "older-here_2.0_all.deb"]


def debian_packages(host: MemoryHost) -> dict[str, str]:
    """dpkg's view of installed packages; the bundle's install marks every .deb it is given as installed."""
    pkgs: dict[str, str] = {}

    def query(h: MemoryHost, m: Any, s: bytes | None) -> tuple[int, str, str]:
        names = [w for w in shlex.split(m.string) if not w.startswith(("-", "2>"))][1:]
        return 0, "".join(f"{n}\tii \n" for n in names if n in pkgs), ""

    def install(h: MemoryHost, m: Any, s: bytes | None) -> tuple[int, str, str]:
        files = shlex.split(m.string.split("for f in ", 1)[1].split("; do ", 1)[0])
        pkgs.update({f.split("_", 1)[0]: "1.0" for f in files})
        return 0, "", ""

    host.on(r"^dpkg-query", query)
    host.on(r"^cd -- /var/lib/kubexm/packages/", install)
    return pkgs


def run_packages(fleet: MemoryFleet, cluster: Cluster, step: Packages) -> Any:
    options = RunOptions()
    run = RunContext(cluster, options, bus=EventBus([]),
                     pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))
    task = Task("BundlePackages", steps=[step], hosts=all_hosts())
    return asyncio.run(Executor(run).run_tasks([(None, task)]))


def bundle_with_debs(tmp: Path) -> Cluster:
    """A bundle with a .deb for every package the cluster's groups name (what `offline package --os` collects)."""
    debs = tmp / "debs"
    debs.mkdir()
    made = tuple((name, group, build_deb(debs, name, "1.0")) for group, names in package_groups(CLUSTER).items()
                 for name in names)
    return prepare(CLUSTER, make_bundle(tmp, debs=made))


def test_packages_come_from_the_bundle_debs_never_apt(tmp_path: Path) -> None:
    prepared = bundle_with_debs(tmp_path)
    fleet = MemoryFleet(["cp1", "w1"])
    installed = {name: debian_packages(fleet[name]) for name in ("cp1", "w1")}
    report = run_packages(fleet, prepared, Packages("containerd", ("containerd", "runc")))
    assert report.ok, [(r.host, r.step, r.message) for r in report.failures]
    for name in ("cp1", "w1"):
        # the whole group is handed to dpkg (it holds the closure); what the node had newer it keeps (see above)
        assert set(installed[name]) == set(package_groups(CLUSTER)["containerd"])
        assert not any("apt-get" in c for c in fleet[name].commands)
        assert "/var/lib/kubexm/packages/containerd/containerd_1.0_all.deb" in fleet[name].files
        assert not any(p.startswith("/var/lib/kubexm/packages/base/") for p in fleet[name].files)


def test_a_package_the_bundle_lacks_stops_the_step_without_the_network(tmp_path: Path) -> None:
    prepared = bundle_with_debs(tmp_path)
    fleet = MemoryFleet(["cp1", "w1"])
    for name in ("cp1", "w1"):
        debian_packages(fleet[name])
    report = run_packages(fleet, prepared, Packages("registry", ("docker-registry",)))
    assert not report.ok
    failure = report.failures[0]
    assert "the offline bundle has no docker-registry (package group registry, amd64)" in failure.message
    assert not any("apt-get" in c or "dpkg --force" in c for n in ("cp1", "w1") for c in fleet[n].commands)

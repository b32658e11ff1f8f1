"""`kubexm offline images|package|inspect|verify` as a user runs them: separate processes, real files, a real
apt download of Debian packages, images written as OCI layouts and docker archives."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from offline.ocimake import docker_archive, oci_archive, oci_dir

from kubexm.assets import LocalSource
from kubexm.hosts.digest import sha256_file
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config

BINARIES = (("kubeadm", "v1.33.7"), ("kubelet", "v1.33.7"), ("kubectl", "v1.33.7"), ("crictl", "v1.33.0"),
            ("etcd", "v3.5.21"), ("helm", "v3.15.4"))


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "COLUMNS": "200"}
    env.pop("KUBEXM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "kubexm", *args], capture_output=True, text=True, env=env,
                          timeout=900, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    return errors[0]


@pytest.fixture
def mirror(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A loopback HTTP server standing in for the download mirror (spec.assets.mirror)."""
    root = tmp_path / "mirror"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **k: object) -> None:
            super().__init__(*a, directory=str(root), **k)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root
    finally:
        server.shutdown()


def chart_repo(root: Path, url: str) -> str:
    """A Helm repository (index.yaml with the archive's digest) served by the loopback mirror."""
    import io

    chart = root / "charts" / "hello-1.0.0.tgz"
    chart.parent.mkdir(parents=True)
    with tarfile.open(chart, "w:gz") as tar:
        data = b"apiVersion: v2\nname: hello\nversion: 1.0.0\n"
        info = tarfile.TarInfo("hello/Chart.yaml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    (root / "charts" / "index.yaml").write_text(
        "apiVersion: v1\nentries:\n  hello:\n  - name: hello\n    version: 1.0.0\n"
        f"    digest: {sha256_file(chart)}\n    urls: [hello-1.0.0.tgz]\n")
    return f"{url}/charts"


@pytest.fixture
def site(tmp_path: Path, mirror: tuple[str, Path]) -> dict[str, Path]:
    """A flannel cluster with a chart addon from a (loopback) Helm repository, a local binary source, and a
    directory holding every image it needs."""
    source = LocalSource(tmp_path / "source")
    for component, version in BINARIES:
        f = tmp_path / "files" / component
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(f"#!/bin/sh\necho {component} {version}\n".encode())
        source.add(component, version, "amd64", f)
    cluster = tmp_path / "cluster.yaml"
    repo = chart_repo(mirror[1], mirror[0])
    cluster.write_text(sample_config("demo").replace("plugin: calico", "plugin: flannel").replace(
        "spec:\n", f"spec:\n  assets:\n    localSource: {source.root}\n  addons:\n  - name: hello\n"
        f"    chart: hello\n    repo: {repo}\n    version: 1.0.0\n", 1))
    from kubexm.offline.images import required_images

    refs = required_images(parse_cluster(cluster.read_text())).refs()
    images = tmp_path / "images"
    images.mkdir()
    for i, ref in enumerate(refs):  # every kind of source a user may have
        [oci_dir, oci_archive, docker_archive][i % 3](images, ref)
    return {"cluster": cluster, "images": images, "source": source.root, "root": tmp_path}


def test_images_lists_what_nodes_pull(site: dict[str, Path], kubexm_home: Path) -> None:
    proc = kubexm("offline", "images", "-f", str(site["cluster"]), "-o", "json", home=kubexm_home)
    assert proc.returncode == 0, proc.stderr
    refs = [i["ref"] for i in json.loads(proc.stdout)["images"]]
    assert "registry.k8s.io/kube-apiserver:v1.33.7" in refs and "registry.k8s.io/pause:3.10" in refs
    assert "docker.io/flannel/flannel:v0.26.4" in refs and "docker.io/library/busybox:1.36" in refs
    text = kubexm("offline", "images", "-f", str(site["cluster"]), home=kubexm_home)
    assert text.stdout.split() == refs


def test_package_inspect_verify_and_resume(site: dict[str, Path], kubexm_home: Path) -> None:
    out = site["root"] / "out" / "bundle.tar"
    out.parent.mkdir()
    args = ("offline", "package", "-f", str(site["cluster"]), "-o", str(out), "--images-from", str(site["images"]),
            "--skip", "python")
    first = kubexm(*args, home=kubexm_home)
    assert first.returncode == 0, first.stderr
    assert (out.parent / "bundle.tar.sha256").read_text().split()[0] == sha256_file(out)

    listing = json.loads(kubexm("offline", "inspect", str(out), "-o", "json", home=kubexm_home).stdout)
    files = listing["files"]
    debs = {f["name"] for f in files if f["component"] == "deb"}
    assert {"socat", "chrony", "conntrack", "ipset", "ebtables", "ipvsadm", "containerd", "runc"} <= debs
    assert "libwrap0" in debs  # socat's dependency: the closure, not just the names
    assert {(f["component"], f["version"]) for f in files} >= set(BINARIES)
    assert [(f["name"], f["version"]) for f in files if f["component"] == "chart"] == [("hello", "1.0.0")]
    images = {f["name"]: f for f in files if f["component"] == "image"}
    assert "docker.io/rancher/local-path-provisioner:v0.0.30" in images
    assert all(f["platforms"] == ["amd64"] and f["digest"].startswith("sha256:") for f in images.values())
    # The bundle unpacked is a local asset source, and each image archive names its image for ctr import.
    with tarfile.open(out) as tar:
        member = images["registry.k8s.io/pause:3.10"]["file"]
        tar.extract(member, site["root"] / "x", filter="data")
    from kubexm.assets.images import archive_refs

    assert archive_refs(site["root"] / "x" / member) == ["registry.k8s.io/pause:3.10"]

    ok = kubexm("offline", "verify", str(out), "-f", str(site["cluster"]), home=kubexm_home)
    assert ok.returncode == 0, ok.stderr
    assert "covers" in ok.stdout

    again = kubexm(*args, home=kubexm_home)  # resumes from the work dir: nothing fetched again
    assert again.returncode == 0, again.stderr
    rows = [line.split() for line in again.stdout.splitlines() if line.split()[:1] in (["binary"], ["image"], ["deb"])]
    assert rows and all(r[2] == "0" for r in rows), again.stdout

    other = site["root"] / "other.yaml"
    other.write_text(site["cluster"].read_text().replace("      user: root", "      arch: arm64\n      user: root", 1))
    gap = kubexm("offline", "verify", str(out), "-f", str(other), "-e", "spec.kubernetes.version=v1.34.3",
                 home=kubexm_home)
    line = one_line_error(gap)
    assert "does not cover" in line
    assert "architecture arm64" in line
    assert "missing: kubelet v1.34.3 (amd64)" in gap.stderr or "kubelet v1.34.3" in gap.stderr
    assert "image registry.k8s.io/kube-apiserver:v1.34.3" in gap.stderr


def test_damaged_bundles_are_named_by_member(site: dict[str, Path], kubexm_home: Path) -> None:
    out = site["root"] / "bundle.tar"
    proc = kubexm("offline", "package", "-f", str(site["cluster"]), "-o", str(out), "--images-from",
                  str(site["images"]), "--skip", "python,debs", home=kubexm_home)
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    with tarfile.open(out) as tar:
        members = tar.getmembers()
    victim = next(m for m in members if m.name.startswith("images/"))

    tampered = site["root"] / "tampered.tar"
    raw = bytearray(data)
    raw[victim.offset_data + victim.size // 2] ^= 0xFF
    tampered.write_bytes(bytes(raw))
    line = one_line_error(kubexm("offline", "verify", str(tampered), home=kubexm_home))
    assert victim.name in line and "sha256" in line

    truncated = site["root"] / "truncated.tar"
    truncated.write_bytes(data[: victim.offset_data + victim.size // 2])
    line = one_line_error(kubexm("offline", "verify", str(truncated), home=kubexm_home))
    assert "truncated" in line and victim.name in line

    line = one_line_error(kubexm("offline", "inspect", str(site["cluster"]), home=kubexm_home))
    assert "cluster.yaml" in line


def test_missing_image_and_unverifiable_binary_are_refused(site: dict[str, Path], kubexm_home: Path) -> None:
    out = site["root"] / "b.tar"
    for p in site["images"].iterdir():
        if "busybox" in p.name:
            if p.is_dir():
                import shutil

                shutil.rmtree(p)
            else:
                p.unlink()
    line = one_line_error(kubexm("offline", "package", "-f", str(site["cluster"]), "-o", str(out), "--images-from",
                                 str(site["images"]), "--skip", "python,debs,binaries", home=kubexm_home))
    assert "docker.io/library/busybox:1.36" in line and "local-path" in line
    assert not out.exists()

    # Without a local source the catalog decides: a version it has no sha256 for is refused, naming it.
    plain = site["root"] / "plain.yaml"
    plain.write_text(sample_config("demo"))
    line = one_line_error(kubexm("offline", "package", "-f", str(plain), "-o", str(out), "-e",
                                 "spec.kubernetes.version=v1.31.1", "--skip", "python,debs,images,charts", home=kubexm_home))
    assert "no published sha256" in line and "kubeadm v1.31.1" in line


def test_catalog_downloads_are_verified(tmp_path: Path, mirror: tuple[str, Path], kubexm_home: Path) -> None:
    url, root = mirror
    sums: dict[str, str] = {}
    for component, version in BINARIES:
        from kubexm.assets import from_catalog

        asset = from_catalog(component, version, "amd64", mirror=url, extra={component: {version: {"amd64": "0" * 64}}})
        assert asset.url is not None
        path = root / asset.url[len(url) + 1:]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(f"{component} {version}\n".encode())
        sums[component] = sha256_file(path)
    checksums = "".join(f"      {c}:\n        {v}:\n          amd64: {sums[c]}\n" for c, v in BINARIES)
    cluster = tmp_path / "c.yaml"
    cluster.write_text(sample_config("demo").replace(
        "spec:\n", f"spec:\n  assets:\n    mirror: {url}\n    checksums:\n{checksums}", 1))
    out = tmp_path / "bin.tar"
    proc = kubexm("offline", "package", "-f", str(cluster), "-o", str(out), "--skip", "python,debs,images,charts",
                  home=kubexm_home)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(kubexm("offline", "inspect", str(out), "-o", "json", home=kubexm_home).stdout)
    assert {f["component"]: f["sha256"] for f in manifest["files"]} == sums

    # A mirror serving something else than the published file: refused, nothing written.
    (root / next(iter(sorted(p.relative_to(root) for p in root.rglob("kubelet"))))).write_bytes(b"evil\n")
    out2 = tmp_path / "bin2.tar"
    line = one_line_error(kubexm("offline", "package", "-f", str(cluster), "-o", str(out2), "--skip",
                                 "python,debs,images,charts", home=kubexm_home))
    assert "checksum mismatch for kubelet" in line
    assert not out2.exists()


def test_kubexm_wheels_with_dependencies(tmp_path: Path, kubexm_home: Path) -> None:
    cluster = tmp_path / "c.yaml"
    cluster.write_text(sample_config("demo"))
    out = tmp_path / "py.tar"
    proc = kubexm("offline", "package", "-f", str(cluster), "-o", str(out), "--skip", "binaries,debs,images,charts",
                  home=kubexm_home)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(kubexm("offline", "inspect", str(out), "-o", "json", home=kubexm_home).stdout)["files"]
    wheels = {f["name"]: f for f in files if f["component"] == "python"}
    assert {"kubexm", "pydantic", "typer", "asyncssh", "cryptography"} <= set(wheels)
    assert wheels["typer"]["arch"] == "all" and wheels["pydantic_core"]["arch"] == "amd64"
    assert kubexm("offline", "verify", str(out), home=kubexm_home).returncode == 0

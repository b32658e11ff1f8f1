"""`kubexm create cluster --offline-bundle` refusing a bad bundle as a user sees it: a separate process, a bundle
written by `kubexm offline package`, one error line, no traceback, and no node contacted (the cluster's hosts are
addresses nobody answers on: a run that tried to connect would say so)."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from offline.ocimake import oci_dir

from kubexm.assets import LocalSource
from kubexm.offline.images import required_images
from kubexm.spec.loader import parse_cluster

BINARIES = (("kubeadm", "v1.33.7"), ("kubelet", "v1.33.7"), ("kubectl", "v1.33.7"), ("crictl", "v1.33.0"),
            ("etcd", "v3.5.21"))


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "COLUMNS": "200"}
    env.pop("KUBEXM_DEBUG", None)
    return subprocess.run([sys.executable, "-m", "kubexm", *args], capture_output=True, text=True, env=env,
                          timeout=600, check=False)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0, proc.stdout
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr
    # Nothing ran: no task started, no host was connected to.
    assert "Preflight" not in out and "connect" not in out.lower(), out
    return errors[0]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A cluster file (hosts on TEST-NET addresses) and a bundle `offline package` wrote for it (binaries from a
    local source, images from OCI layouts; no OS packages)."""
    root = tmp_path_factory.mktemp("offline-install")
    source = LocalSource(root / "source")
    for component, version in BINARIES:
        f = root / "files" / component
        f.parent.mkdir(exist_ok=True)
        f.write_bytes(f"#!/bin/sh\necho {component} {version}\n".encode())
        source.add(component, version, "amd64", f)
    cluster = root / "cluster.yaml"
    cluster.write_text(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: airgap}}
spec:
  hosts:
    - {{name: cp1, address: 192.0.2.10, user: root}}
    - {{name: w1, address: 192.0.2.11, user: root}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], worker: [w1]}}
  etcd: {{version: v3.5.21}}
  network: {{plugin: none}}
  assets: {{localSource: {source.root}}}
""")
    images = root / "images"
    images.mkdir()
    for ref in required_images(parse_cluster(cluster.read_text())).refs():
        oci_dir(images, ref)
    bundle = root / "bundle.tar"
    home = root / "home"
    made = kubexm("offline", "package", "-f", str(cluster), "-o", str(bundle), "--images-from", str(images),
                  "--skip", "debs,python,charts", home=home)
    assert made.returncode == 0, made.stderr
    return {"cluster": cluster, "bundle": bundle, "root": root}


def copy_of(site: dict[str, Path], name: str) -> Path:
    out = site["root"] / name
    out.write_bytes(site["bundle"].read_bytes())
    return out


def test_a_tampered_member_is_named(site: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_of(site, "tampered.tar")
    with tarfile.open(bundle) as tar:
        member = next(m for m in tar.getmembers() if "kubelet" in m.name)
    with open(bundle, "r+b") as fh:
        fh.seek(member.offset_data + 3)
        fh.write(b"X")
    proc = kubexm("create", "cluster", "-f", str(site["cluster"]), "--offline-bundle", str(bundle), "-y",
                  home=tmp_path)
    line = one_line_error(proc)
    assert f"member {member.name} does not match its sha256" in line, line
    assert not list((tmp_path / "cache" / "offline").glob("*/.kubexm-unpacked"))


def test_a_truncated_bundle_is_named(site: dict[str, Path], tmp_path: Path) -> None:
    bundle = copy_of(site, "truncated.tar")
    with open(bundle, "r+b") as fh:
        fh.truncate(bundle.stat().st_size // 2)
    line = one_line_error(kubexm("create", "cluster", "-f", str(site["cluster"]), "--offline-bundle", str(bundle),
                                 "-y", home=tmp_path))
    assert "truncated" in line and "truncated.tar" in line, line


def test_a_bundle_that_does_not_cover_the_cluster_names_what_is_missing(site: dict[str, Path], tmp_path: Path) -> None:
    proc = kubexm("create", "cluster", "-f", str(site["cluster"]), "-e", "spec.kubernetes.version=v1.34.1",
                  "--offline-bundle", str(site["bundle"]), "-y", home=tmp_path)
    line = one_line_error(proc)
    assert "bundle.tar does not cover cluster airgap: missing kubeadm v1.34.1 (amd64); the bundle has v1.33.7" in line
    assert "kubexm offline verify" in proc.stderr  # the hint: where the full list is


def test_a_missing_bundle_file_is_named(site: dict[str, Path], tmp_path: Path) -> None:
    line = one_line_error(kubexm("create", "cluster", "-f", str(site["cluster"]), "--offline-bundle",
                                 str(tmp_path / "nope.tar"), "-y", home=tmp_path))
    assert "nope.tar: no such file" in line, line


def test_a_covering_bundle_goes_on_to_plan_the_run(site: dict[str, Path], tmp_path: Path) -> None:
    # The good bundle passes the check and is unpacked; the offline plan then lists the work from it.
    proc = kubexm("create", "cluster", "-f", str(site["cluster"]), "--offline-bundle", str(site["bundle"]),
                  "--dry-run", "--offline", home=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "InstallEtcdCluster" in proc.stdout
    assert list((tmp_path / "cache" / "offline").glob("*/.kubexm-unpacked"))

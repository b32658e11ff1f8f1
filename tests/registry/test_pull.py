"""`offline package` copies images from registries: a real docker-registry on loopback holds them (pushed with
skopeo, a client kubexm did not write), kubexm pulls them into OCI archives, skopeo reads the archives back."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from support.process import cli_env

from kubexm.errors import KubexmError
from kubexm.offline import oci
from kubexm.offline.pull import Puller, pull

from .conftest import PASSWORD, USER, RunningRegistry
from .oci import LayoutWriter, multiarch

KUBEXM = str(Path(sys.executable).with_name("kubexm"))


def _skopeo(reg: RunningRegistry, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    certs = tmp / "skopeo-certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(reg.ca_file, certs / "ca.crt")
    auth = tmp / "auth.json"
    auth.write_text(json.dumps({"auths": {reg.address: {"auth": base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()}}}))
    res = subprocess.run(["skopeo", args[0], "--authfile", str(auth), *args[1:]], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "SSL_CERT_DIR": str(certs)})
    return res


def push(reg: RunningRegistry, tmp: Path, layout: Path, tag: str, target: str) -> None:
    certs = tmp / "skopeo-certs"
    res = _skopeo(reg, tmp, "copy", "--all", "--dest-cert-dir", str(certs), f"oci:{layout}:{tag}", f"docker://{target}")
    assert res.returncode == 0, res.stderr


@pytest.fixture
def app(registry: RunningRegistry, tmp_path: Path) -> tuple[str, str]:
    """team/app:1 in the registry, an amd64 + arm64 index; returns (reference, index digest)."""
    writer = LayoutWriter(tmp_path / "layout")
    digest = multiarch(writer, "1", b"shared base\n" * 50)
    ref = f"{registry.address}/team/app:1"
    push(registry, tmp_path, tmp_path / "layout", "1", ref)
    return ref, digest


def puller(reg: RunningRegistry, password: str = PASSWORD) -> Puller:
    return Puller(reg.address, username=USER, password=password, ca_file=str(reg.ca_file))


def test_pull_keeps_the_wanted_platforms_and_skopeo_reads_the_archive(registry: RunningRegistry, app: tuple[str, str],
                                                                      tmp_path: Path) -> None:
    ref, full = app
    out = tmp_path / "out" / "app.tar"
    p = puller(registry)
    digest, platforms = pull(ref, out, ["amd64"], p)
    p.close()
    assert platforms == ["amd64"] and digest != full  # the index lists the bundle's platforms only
    raw = _skopeo(registry, tmp_path, "inspect", "--raw", f"oci-archive:{out}")
    assert raw.returncode == 0, raw.stderr
    index = json.loads(raw.stdout)
    (child,) = index["manifests"]
    assert child["platform"]["architecture"] == "amd64"
    # The platform's manifest is the registry's own, byte for byte (same digest).
    upstream = json.loads(_skopeo(registry, tmp_path, "inspect", "--raw", "--cert-dir", str(tmp_path / "skopeo-certs"),
                                  f"docker://{ref}").stdout)
    assert child["digest"] == next(m["digest"] for m in upstream["manifests"] if m["platform"]["architecture"] == "amd64")
    info = _skopeo(registry, tmp_path, "inspect", f"oci-archive:{out}")
    assert info.returncode == 0 and json.loads(info.stdout)["Architecture"] == "amd64", info.stderr
    # What offline package and sync read: the archive names the reference it was pulled as.
    assert ref in oci.scan(out.parent)


def test_an_index_pinned_by_digest_is_kept_whole(registry: RunningRegistry, app: tuple[str, str], tmp_path: Path) -> None:
    ref, full = app
    pinned = ref.rsplit(":", 1)[0] + "@" + full
    p = puller(registry)
    digest, platforms = pull(pinned, tmp_path / "pinned.tar", ["amd64"], p)
    p.close()
    assert digest == full and platforms == ["amd64", "arm64"]


def test_a_blob_damaged_in_the_registry_is_refused(registry: RunningRegistry, app: tuple[str, str], tmp_path: Path) -> None:
    ref, _ = app
    blobs = (registry.data / "docker" / "registry" / "v2" / "blobs").rglob("data")
    victim = next(f for f in blobs if f.read_bytes()[:2] == b"\x1f\x8b")  # a layer (gzip)
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    p = puller(registry)
    with pytest.raises(KubexmError, match="arrived damaged"):
        pull(ref, tmp_path / "bad.tar", ["amd64", "arm64"], p)
    p.close()
    assert not (tmp_path / "bad.tar").exists()


def test_missing_image_and_wrong_password_are_one_line_errors(registry: RunningRegistry, app: tuple[str, str],
                                                              tmp_path: Path) -> None:
    ref, _ = app
    p = puller(registry)
    with pytest.raises(KubexmError, match="team/nope: manifest 1 is not in the registry"):
        pull(f"{registry.address}/team/nope:1", tmp_path / "x.tar", ["amd64"], p)
    p.close()
    p = puller(registry, password="wrong")
    with pytest.raises(KubexmError) as err:
        pull(ref, tmp_path / "y.tar", ["amd64"], p)
    p.close()
    assert "\n" not in err.value.message and PASSWORD not in err.value.message + (err.value.hint or "")


def test_offline_package_copies_images_through_the_spec_mirror(registry: RunningRegistry, tmp_path: Path) -> None:
    """The whole command, as a user runs it: every image the spec needs, upstream-named, comes through the
    spec's registry mirror (a pull-through cache) and lands in the bundle, which verifies."""
    from kubexm.offline.images import required_images
    from kubexm.offline.pull import split_reference
    from kubexm.spec.loader import parse_cluster

    text = f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: pk}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], worker: [cp1]}}
  network: {{plugin: none}}
  containerRuntime:
    registryMirrors:
      - {{registry: registry.k8s.io, endpoints: ["https://{registry.address}"]}}
      - {{registry: docker.io, endpoints: ["https://{registry.address}"]}}
  registry:
    auths:
      - registry: "{registry.address}"
        username: {USER}
        password: '{PASSWORD.replace("'", "''")}'
        caFile: {registry.ca_file}
"""
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(text)
    writer = LayoutWriter(tmp_path / "layout")
    multiarch(writer, "img", b"base\n")
    for image in required_images(parse_cluster(text)).images:
        _, repo, tag = split_reference(image.ref)
        push(registry, tmp_path, tmp_path / "layout", "img", f"{registry.address}/{repo}:{tag}")
    bundle = tmp_path / "bundle.tar"
    env = cli_env(tmp_path / "home")
    res = subprocess.run([KUBEXM, "offline", "package", "-f", str(cluster_file), "-o", str(bundle),
                          "--skip", "binaries,debs,charts,python"], capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    with tarfile.open(bundle) as tar:
        manifest = tar.extractfile("manifest.yaml")
        assert manifest is not None
        listing = manifest.read().decode()
    for image in required_images(parse_cluster(text)).images:
        assert image.ref in listing
    assert f"registry {registry.address}" in listing and PASSWORD not in listing
    res = subprocess.run([KUBEXM, "offline", "verify", str(bundle)], capture_output=True, text=True, env=env, timeout=300,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]

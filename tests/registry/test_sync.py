"""`offline sync` against a real distribution registry on loopback (TLS from kubexm's PKI, htpasswd auth);
the registry's content is checked with skopeo, a client kubexm did not write."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from kubexm.offline.registry_client import RegistryAuthError, RegistryClient, RegistryError
from kubexm.offline.sync import BundleError, find_images, sync_bundle, target_repository

from .conftest import PASSWORD, USER, RunningRegistry, start_registry, stop
from .oci import LayoutWriter, multiarch

CHUNK = 128 * 1024


def build_bundle(root: Path) -> dict[str, str]:
    """Two layouts; images in three repositories share a layer; app's own layers exceed one chunk."""
    app = LayoutWriter(root / "images" / "app")
    digests = {"example.com/team/app:v1": multiarch(app, "example.com/team/app:v1", b"shared", extra=300 * 1024)}
    digests["example.com/team/app:latest"] = app.index("example.com/team/app:latest", _children(app, digests))
    pause = LayoutWriter(root / "images" / "registry.k8s.io" / "pause")
    digests["registry.k8s.io/pause:3.10"] = multiarch(pause, "3.10", b"shared")  # bare tag: the directory names it
    single = pause.manifest("amd64", [pause.layer({"shared.txt": b"shared"})])
    digests["docker.io/library/busybox:1.36"] = pause.single("docker.io/library/busybox:1.36", single)
    return digests


def _children(writer: LayoutWriter, digests: dict[str, str]) -> list[dict[str, object]]:
    index = json.loads((writer.root / "blobs" / "sha256" / digests["example.com/team/app:v1"][7:]).read_bytes())
    return list(index["manifests"])


def skopeo(reg: RunningRegistry, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    if not shutil.which("skopeo"):
        pytest.skip("skopeo is not installed (apt-get install skopeo)")
    certs = tmp / "skopeo-certs"
    certs.mkdir(exist_ok=True)
    shutil.copy(reg.ca_file, certs / "ca.crt")
    auth = tmp / "auth.json"  # credentials in a file, not on skopeo's command line
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    auth.write_text(json.dumps({"auths": {reg.address: {"auth": token}}}))
    return subprocess.run(["skopeo", *args[:1], "--authfile", str(auth), "--cert-dir", str(certs), *args[1:]],
                          capture_output=True, text=True, timeout=60)


def test_target_names_follow_the_private_registry_rules() -> None:
    assert target_repository("registry.k8s.io/coredns/coredns:v1.11.1", None) == ("coredns/coredns", "v1.11.1")
    assert target_repository("busybox:1.36", None) == ("library/busybox", "1.36")
    assert target_repository("quay.io/cilium/cilium:v1.16.6", "kubexm") == ("kubexm/cilium", "v1.16.6")
    assert target_repository("reg:5000/a/b@sha256:" + "0" * 64, None, "mirror") == ("mirror/a/b", None)


def test_sync_pushes_every_architecture_and_a_rerun_pushes_nothing(registry: RunningRegistry, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    digests = build_bundle(bundle)
    tar_path = tmp_path / "bundle.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(bundle, arcname=".")

    report = sync_bundle(tar_path, registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file),
                         parallel=4, chunk_size=CHUNK)
    assert not report.failed, report.failed
    assert {i.source: i.status for i in report.images} == {
        "example.com/team/app:v1": "pushed", "example.com/team/app:latest": "pushed",
        "registry.k8s.io/pause:3.10": "pushed", "docker.io/library/busybox:1.36": "pushed"}
    by_source = {i.source: i for i in report.images}
    assert sorted(by_source["example.com/team/app:v1"].platforms) == ["linux/amd64", "linux/arm64"]
    served = registry.requests()
    assert any(m == "PATCH" for m, _, _ in served), "the layers above one chunk went up in chunks"
    mounts = [(p, s) for m, p, s in served if m == "POST" and "mount=" in p]
    assert report.blobs_mounted >= 1 and any(s == 201 for _, s in mounts), "the shared layer was mounted"

    # skopeo, not kubexm, reads the registry: the index by digest, and each architecture's image.
    raw = skopeo(registry, tmp_path, "inspect", "--raw", f"docker://{registry.address}/team/app:v1")
    assert raw.returncode == 0, raw.stderr
    assert "sha256:" + hashlib.sha256(raw.stdout.encode()).hexdigest() == digests["example.com/team/app:v1"]
    for arch in ("amd64", "arm64"):
        res = skopeo(registry, tmp_path, "inspect", "--override-arch", arch,
                     f"docker://{registry.address}/team/app@{digests['example.com/team/app:v1']}")
        assert res.returncode == 0, res.stderr
        assert json.loads(res.stdout)["Architecture"] == arch
    pause = skopeo(registry, tmp_path, "inspect", "--raw", f"docker://{registry.address}/pause:3.10")
    assert pause.returncode == 0, pause.stderr
    busybox = skopeo(registry, tmp_path, "inspect", f"docker://{registry.address}/library/busybox:1.36")
    assert json.loads(busybox.stdout)["Digest"] == digests["docker.io/library/busybox:1.36"]

    # The same images again, from the directory this time: nothing is written, one HEAD per image.
    before = len(registry.requests())
    again = sync_bundle(bundle, registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    assert [i.status for i in again.images] == ["present"] * 4
    rerun = registry.requests()[before:]
    assert not [r for r in rerun if r[0] in ("POST", "PUT", "PATCH", "DELETE")], rerun
    assert sorted(m for m, _, _ in rerun if m == "HEAD") == ["HEAD"] * 4
    assert again.blobs_uploaded == again.manifests_pushed == again.bytes_uploaded == 0


def test_namespace_override_puts_images_under_one_project(registry: RunningRegistry, tmp_path: Path) -> None:
    build_bundle(tmp_path / "b")
    report = sync_bundle(tmp_path / "b", registry.address, namespace="kubexm", username=USER, password=PASSWORD,
                         ca_file=str(registry.ca_file))
    assert sorted(i.target for i in report.images) == sorted(
        f"{registry.address}/kubexm/{n}" for n in ("app:v1", "app:latest", "pause:3.10", "busybox:1.36"))
    client = RegistryClient(registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    assert client.manifest_digest("kubexm/busybox", "1.36") == report.images[[i.source for i in report.images]
                                                                           .index("docker.io/library/busybox:1.36")].digest


def test_wrong_password_is_one_line_naming_the_registry(registry: RunningRegistry, tmp_path: Path) -> None:
    build_bundle(tmp_path / "b")
    with pytest.raises(RegistryAuthError) as err:
        sync_bundle(tmp_path / "b", registry.address, username=USER, password="wrong", ca_file=str(registry.ca_file))
    assert registry.address in err.value.message and "401" in err.value.message and "\n" not in str(err.value)
    assert "--password-stdin" in (err.value.hint or "")
    assert not [r for r in registry.requests() if r[0] in ("POST", "PUT", "PATCH")]


def test_untrusted_certificate_names_the_fix(registry: RunningRegistry, tmp_path: Path) -> None:
    build_bundle(tmp_path / "b")
    with pytest.raises(RegistryError) as err:
        sync_bundle(tmp_path / "b", registry.address, username=USER, password=PASSWORD)
    assert "not trusted" in err.value.message and "--ca-file" in (err.value.hint or "")
    # --insecure skips verification (and still needs the password)
    report = sync_bundle(tmp_path / "b", registry.address, username=USER, password=PASSWORD, insecure=True)
    assert not report.failed


def test_missing_or_damaged_blobs_fail_their_image_only(registry: RunningRegistry, tmp_path: Path) -> None:
    bundle = tmp_path / "b"
    good = LayoutWriter(bundle / "good")
    multiarch(good, "example.com/ok/good:v1", b"fine")
    broken = LayoutWriter(bundle / "broken")
    gone = broken.layer({"a.txt": b"will be removed"})
    broken.single("example.com/x/missing:v1", broken.manifest("amd64", [gone]))
    bad = broken.layer({"b.txt": b"will be altered" * 50})
    broken.single("example.com/x/damaged:v1", broken.manifest("amd64", [bad]))
    gone_path = bundle / "broken" / "blobs" / "sha256" / str(gone[0]["digest"])[7:]
    gone_bytes = gone_path.read_bytes()
    gone_path.unlink()
    damaged = bundle / "broken" / "blobs" / "sha256" / str(bad[0]["digest"])[7:]
    damaged.write_bytes(bytes(b ^ 0xFF for b in damaged.read_bytes()))  # same size, other content

    report = sync_bundle(bundle, registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    status = {i.source: i for i in report.images}
    assert status["example.com/ok/good:v1"].status == "pushed"
    assert status["example.com/x/missing:v1"].status == "failed"
    assert str(gone[0]["digest"]) in status["example.com/x/missing:v1"].error
    assert "missing from the bundle" in status["example.com/x/missing:v1"].error
    assert status["example.com/x/damaged:v1"].status == "failed"
    assert "does not match its digest" in status["example.com/x/damaged:v1"].error
    client = RegistryClient(registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    assert client.manifest_digest("x/missing", "v1") is None and client.manifest_digest("x/damaged", "v1") is None
    assert not client.blob_exists("x/damaged", str(bad[0]["digest"]))

    # The bundle made whole again: the re-run pushes what failed and skips what arrived.
    gone_path.write_bytes(gone_bytes)
    damaged.write_bytes(bytes(b ^ 0xFF for b in damaged.read_bytes()))
    again = sync_bundle(bundle, registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    assert {i.source: i.status for i in again.images} == {
        "example.com/ok/good:v1": "present", "example.com/x/missing:v1": "pushed", "example.com/x/damaged:v1": "pushed"}


def test_registry_down_is_one_line(tmp_path: Path) -> None:
    from .conftest import free_port

    build_bundle(tmp_path / "b")
    with pytest.raises(RegistryError) as err:
        sync_bundle(tmp_path / "b", f"127.0.0.1:{free_port()}", username=USER, password=PASSWORD)
    assert "refused the connection" in err.value.message and "registry up" in (err.value.hint or "")


def test_a_full_registry_disk_names_the_registrys_message(tmp_path: Path) -> None:
    reg = start_registry(tmp_path / "small", tmpfs_size="1m")
    try:
        bundle = tmp_path / "b"
        big = LayoutWriter(bundle / "big")
        layer = big.layer({"big.bin": os.urandom(3 * 1024 * 1024)})
        big.single("example.com/big/image:v1", big.manifest("amd64", [layer]))
        report = sync_bundle(bundle, reg.address, username=USER, password=PASSWORD, ca_file=str(reg.ca_file))
        [result] = report.images
        assert result.status == "failed"
        assert reg.address in result.error and "no space left on device" in result.error
    finally:
        stop(reg)


def test_a_bundle_without_layouts_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="holds no named images"):
        find_images(tmp_path / "empty")
    (tmp_path / "x.tar.gz").write_bytes(b"\x1f\x8b" + b"\0" * 100)
    with pytest.raises(BundleError, match="not an uncompressed tar"):
        find_images(tmp_path / "x.tar.gz")


def test_a_bundle_written_by_offline_package_is_pushed_from_its_nested_archives(registry: RunningRegistry,
                                                                                 tmp_path: Path) -> None:
    """The bundle format of kubexm.offline.bundle: a tar whose images are OCI archives (tars) inside it."""
    from kubexm.offline import bundle as bundle_format
    from kubexm.offline import oci

    sources = tmp_path / "sources"
    digests = {"example.com/team/app:v1": multiarch(LayoutWriter(sources / "app"), "example.com/team/app:v1", b"s"),
               "quay.io/x/tool:v2": multiarch(LayoutWriter(sources / "tool"), "quay.io/x/tool:v2", b"s")}
    items, files = [], {}
    for ref, source in oci.scan(sources).items():
        out = tmp_path / "archives" / f"{ref.replace('/', '_').replace(':', '_')}.tar"
        digest, platforms = oci.export(source, ref, out)
        name = f"images/{out.name}"
        files[name] = out
        items.append(bundle_format.Item("image", ref.rsplit(":", 1)[1], "all", name,
                                        hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_size, "test",
                                        ref, platforms=tuple(platforms), digest=digest))
    path = tmp_path / "bundle.tar"
    bundle_format.write(path, bundle_format.Manifest(items), lambda item: files[item.file])

    report = sync_bundle(path, registry.address, username=USER, password=PASSWORD, ca_file=str(registry.ca_file))
    assert {i.source: (i.status, i.digest) for i in report.images} == {
        ref: ("pushed", digest) for ref, digest in digests.items()}
    tool = skopeo(registry, tmp_path, "inspect", "--override-arch", "arm64", f"docker://{registry.address}/x/tool:v2")
    assert tool.returncode == 0 and json.loads(tool.stdout)["Architecture"] == "arm64", tool.stderr

"""Image sources become OCI archives whose blobs were each checked against their digest."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from offline.ocimake import docker_archive, oci_archive, oci_dir

from kubexm.assets.images import archive_refs
from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file
from kubexm.offline import oci


def _blobs_ok(archive: Path) -> int:
    import hashlib

    n = 0
    with tarfile.open(archive) as tar:
        for m in tar.getmembers():
            if m.name.startswith("blobs/sha256/"):
                fh = tar.extractfile(m)
                assert fh is not None
                assert hashlib.sha256(fh.read()).hexdigest() == m.name.rsplit("/", 1)[1]
                n += 1
    return n


def test_every_source_kind_exports_a_named_verified_archive(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    oci_dir(src, "docker.io/library/busybox:1.36", ("amd64", "arm64"))
    oci_archive(src, "registry.k8s.io/pause:3.10")
    docker_archive(src, "quay.io/x/y:v1")
    found = oci.scan(src)
    assert set(found) == {"docker.io/library/busybox:1.36", "registry.k8s.io/pause:3.10", "quay.io/x/y:v1"}
    for ref, platforms, blobs in (("docker.io/library/busybox:1.36", ["amd64", "arm64"], 7),
                                  ("registry.k8s.io/pause:3.10", ["amd64"], 3), ("quay.io/x/y:v1", ["amd64"], 3)):
        out = tmp_path / (ref.replace("/", "_") + ".tar")
        digest, got = oci.export(found[ref], ref, out)
        assert got == platforms
        assert archive_refs(out) == [ref]
        assert _blobs_ok(out) == blobs
        with tarfile.open(out) as tar:
            fh = tar.extractfile("index.json")
            assert fh is not None
            assert json.load(fh)["manifests"][0]["digest"] == digest


def test_a_corrupt_blob_is_refused(tmp_path: Path) -> None:
    layout = oci_dir(tmp_path, "docker.io/library/busybox:1.36")
    victim = max((layout / "blobs" / "sha256").iterdir(), key=lambda p: p.stat().st_size)
    victim.write_bytes(victim.read_bytes()[:-1] + b"X")
    before = sha256_file(victim)
    with pytest.raises(KubexmError, match="does not match its digest"):
        oci.export(oci.Source(layout, "oci"), "docker.io/library/busybox:1.36", tmp_path / "o.tar")
    assert sha256_file(victim) == before

"""Assets: catalog lookups, verified downloads over loopback HTTP, mirrors, cache repair, local sources."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.assets import AssetStore, LocalSource, catalog, from_catalog, sha256_of
from kubexm.errors import KubexmError

PAYLOAD = b"pretend etcd release archive\n" * 1000
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, list[str]]]:
    """A loopback HTTP server answering every path with PAYLOAD; records the paths asked for."""
    asked: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = b"tampered" if "bad" in self.path else PAYLOAD
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            return None

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", asked
    finally:
        httpd.shutdown()


def test_catalog_entries_are_complete() -> None:
    for name, entry in catalog().items():
        assert {"url", "file", "versions"} <= set(entry), name
        for version, arches in entry["versions"].items():
            for arch, sha in arches.items():
                assert arch in ("amd64", "arm64") and len(sha) == 64 and int(sha, 16) >= 0, (name, version)
    asset = from_catalog("kubelet", "v1.30.4", "amd64")
    assert asset.url == "https://dl.k8s.io/release/v1.30.4/bin/linux/amd64/kubelet"


def test_unknown_checksum_is_refused_with_the_fix() -> None:
    with pytest.raises(KubexmError) as err:
        from_catalog("etcd", "v3.5.99", "amd64")
    assert "does not download what it cannot verify" in err.value.message
    assert "spec.assets.checksums.etcd.v3.5.99.amd64" in (err.value.hint or "")
    asset = from_catalog("etcd", "v3.5.99", "amd64", extra={"etcd": {"v3.5.99": {"amd64": "ab" * 32}}})
    assert asset.sha256 == "ab" * 32


def test_download_through_a_mirror_is_verified_and_cached(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, asked = server
    store = AssetStore(mirror=base + "/mirror", checksums={"etcd": {"v9.9.9": {"amd64": SHA}}}, cache=tmp_path / "c")
    _, path = store.get("etcd", "v9.9.9", "amd64")
    assert path.read_bytes() == PAYLOAD
    assert asked == ["/mirror/github.com/etcd-io/etcd/releases/download/v9.9.9/etcd-v9.9.9-linux-amd64.tar.gz"]
    store.get("etcd", "v9.9.9", "amd64")
    assert len(asked) == 1  # served from the cache, re-verified
    path.write_bytes(b"corrupted")
    _, again = store.get("etcd", "v9.9.9", "amd64")
    assert again.read_bytes() == PAYLOAD and len(asked) == 2  # a bad cache entry is fetched again


def test_checksum_mismatch_on_download_leaves_nothing(server: tuple[str, list[str]], tmp_path: Path) -> None:
    base, _ = server
    store = AssetStore(mirror=base + "/bad", checksums={"etcd": {"v9.9.9": {"amd64": SHA}}}, cache=tmp_path / "c")
    with pytest.raises(KubexmError, match="checksum mismatch"):
        store.get("etcd", "v9.9.9", "amd64")
    assert not [p for p in (tmp_path / "c").rglob("*") if p.is_file()]


def test_unreachable_mirror_is_one_clear_error(tmp_path: Path) -> None:
    store = AssetStore(mirror="http://127.0.0.1:1", checksums={"etcd": {"v9.9.9": {"amd64": SHA}}}, cache=tmp_path)
    with pytest.raises(KubexmError) as err:
        store.get("etcd", "v9.9.9", "amd64")
    assert "cannot download etcd v9.9.9" in err.value.message and "localSource" in (err.value.hint or "")


def test_local_source_replaces_downloads_and_is_verified(tmp_path: Path) -> None:
    archive = tmp_path / "etcd-v3.4.23-linux-amd64.tar.gz"
    archive.write_bytes(PAYLOAD)
    source = LocalSource(tmp_path / "src")
    source.add("etcd", "v3.4.23", "amd64", archive)
    store = AssetStore(local=tmp_path / "src")
    asset, path = store.get("etcd", "v3.4.23", "amd64")
    assert asset.sha256 == SHA and sha256_of(path) == SHA
    with pytest.raises(KubexmError, match="not in the local asset source"):
        store.get("etcd", "v3.5.0", "amd64")
    path.write_bytes(b"swapped")
    with pytest.raises(KubexmError, match="checksum mismatch"):
        store.get("etcd", "v3.4.23", "amd64")
    with pytest.raises(KubexmError, match=r"has no manifest\.yaml"):
        AssetStore(local=tmp_path / "empty").get("etcd", "v3.4.23", "amd64")

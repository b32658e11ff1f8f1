"""A real CNCF distribution registry (Debian's docker-registry) on loopback: TLS from kubexm's PKI, htpasswd
users, the config kubexm renders for registry hosts (paths moved into a temporary directory)."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubexm.pki.store import PKI
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.registry import REGISTRY_CA, cert_specs, config_text, htpasswd_text, registry_users

BINARY = "/usr/bin/docker-registry"
USER = "pusher"
PASSWORD = 'pa ss"wo\\rd$(x)'  # quotes, a backslash and shell syntax: must never matter


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_for(port: int) -> Cluster:
    return parse_cluster(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: reg}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
    - {{name: reg1, address: 127.0.0.1}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], registry: [reg1]}}
  registry:
    type: docker-registry
    port: {port}
    auths:
      - registry: "127.0.0.1:{port}"
        username: {USER}
        password: '{PASSWORD.replace("'", "''")}'
""")


@dataclass
class RunningRegistry:
    address: str  # 127.0.0.1:PORT
    ca_file: Path
    log: Path
    data: Path
    process: subprocess.Popen[bytes]

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request the registry served, from its own access log."""
        out = []
        for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})', self.log.read_text(errors="replace")):
            out.append((m.group(1), m.group(2), int(m.group(3))))
        return out


def start_registry(base: Path, *, tmpfs_size: str | None = None) -> RunningRegistry:
    if not Path(BINARY).exists():
        pytest.skip("docker-registry is not installed (apt-get install docker-registry)")
    base.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cluster = cluster_for(port)
    pki = PKI(base / "pki")
    pki.ensure(cert_specs(cluster))
    leaf = cert_specs(cluster)[1].path
    (base / "htpasswd").write_bytes(htpasswd_text(registry_users(cluster)))
    data = base / "data"
    data.mkdir()
    (base / "config.yml").write_bytes(config_text(
        cluster, cert=str(pki.crt(leaf)), key=str(pki.key(leaf)), htpasswd=str(base / "htpasswd"), root=str(data),
        listen=f"127.0.0.1:{port}"))
    log = base / "registry.log"
    argv = [BINARY, "serve", str(base / "config.yml")]
    if tmpfs_size:
        if not shutil.which("unshare"):
            pytest.skip("unshare is needed to give the registry a small disk of its own")
        # A private mount namespace: the small tmpfs exists only for this registry process.
        argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" serve "$4"', "sh", tmpfs_size, str(data),
                BINARY, str(base / "config.yml")]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            text = log.read_text()[-2000:]
            if tmpfs_size:  # no mount namespace here (an unprivileged container): the disk-full case cannot run
                pytest.skip(f"the registry could not get a small disk of its own: {text}")
            raise AssertionError(f"docker-registry exited: {text}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            break
        time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError("docker-registry did not listen within 20s")
    return RunningRegistry(f"127.0.0.1:{port}", pki.crt(REGISTRY_CA.path), log, data, proc)


def stop(reg: RunningRegistry) -> None:
    reg.process.terminate()
    try:
        reg.process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        reg.process.kill()
        reg.process.wait()


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[RunningRegistry]:
    reg = start_registry(tmp_path / "registry")
    yield reg
    stop(reg)

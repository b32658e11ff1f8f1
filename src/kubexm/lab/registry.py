"""A real CNCF distribution registry (Debian's ``docker-registry``) on loopback, configured exactly as kubexm
configures it on registry hosts: TLS from a throwaway CA made by kubexm's PKI, htpasswd users, the config
kubexm renders (paths moved into one directory). For the tests, the benchmark and trying ``offline sync``
without nodes; one implementation, so what they exercise is what users get.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Any

from kubexm.errors import KubexmError
from kubexm.spec.models import Cluster

BINARY = "/usr/bin/docker-registry"
LISTEN_TIMEOUT = 30.0


class RegistryUnavailable(KubexmError):
    """The local registry cannot run here (binary missing, no private mount namespace for a small disk)."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cluster_for(port: int, username: str, password: str, name: str = "reg") -> Cluster:
    """A cluster whose registry host is this machine, with one user; built as data (JSON is YAML), so any
    password (quotes, backslashes, shell syntax) arrives as it is."""
    from kubexm.spec.loader import parse_cluster

    doc = {"apiVersion": "kubexm.io/v1alpha1", "kind": "Cluster", "metadata": {"name": name},
           "spec": {"hosts": [{"name": "cp1", "address": "10.0.0.1"}, {"name": "reg1", "address": "127.0.0.1"}],
                    "roleGroups": {"etcd": ["cp1"], "control-plane": ["cp1"], "registry": ["reg1"]},
                    "registry": {"type": "docker-registry", "port": port,
                                 "auths": [{"registry": f"127.0.0.1:{port}", "username": username,
                                            "password": password}]}}}
    return parse_cluster(json.dumps(doc))


class LocalRegistry:
    """docker-registry on 127.0.0.1:``port`` with its files under ``base`` and its storage in ``data``
    (``base/data`` by default). ``start()`` waits until it listens; ``wipe()`` empties it."""

    def __init__(self, base: Path, username: str, password: str, *, data: Path | None = None,
                 name: str = "reg") -> None:
        from kubexm.pki.store import PKI
        from kubexm.steps.registry import REGISTRY_CA, cert_specs, config_text, htpasswd_text, registry_users

        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.base, self.data = base, data or base / "data"
        base.mkdir(parents=True, exist_ok=True)
        self.cluster = cluster_for(self.port, username, password, name)
        self.pki = pki = PKI(base / "pki")
        pki.ensure(cert_specs(self.cluster))
        leaf = cert_specs(self.cluster)[1].path
        (base / "htpasswd").write_bytes(htpasswd_text(registry_users(self.cluster)))
        self.config = base / "config.yml"
        self.config.write_bytes(config_text(self.cluster, cert=str(pki.crt(leaf)), key=str(pki.key(leaf)),
                                            htpasswd=str(base / "htpasswd"), root=str(self.data), listen=self.address))
        self.ca_file = pki.crt(REGISTRY_CA.path)
        self.log = base / "registry.log"
        self.process: subprocess.Popen[bytes] | None = None

    def use_auth(self, auth: dict[str, Any]) -> None:
        """Replace the config's ``auth`` section (a token realm instead of htpasswd, say) before ``start()``."""
        from ruamel.yaml import YAML

        config = YAML(typ="safe").load(self.config.read_text())
        config["auth"] = auth
        self.config.write_text(json.dumps(config))  # JSON is YAML

    def start(self, *, tmpfs_size: str | None = None) -> None:
        """Start and wait until it listens. ``tmpfs_size``: storage on a tmpfs of that size in a private mount
        namespace (a small disk of its own, to fill)."""
        if not Path(BINARY).exists():
            raise RegistryUnavailable("docker-registry is not installed", hint="apt-get install docker-registry")
        self.data.mkdir(parents=True, exist_ok=True)
        argv = [BINARY, "serve", str(self.config)]
        if tmpfs_size:
            if not shutil.which("unshare"):
                raise RegistryUnavailable("unshare is needed to give the registry a small disk of its own")
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    'mount -t tmpfs -o size="$1" tmpfs "$2" && exec "$3" serve "$4"', "sh", tmpfs_size,
                    str(self.data), BINARY, str(self.config)]
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + LISTEN_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                text = self.log.read_text(errors="replace")[-2000:]
                if tmpfs_size:  # no private mount namespace here (an unprivileged container)
                    raise RegistryUnavailable(f"the registry could not get a small disk of its own: {text}")
                raise KubexmError(f"docker-registry exited: {text}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return
            time.sleep(0.05)
        self.stop()
        raise KubexmError(f"docker-registry did not listen within {LISTEN_TIMEOUT:.0f} s", hint=f"see {self.log}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def wipe(self) -> None:
        """Empty again: stopped, storage deleted, started."""
        self.stop()
        shutil.rmtree(self.data, ignore_errors=True)
        self.start()

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request the registry served, from its own access log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [(m.group(1), m.group(2), int(m.group(3)))
                for m in re.finditer(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3})', text)]

"""Hosts that are down, among hosts that are up: each dead host is dialled once per run, all of them at once,
and named; the live hosts still run. Silent hosts (they accept TCP and never speak SSH) and refused ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import SSHD

pytestmark = pytest.mark.integration
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
SILENT = [f"127.0.0.{i}" for i in range(31, 35)]
REFUSED = [f"127.0.0.{i}" for i in range(41, 45)]


class SilentHosts:
    """Listeners that accept connections and never answer: a host whose sshd hangs, or a black hole behind a
    NAT. Each accepted connection is counted per address."""

    def __init__(self) -> None:
        self.accepted: Counter[str] = Counter()
        self.socks: list[socket.socket] = []
        self.held: list[socket.socket] = []
        self.port = 0
        for addr in SILENT:
            s = socket.socket()
            s.bind((addr, self.port))
            self.port = s.getsockname()[1]
            s.listen(64)
            self.socks.append(s)
            threading.Thread(target=self._accept, args=(s, addr), daemon=True).start()

    def _accept(self, s: socket.socket, addr: str) -> None:
        while True:
            try:
                conn, _ = s.accept()
            except OSError:
                return
            self.accepted[addr] += 1
            self.held.append(conn)

    def close(self) -> None:
        for s in self.socks + self.held:
            s.close()


@pytest.fixture
def silent() -> Iterator[SilentHosts]:
    hosts = SilentHosts()
    try:
        yield hosts
    finally:
        hosts.close()


def cluster_file(sshd: SSHD, silent: SilentHosts, path: Path) -> Path:
    live = "".join(sshd.host_yaml(n, address=a, privateKeyPath=sshd.key, sudoPassword=sshd.password)
                   for n, a in (("alpha", "127.0.0.1"), ("beta", "127.0.0.2")))
    dead = "".join(f"    - name: {name}\n      address: {addr}\n      port: {silent.port}\n      user: root\n"
                   for name, addr in [*((f"silent{i}", a) for i, a in enumerate(SILENT)),
                                      *((f"refused{i}", a) for i, a in enumerate(REFUSED))])
    path.write_text("apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: dead\nspec:\n  hosts:\n"
                    f"{live}{dead}  roleGroups:\n    etcd: [alpha]\n    control-plane: [alpha]\n    worker: [beta]\n")
    return path


@pytest.mark.parametrize("persist", ["0", "30"], ids=["direct", "keeper"])
def test_dead_hosts_are_waited_for_once_and_named(sshd: SSHD, silent: SilentHosts, tmp_path: Path,
                                                  persist: str) -> None:
    cluster = cluster_file(sshd, silent, tmp_path / "c.yaml")
    env = {**os.environ, "KUBEXM_PERSIST": persist, "KUBEXM_CONNECT_TIMEOUT": "2", "KUBEXM_HOME": str(tmp_path / "h")}
    # Two task slots for ten hosts: before, each dead host held a slot for four dials in turn.
    res = subprocess.run([KUBEXM, "run", "command", "-f", str(cluster), "--parallel", "2", "--log-format", "json",
                          "--", "true"], capture_output=True, text=True, timeout=120, env=env)
    assert res.returncode != 0, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    events = [json.loads(line) for line in res.stdout.splitlines() if line.startswith("{")]
    failed = {e["host"] for e in events if e.get("kind") == "step.end" and e.get("status") == "failed"}
    succeeded = {e["host"] for e in events if e.get("kind") == "step.end" and e.get("status") in ("ok", "changed")}
    assert failed == {f"silent{i}" for i in range(4)} | {f"refused{i}" for i in range(4)}
    assert {"alpha", "beta"} <= succeeded
    assert not [e for e in events if e.get("kind") == "host.retry"]
    reasons = {e["host"]: e.get("message", "") for e in events if e.get("kind") == "step.end" and e["host"] in failed}
    assert all("timed out" in reasons[f"silent{i}"] for i in range(4)), reasons
    assert all("refused" in reasons[f"refused{i}"] for i in range(4)), reasons
    # Once per run per dead host: not once per retry, not once per slot.
    assert dict(silent.accepted) == {a: 1 for a in SILENT}

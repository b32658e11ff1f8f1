"""Secrets from the cluster file never land anywhere readable: not in any file under $KUBEXM_HOME (state
database, audit log, caches, keeper files: every byte, binary included), not in the JSON event log, not in
any process's argv while the run goes on.

The spec has no field for a bootstrap token (kubexm makes and uploads its own, mode 0600): the secrets
given are the sudo password and a registry password.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from kubexm.hosts import keeper

from .conftest import SSHD

pytestmark = pytest.mark.integration
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
REGISTRY_PASSWORD = "kx-Registry-pw-6502"


def _cluster_file(sshd: SSHD, path: Path) -> Path:
    host = sshd.host_yaml("n1", privateKeyPath=sshd.key, sudoPassword=sshd.password)
    path.write_text(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: leak\nspec:\n  hosts:\n" + host
        + "  roleGroups:\n    etcd: [n1]\n    control-plane: [n1]\n    worker: [n1]\n"
        + "  registry:\n    auths:\n      - registry: registry.invalid:5000\n        username: deployer\n"
        + f"        password: {REGISTRY_PASSWORD}\n")
    return path


class PsWatch:
    """`ps -eo args` over and over while a command runs: every process's argv, whoever started it."""

    def __init__(self) -> None:
        self.captures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            res = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=False)
            self.captures.append(res.stdout)
            self._stop.wait(0.05)

    def __enter__(self) -> PsWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)


def _kubexm(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    env = dict(os.environ, KUBEXM_HOME=str(home), KUBEXM_PERSIST="20")
    with PsWatch() as ps:
        res = subprocess.run([KUBEXM, *args], capture_output=True, text=True, timeout=300, env=env)
    return res, ps.captures


def _keeper_pids(home: Path) -> list[int]:
    sock = home / "run" / f"keeper-v{keeper.PROTOCOL}.sock"
    out = subprocess.run(["pgrep", "-f", f"kubexm.hosts.keeper {sock}"], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def test_secrets_never_reach_files_logs_or_argv(sshd: SSHD, tmp_path: Path, kubexm_home: Path) -> None:
    secrets = {"sudo password": sshd.password, "registry password": REGISTRY_PASSWORD}
    cluster = _cluster_file(sshd, tmp_path / "cluster.yaml")
    try:
        ran, ps_run = _kubexm(kubexm_home, "run", "command", "-f", str(cluster), "--log-format", "json",
                              "--", "id", "-u")
        assert ran.returncode == 0, ran.stdout + ran.stderr
        assert '"0' in ran.stdout or "0\\n" in ran.stdout, ran.stdout  # ran through sudo, with the password
        planned, ps_plan = _kubexm(kubexm_home, "create", "cluster", "-f", str(cluster), "--dry-run", "--yes",
                                   "--tags", "preflight,containerd", "--skip-preflight", "--log-format", "json")
        assert planned.returncode == 0, planned.stdout[-2000:] + planned.stderr
        events = [json.loads(line) for line in planned.stdout.splitlines()]
        # The step that renders the registry auths into containerd's config was planned (its content compared).
        assert any(e.get("step") == "ContainerdConfig" and e["kind"] == "step.end" for e in events)
        assert len(ps_run) > 1 and len(ps_plan) > 1  # argv was watched while both ran
    finally:
        keepers = _keeper_pids(kubexm_home)
        for pid in keepers:
            os.kill(pid, 15)

    # The run and the audit entries were written, so the search below looks at a real history.
    assert (kubexm_home / "state.db").stat().st_size > 0 and (kubexm_home / "audit.head").exists()
    # History and audit files after real runs: the owner's alone (the state layer's files; see tests/state).
    private = [kubexm_home / n for n in ("state.db", "audit.key", "audit.head", "audit.lock", "locks/leak.lock")]
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in private} == {p.name: "0o600" for p in private}
    assert oct(kubexm_home.stat().st_mode & 0o777) == oct((kubexm_home / "locks").stat().st_mode & 0o777) == "0o700"
    hits: list[str] = []
    for label, value in secrets.items():
        needle = value.encode()
        for path in sorted(kubexm_home.rglob("*")):
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes():
                hits.append(f"{label} in {path.relative_to(kubexm_home)}")
        for name, res in (("run command", ran), ("create cluster --dry-run", planned)):
            if value in res.stdout or value in res.stderr:
                hits.append(f"{label} in the output (JSON event log) of {name}")
        for name, captures in (("run command", ps_run), ("create cluster --dry-run", ps_plan)):
            if any(value in capture for capture in captures):
                hits.append(f"{label} in `ps -eo args` during {name}")
    assert hits == []

"""The lab tier: one 3-node lab per test session, brought down at the end even when tests fail."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubexm.lab.lab import Lab, LabState

SUBNET = "10.213.77.0/24"  # away from the default lab's subnet, so a developer's own lab can stay up
NAME = "kxtest"
KUBEXM = str(Path(sys.executable).with_name("kubexm"))


@dataclass
class RunningLab:
    lab: Lab
    state: LabState

    @property
    def cluster_file(self) -> Path:
        return self.lab.cluster_file

    @property
    def nodes(self) -> list[str]:
        return [n.name for n in self.state.nodes]

    def address(self, node: str) -> str:
        return self.lab.node(self.state, node).address

    def ssh(self, node: str, command: str) -> str:
        res = subprocess.run(self.lab.ssh_argv(self.lab.node(self.state, node), command), capture_output=True,
                             text=True, timeout=60, check=True)
        return res.stdout

    def refresh(self) -> None:
        state = self.lab.load()
        assert state is not None
        self.state = state


def ssh(lab: Lab, node: str, command: str, check: bool = True, timeout: float = 120) -> str:
    """stdout of ``command`` run as root on ``node`` of ``lab`` (a lab of a test module's own, or the session's)."""
    state = lab.load()
    assert state is not None
    return subprocess.run(lab.ssh_argv(lab.node(state, node), command), capture_output=True, text=True,
                          timeout=timeout, check=check).stdout


def kubexm(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, timeout=timeout, env=os.environ.copy())


@pytest.fixture(scope="session")
def lab_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("the lab tier needs root")
    missing = [t for t in ("systemd-nspawn", "debootstrap") if shutil.which(t) is None]
    assert not missing, f"{missing} missing: `make test` installs systemd-container and debootstrap"
    home = tmp_path_factory.mktemp("labhome")
    saved = {k: os.environ.get(k) for k in ("KUBEXM_LAB_HOME", "KUBEXM_LAB_CACHE", "KUBEXM_HOME")}
    os.environ["KUBEXM_LAB_HOME"] = str(home)
    # Session-wide, so that module- and session-scoped fixtures see the same PKI and state as the tests.
    os.environ["KUBEXM_HOME"] = str(home / "kubexm-home")
    # The Debian base is built once per machine and reused by every later test session.
    os.environ.setdefault("KUBEXM_LAB_CACHE", "/var/cache/kubexm/lab-base")
    try:
        yield home
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def running_lab(lab_env: Path) -> Iterator[RunningLab]:
    lab = Lab(NAME)
    try:
        state, _ = lab.up(3, SUBNET)
        yield RunningLab(lab, state)
    finally:
        lab.down()


@pytest.fixture
def lab(running_lab: RunningLab) -> RunningLab:
    """The session lab with every node running and connected (tests that break nodes put them back)."""
    running_lab.refresh()
    for node in running_lab.state.nodes:
        if node.partitioned:
            running_lab.lab.partition(node.name, cut=False)
        if not node.running:
            running_lab.lab.start(node.name)
    running_lab.refresh()
    return running_lab


@pytest.fixture(autouse=True)
def kubexm_home(lab_env: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Lab tests share one $KUBEXM_HOME for the session: the cluster's PKI and state outlive a single test,
    as they do for a user."""
    home = lab_env / "kubexm-home"
    monkeypatch.setenv("KUBEXM_HOME", str(home))
    return home

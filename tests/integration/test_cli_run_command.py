"""`kubexm run command` as a user runs it: the installed console script against a real sshd."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import SSHD

pytestmark = pytest.mark.integration
KUBEXM = str(Path(sys.executable).with_name("kubexm"))


def write_cluster(sshd: SSHD, path: Path) -> Path:
    # Two hosts on one sshd: 127.0.0.2 is loopback too, and kubexm refuses two hosts on one address.
    hosts = "".join(sshd.host_yaml(n, address=a, privateKeyPath=sshd.key, sudoPassword=sshd.password)
                    for n, a in (("alpha", "127.0.0.1"), ("beta", "127.0.0.2")))
    path.write_text(f"apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: it\nspec:\n  hosts:\n{hosts}"
                    "  roleGroups:\n    etcd: [alpha]\n    control-plane: [alpha]\n    worker: [alpha, beta]\n")
    return path


def kubexm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, timeout=120, env=os.environ.copy())


def test_run_command_everywhere(sshd: SSHD, tmp_path: Path) -> None:
    cluster = write_cluster(sshd, tmp_path / "c.yaml")
    res = kubexm("run", "command", "-f", str(cluster), "--nodes", "*", "--", "uname", "-r")
    assert res.returncode == 0, res.stdout + res.stderr
    kernel = os.uname().release
    assert res.stdout.count(kernel) == 2
    assert "== alpha (exit 0)" in res.stdout and "== beta (exit 0)" in res.stdout
    assert sshd.password not in res.stdout + res.stderr

    res = kubexm("run", "command", "-f", str(cluster), "--nodes", "*", "--", "id -u; test $(hostname) = nope")
    assert res.returncode == 1
    assert "== alpha (exit 1)" in res.stdout and "0\n" in res.stdout  # ran as root through sudo


def test_unreachable_and_bad_key_are_one_line_errors(sshd: SSHD, tmp_path: Path) -> None:
    cluster = write_cluster(sshd, tmp_path / "c.yaml")
    text = cluster.read_text().replace(str(sshd.key), str(tmp_path / "missing-key"), 1)
    cluster.write_text(text)
    res = kubexm("run", "command", "-f", str(cluster), "--", "true")
    assert res.returncode == 1
    assert "Traceback" not in res.stdout + res.stderr
    assert "private key" in res.stdout and "does not exist" in res.stdout
    assert "== beta (exit 0)" in res.stdout  # the other host still ran

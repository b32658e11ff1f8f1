"""`kubexm logs collect` over a real sshd, as a non-root user who needs a password for sudo: the bundle holds
what only root can read on the node, and no secret of the cluster file or the node reaches it, the output, or
any process's argv. The node is this machine; the test gives it a kube-system pod log to find."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import SSHD
from .test_secrets_never_leak import PsWatch

pytestmark = pytest.mark.integration
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
REGISTRY_PASSWORD = "kx-Logs-Registry-pw-7301"
TOKEN = "kxlogs.0123456789abcdef"


@pytest.fixture
def pod_log() -> tuple[Path, str]:
    """A root-only kube-system container log with secrets in it, as a careless component would write."""
    pod = Path(f"/var/log/pods/kube-system_kxlogs-{os.getpid()}_0/etcd")
    created_root = not Path("/var/log/pods").exists()
    pod.mkdir(parents=True)
    log = pod / "0.log"
    key = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIKxlogsprivatekeymaterialAAAAAAAAAAAAAAAAAAAoAoGCCqGSM49\n-----END EC PRIVATE KEY-----\n"
    yield log, key
    shutil.rmtree(pod.parent)
    if created_root:
        shutil.rmtree("/var/log/pods", ignore_errors=True)


def test_collect_over_ssh_with_sudo_password_leaks_nothing(sshd: SSHD, tmp_path: Path, kubexm_home: Path,
                                                          pod_log: tuple[Path, str]) -> None:
    log, key = pod_log
    log.write_text(f"2026-12-03T02:00:00Z stdout F etcd ready to serve\n"
                   f"2026-12-03T02:00:01Z stdout F joined with --token={TOKEN}\n"
                   f"2026-12-03T02:00:02Z stdout F login used {sshd.password}\n{key}"
                   "2026-12-03T02:00:03Z stdout F last line\n")
    log.chmod(0o600)
    before = log.stat().st_mtime_ns
    host = sshd.host_yaml("n1", privateKeyPath=sshd.key, sudoPassword=sshd.password)
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: kxlogs-it\nspec:\n  hosts:\n" + host
        + "  roleGroups:\n    etcd: [n1]\n    control-plane: [n1]\n    worker: [n1]\n"
        + "  registry:\n    auths:\n      - registry: registry.invalid:5000\n        username: deployer\n"
        + f"        password: {REGISTRY_PASSWORD}\n")
    out = tmp_path / "bundle.tar.gz"
    env = dict(os.environ, KUBEXM_HOME=str(kubexm_home), KUBEXM_PERSIST="0")
    with PsWatch() as ps:
        res = subprocess.run([KUBEXM, "logs", "collect", "-f", str(cluster), "-o", str(out), "--since", "1h"],
                             capture_output=True, text=True, timeout=300, env=env)
    assert res.returncode == 0, res.stdout + res.stderr
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["nodes"]["n1"]["reachable"] and manifest["nodes"]["n1"]["error"] is None
    collected = (root / "n1" / "pods" / log.parent.parent.name / "etcd" / "0.log").read_text()
    # Read as root through sudo (the file is root's alone), whole, with the secrets taken out.
    assert "etcd ready to serve" in collected and "last line" in collected and "<redacted>" in collected
    assert os.uname().release in (root / "n1" / "versions.txt").read_text()
    secrets = {"sudo password": sshd.password, "registry password": REGISTRY_PASSWORD, "bootstrap token": TOKEN,
               "private key in the log": key.splitlines()[1],
               "the SSH key kubexm logged in with": sshd.key.read_text().splitlines()[1]}
    hits = [f"{label} in {p.relative_to(unpacked)}" for label, value in secrets.items()
            for p in unpacked.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    hits += [f"{label} in the output" for label, value in secrets.items() if value in res.stdout + res.stderr]
    hits += [f"{label} in ps" for label, value in secrets.items() if any(value in c for c in ps.captures)]
    assert hits == []
    assert len(ps.captures) > 1
    assert log.stat().st_mtime_ns == before  # read, not touched

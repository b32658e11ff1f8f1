"""`kubexm logs` on real systemd nodes running etcd and containerd: the bundle holds each node's journals, and
no secret (the lab's SSH key, the sudo and registry passwords of the cluster file, a bootstrap token on a node)
is anywhere in it; `logs etcd --follow` prefixes each node's lines and Ctrl-C leaves no journalctl behind."""

from __future__ import annotations

import json
import signal
import subprocess
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.lab.lab import Lab

from .conftest import KUBEXM, kubexm, ssh

pytestmark = pytest.mark.lab
SUDO_PASSWORD = "kx-Lab-sudo-pw-4417"
REGISTRY_PASSWORD = "kx-Lab-registry-pw-9052"
TOKEN = "kxlab1.0123456789abcdef"


@pytest.fixture(scope="module")
def logs_lab(lab_env: Path) -> Iterator[Lab]:
    """Its own lab, with etcd and containerd installed from a cluster file that holds a sudo password and a
    registry password (containerd's config on the nodes then holds the registry password too)."""
    lab = Lab("kxlogs")
    try:
        lab.up(3, "10.213.89.0/24")
        text = lab.cluster_file.read_text()
        assert text.count("      user: root\n") == 3, text
        text = text.replace("      user: root\n", f"      user: root\n      sudoPassword: {SUDO_PASSWORD}\n")
        text += ("  registry:\n    auths:\n      - registry: registry.invalid:5000\n        username: deployer\n"
                 f"        password: {REGISTRY_PASSWORD}\n")
        lab.cluster_file.write_text(text)
        res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "etcd,runtime", timeout=1200)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        for node in ("node1", "node2", "node3"):
            # Secrets a node may hold where kubexm collects: a kubeadm join file with a bootstrap token, a note
            # with the sudo password, a copy of the lab's private key under a name that is not *.key, and a
            # journal entry of etcd's unit carrying the token and the password.
            ssh(lab, node, f"printf 'discovery:\\n  bootstrapToken:\\n    token: {TOKEN}\\n' "
                           "> /etc/kubernetes/kubeadm-join.yaml")
            ssh(lab, node, f"mkdir -p /etc/kubexm && echo 'operator note: sudo is {SUDO_PASSWORD}' "
                           "> /etc/kubexm/kxlogs-note.txt")
            ssh(lab, node, f"cat > /etc/kubernetes/stray-identity <<'EOF'\n{lab.key.read_text()}EOF")
            ssh(lab, node, f"printf 'MESSAGE=kxlogs planted join --token={TOKEN} pw {SUDO_PASSWORD}\\n"
                           "OBJECT_SYSTEMD_UNIT=etcd.service\\n' | logger --journald")
        yield lab
    finally:
        lab.down()


def test_bundle_holds_every_nodes_journals_and_no_secret(logs_lab: Lab, tmp_path: Path) -> None:
    out = tmp_path / "bundle.tar.gz"
    res = kubexm("logs", "collect", "-f", str(logs_lab.cluster_file), "-o", str(out), "--since", "2h", timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    unpacked = tmp_path / "unpacked"
    with tarfile.open(out) as tar:
        tar.extractall(unpacked, filter="data")
    (root,) = unpacked.iterdir()
    manifest = json.loads((root / "manifest.json").read_text())
    for node in ("node1", "node2", "node3"):
        assert manifest["nodes"][node]["reachable"], manifest["nodes"][node]
        etcd = (root / node / "journal" / "etcd.service.log").read_text()
        containerd = (root / node / "journal" / "containerd.service.log").read_text()
        assert f" {node} " in etcd and "etcd" in etcd, etcd[:2000]
        assert "containerd" in containerd, containerd[:2000]
        assert "kxlogs planted join --token=<redacted>" in etcd
        assert "token: <redacted>" in (root / node / "files/etc/kubernetes/kubeadm-join.yaml").read_text()
        assert (root / node / "files/etc/containerd/config.toml").is_file()
        assert "PRIVATE KEY-----\n<redacted>" in (root / node / "files/etc/kubernetes/stray-identity").read_text()
        assert not list((root / node).rglob("*.key"))
        skipped = [i for i in manifest["nodes"][node]["items"] if i["item"].endswith(".key")]
        assert skipped and all(i["path"] is None and "never copied" in i["note"] for i in skipped)
    needles = {"sudo password": SUDO_PASSWORD, "registry password": REGISTRY_PASSWORD, "bootstrap token": TOKEN}
    needles |= {f"SSH key line {i}": line for i, line in enumerate(logs_lab.key.read_text().splitlines()[1:-1])}
    hits = [f"{label} in {p.relative_to(unpacked)}" for label, value in needles.items()
            for p in unpacked.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]
    assert hits == []


def test_follow_prefixes_each_node_and_ctrl_c_stops_journalctl(logs_lab: Lab) -> None:
    proc = subprocess.Popen([KUBEXM, "logs", "etcd", "--follow", "--lines", "5", "-f", str(logs_lab.cluster_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(8)
        ssh(logs_lab, "node2", "printf 'MESSAGE=kxlogs followed line\\nOBJECT_SYSTEMD_UNIT=etcd.service\\n' "
                               "| logger --journald")
        time.sleep(6)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out[-2000:] + err[-2000:]
    lines = out.splitlines()
    for node in ("node1", "node2", "node3"):
        assert any(line.startswith(f"{node} | ") for line in lines), out[-3000:]
    assert any(line.startswith("node2 | ") and "kxlogs followed line" in line for line in lines), out[-3000:]
    assert "Traceback" not in err
    for node in ("node1", "node2", "node3"):
        assert ssh(logs_lab, node, "pgrep -a journalctl || true").strip() == ""

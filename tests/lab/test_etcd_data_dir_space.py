"""An etcd data directory with a space in its path, end to end on real nodes: create, backup, restore,
member remove and add. Every step that moves or deletes the directory must treat it as one path."""

from __future__ import annotations

import json
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab
PKI = "/etc/kubernetes/pki/etcd"
ETCDCTL = (f"ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/ca.crt "
           f"--cert={PKI}/healthcheck-client.crt --key={PKI}/healthcheck-client.key")
DATA = "/var/lib/etcd data/member dir"
Q = shlex.quote(DATA)


@pytest.fixture(scope="module")
def spaced(lab_env: Path) -> Iterator[Lab]:
    """A lab of its own (the session lab's etcd keeps the default directory), its cluster file with the
    data directory moved and node3 an etcd member only, so removing it touches etcd alone."""
    lab = Lab("kxspace")
    try:
        lab.up(3, "10.213.81.0/24")
        text = lab.cluster_file.read_text()
        assert "  etcd:\n" in text and "    worker: [node2, node3]\n" in text, text
        text = text.replace("  etcd:\n", f"  etcd:\n    dataDir: {json.dumps(DATA)}\n", 1)
        lab.cluster_file.write_text(text.replace("    worker: [node2, node3]\n", "    worker: [node2]\n", 1))
        yield lab
    finally:
        lab.down()


def set_etcd_members(lab: Lab, names: list[str]) -> None:
    text = lab.cluster_file.read_text()
    start = text.index("    etcd: [")
    end = text.index("\n", start)
    lab.cluster_file.write_text(text[:start] + f"    etcd: [{', '.join(names)}]" + text[end:])


def ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]


def test_data_dir_with_a_space_create_backup_restore_remove_add(spaced: Lab, tmp_path: Path) -> None:
    cluster = str(spaced.cluster_file)
    ok(kubexm("create", "cluster", "-f", cluster, "-y", "--tags", "etcd"))
    for node in ("node1", "node2", "node3"):
        # The member's data is in the directory with the space; nothing was made of the words around it.
        ssh(spaced, node, f"test -d {Q}/member && test ! -e /var/lib/etcd && test ! -e data && test ! -e dir")
        assert ssh(spaced, node, "systemctl is-active etcd").strip() == "active"
    assert ssh(spaced, "node1", f"{ETCDCTL} endpoint health --cluster 2>&1").count("is healthy") == 3
    again = kubexm("create", "cluster", "-f", cluster, "-y", "--tags", "etcd")
    ok(again)
    assert "nothing to change" in again.stdout  # quoted values read back as written: no rewrite, no restart

    ssh(spaced, "node1", f"{ETCDCTL} put spaced-key before-backup")
    ok(kubexm("backup", "cluster", "-f", cluster, "--to-location", str(tmp_path)))
    (archive,) = tmp_path.glob("*.tar.gz")
    ssh(spaced, "node1", f"{ETCDCTL} put spaced-key after-backup")
    ok(kubexm("restore", "cluster", "-f", cluster, "--from", str(archive), "-y"))
    for node in ("node1", "node2", "node3"):
        assert ssh(spaced, node, f"{ETCDCTL} get spaced-key --print-value-only").strip() == "before-backup"
        # The restored data is in place and the previous data was set aside next to it, whole.
        ssh(spaced, node, f"test -d {Q}/member && ls -d {Q}.before-restore-*/member")

    ok(kubexm("delete", "nodes", "-f", cluster, "--nodes", "node3", "-y"))
    set_etcd_members(spaced, ["node1", "node2"])
    ssh(spaced, "node3", f"test ! -e {Q} && test -d /var/lib/kubexm && test -d '/var/lib/etcd data'")
    members = ssh(spaced, "node1", f"{ETCDCTL} member list")
    assert "node3" not in members and members.count("started") == 2, members

    set_etcd_members(spaced, ["node1", "node2", "node3"])
    ok(kubexm("add", "nodes", "-y", "-f", cluster, "--nodes", "node3", "--role", "etcd"))
    ssh(spaced, "node3", f"test -d {Q}/member")
    health = ssh(spaced, "node3", f"{ETCDCTL} endpoint health --cluster 2>&1", check=False)
    assert health.count("is healthy") == 3, health + ssh(spaced, "node3", "systemctl status etcd --no-pager; journalctl -u etcd --no-pager | tail -40; cat /etc/etcd/etcd.env /etc/etcd.env 2>/dev/null", check=False)
    assert ssh(spaced, "node3", f"{ETCDCTL} get spaced-key --print-value-only").strip() == "before-backup"

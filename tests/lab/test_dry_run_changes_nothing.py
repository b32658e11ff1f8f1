"""A connected dry run is a plan and nothing else: on real nodes, byte for byte.

Runs first in the lab session (file order), on nodes nothing has touched yet, with a cluster file full of
values that are valid but would do damage if any reached a shell unquoted: a data dir with a space, a
``;`` and a command substitution, YAML 1.1 booleans as label values, a password with quotes and ``$()``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab

WATCHED = "/etc /usr/local/bin /usr/local/sbin /var/lib /tmp /root /opt"
# What the node's own services change while the test runs, whoever logs in: not kubexm's doing.
CHURN = ("/var/lib/systemd/timers/", "/var/lib/systemd/random-seed", "/var/lib/dbus/", "/var/lib/private/",
         "/var/lib/apt/daily_lock", "/var/lib/logrotate/", "/tmp/systemd-private-", "/var/lib/systemd/coredump")
SNAPSHOT = (
    f"find {WATCHED} -xdev -printf '%y %m %U:%G %s %p -> %l\\n' 2>/dev/null | sort; "
    f"find {WATCHED} -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum 2>/dev/null"
)


def snapshot(lab: RunningLab, node: str) -> list[str]:
    return [line for line in lab.ssh(node, SNAPSHOT).splitlines() if not any(c in line for c in CHURN)]


def hostile_cluster_file(lab: RunningLab, tmp_path: Path) -> Path:
    yaml = YAML()
    doc = yaml.load(lab.cluster_file.read_text())
    spec = doc["spec"]
    spec.setdefault("etcd", {})["dataDir"] = "/var/lib/kubexm etcd/data;$(touch /tmp/pwned-datadir)"
    for host in spec["hosts"]:
        host["labels"] = {"example.com/on-call": "no", "tier": "on"}
    spec.setdefault("system", {})["sysctl"] = {"net.ipv4.ip_local_port_range": "1024 65000"}
    spec["system"]["ntpServers"] = [lab.address("node1")]
    runtime = spec.setdefault("containerRuntime", {})
    runtime["registryMirrors"] = [{"registry": "docker.io", "endpoints": ["https://mirror.invalid:5000"]}]
    spec["registry"] = {"auths": [{"registry": "registry.invalid:5000", "username": "robot$ci",
                                   "password": "p'a\"ss $(touch /tmp/pwned-auth) `id`"}]}
    spec.setdefault("kubernetes", {})["kubeletExtraArgs"] = {"node-labels": "a=b;c"}
    out = tmp_path / "hostile.yaml"
    with out.open("w") as fh:
        yaml.dump(doc, fh)
    return out


def test_connected_dry_run_of_everything_leaves_every_node_byte_identical(lab: RunningLab, tmp_path: Path) -> None:
    cluster = hostile_cluster_file(lab, tmp_path)
    lint = kubexm("create", "cluster", "-f", str(cluster), "--dry-run", "--offline")
    assert lint.returncode == 0, lint.stdout[-3000:] + lint.stderr
    before = {node: snapshot(lab, node) for node in lab.nodes}
    assert all(len(lines) > 1000 for lines in before.values())  # the listing really covers the trees

    res = kubexm("create", "cluster", "-f", str(cluster), "--dry-run", timeout=600)
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out[-4000:]
    assert res.returncode == 0, out[-4000:]
    assert "would change" in out or "+ " in out
    for task in ("PrepareNodesOS", "InstallEtcdCluster", "InstallContainerd", "InstallKubernetes", "JoinWorkers"):
        assert task in out, task

    for node in lab.nodes:
        after = snapshot(lab, node)
        changed = sorted(set(before[node]) ^ set(after))
        assert not changed, f"{node} changed during a dry run:\n" + "\n".join(changed[:40])
        assert "pwned" not in lab.ssh(node, "ls /tmp /var/lib 2>/dev/null")

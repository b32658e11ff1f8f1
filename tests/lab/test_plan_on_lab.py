"""`kubexm plan cluster` on real nodes: after the OS, containerd and etcd are in place, a containerd mirror and a
sysctl change in the spec show as exactly those two diffs, on exactly the nodes that do not have them yet, and
the plan leaves every node byte for byte as it was."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab

SYSCTL_FILE = "/etc/sysctl.d/99-kubexm.conf"
HOSTS_TOML = "/etc/containerd/certs.d/docker.io/hosts.toml"
WATCHED = "/etc /usr/local/bin /var/lib/kubexm /opt/cni"
# What the node's own services change while the test runs: not kubexm's doing.
CHURN = ("/var/lib/systemd/", "/etc/.pwd.lock")
SNAPSHOT = (
    f"find {WATCHED} -xdev -printf '%y %m %U:%G %s %p -> %l\\n' 2>/dev/null | sort; "
    f"find {WATCHED} -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 -r sha256sum 2>/dev/null"
)
TAGS = "os,runtime,etcd"  # what this machine can run: no kubeadm in the lab


@pytest.fixture(scope="module")
def planlab(lab_env: Path) -> Iterator[Lab]:
    lab = Lab("kxplan")
    try:
        lab.up(3, "10.213.95.0/24")
        yield lab
    finally:
        lab.down()


def snapshot(lab: Lab, node: str) -> list[str]:
    return [line for line in ssh(lab, node, SNAPSHOT).splitlines() if not any(c in line for c in CHURN)]


def write_spec(lab: Lab, out: Path, mirror: str, swappiness: str) -> Path:
    yaml = YAML()
    doc = yaml.load(lab.cluster_file.read_text())
    doc["metadata"]["labels"] = {"kubexm.io/environment": "test"}  # one control plane, one etcd member: a lab
    spec = doc["spec"]
    spec.setdefault("system", {})["sysctl"] = {"vm.swappiness": swappiness}
    spec["containerRuntime"]["registryMirrors"] = [{"registry": "docker.io", "endpoints": [mirror]}]
    with out.open("w") as fh:
        yaml.dump(doc, fh)
    return out


def ok(res: subprocess.CompletedProcess[str]) -> None:
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out[-4000:]
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def plan(cluster: Path) -> dict:  # type: ignore[type-arg]
    res = kubexm("plan", "cluster", "-f", str(cluster), "--tags", TAGS, "-o", "json", timeout=900)
    ok(res)
    return json.loads(res.stdout)  # type: ignore[no-any-return]


def test_plan_shows_exactly_the_changed_files_and_changes_nothing(planlab: Lab, tmp_path: Path) -> None:
    before_spec = write_spec(planlab, tmp_path / "before.yaml", "https://mirror-a.invalid:5000", "10")
    ok(kubexm("create", "cluster", "-f", str(before_spec), "-y", "--tags", TAGS, timeout=1200))
    state = planlab.load()
    assert state is not None
    nodes = [n.name for n in state.nodes]

    # As created: nothing to change, on any node.
    unchanged = plan(before_spec)
    assert unchanged["connected"] is True and unchanged["failed"] == 0
    assert unchanged["nodes"] == [], json.dumps(unchanged["nodes"], indent=1)[:4000]

    # The change, applied to node1 alone: the plan must show it on node2 and node3, and only there.
    after_spec = write_spec(planlab, tmp_path / "after.yaml", "https://mirror-b.invalid:5000", "30")
    ok(kubexm("create", "cluster", "-f", str(after_spec), "-y", "--tags", TAGS, "--nodes", "node1", timeout=1200))
    assert "vm.swappiness = 30" in ssh(planlab, "node1", f"cat {SYSCTL_FILE}")

    before = {node: snapshot(planlab, node) for node in nodes}
    assert all(len(lines) > 500 for lines in before.values())  # the listing really covers the trees
    changed = plan(after_spec)
    for node in nodes:
        after = snapshot(planlab, node)
        diff = sorted(set(before[node]) ^ set(after))
        assert not diff, f"{node} changed during the plan:\n" + "\n".join(diff[:40])

    assert changed["failed"] == 0 and changed["risks"] == []
    by_node = {n["name"]: n for n in changed["nodes"]}
    assert sorted(by_node) == ["node2", "node3"], json.dumps(changed["nodes"], indent=1)[:4000]
    for name, node in by_node.items():
        files = {f["path"]: f for f in node["files"]}
        assert sorted(files) == sorted([SYSCTL_FILE, HOSTS_TOML]), (name, sorted(files))
        assert (node["units"], node["drained"], node["etcd"], node["other"], node["problems"]) == (
            [], False, [], [], []), (name, node)
        sysctl = [line for line in files[SYSCTL_FILE]["diff"].splitlines()
                  if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert sysctl == ["-vm.swappiness = 10", "+vm.swappiness = 30"], (name, files[SYSCTL_FILE]["diff"])
        mirror = [line for line in files[HOSTS_TOML]["diff"].splitlines()
                  if line[:1] in "+-" and not line.startswith(("+++", "---"))]
        assert mirror == ['-[host."https://mirror-a.invalid:5000"]', '+[host."https://mirror-b.invalid:5000"]'], (
            name, files[HOSTS_TOML]["diff"])
        # What the diff was made against is what the node holds.
        assert "vm.swappiness = 10" in ssh(planlab, name, f"cat {SYSCTL_FILE}")

    # The table output says the same for a person.
    table = kubexm("plan", "cluster", "-f", str(after_spec), "--tags", TAGS, timeout=900)
    ok(table)
    assert f"~ {SYSCTL_FILE}" in table.stdout and f"~ {HOSTS_TOML}" in table.stdout
    assert "node1 [" not in table.stdout

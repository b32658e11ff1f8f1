"""`config diff`/`config sync` and an etcd upgrade rolled back, on real nodes (lab kxsync).

The lab runs what this machine can: the OS preparation, kubexm's etcd and containerd (no Kubernetes binaries).
A containerd mirror and a sysctl change in the spec: `config diff` shows exactly those on every node, `config
sync` applies them one node at a time, a second diff is empty. Then etcd is upgraded to the lab's own etcd
repacked under a newer version (its binary made different by a trailing marker, which ELF loaders ignore),
keys are written, and `rollback cluster` brings every member back to the previous binary with no key lost.
"""

from __future__ import annotations

import json
import re
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from kubexm.assets import LocalSource
from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab
NODES = ("node1", "node2", "node3")
PKI = "/etc/kubernetes/pki/etcd"
ETCDCTL = (f"ETCDCTL_API=3 etcdctl --endpoints=https://127.0.0.1:2379 --cacert={PKI}/ca.crt "
           f"--cert={PKI}/healthcheck-client.crt --key={PKI}/healthcheck-client.key")
MIRROR_REGISTRY = "quay.io"
MIRROR = "https://10.213.93.250:5000"
SYSCTL_KEY, SYSCTL_VALUE = "net.ipv4.tcp_keepalive_time", "600"
HOSTS_TOML = f"/etc/containerd/certs.d/{MIRROR_REGISTRY}/hosts.toml"
SYSCTL_FILE = "/etc/sysctl.d/99-kubexm.conf"


def ok(res: subprocess.CompletedProcess[str]) -> None:
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


def _private_source(shared: Path, into: Path, version: str) -> tuple[Path, str]:
    """A local source of this test's own: the lab's entries (files linked), plus etcd repacked as the next patch
    version with a binary whose sha256 differs. Returns (source, newer version)."""
    into.mkdir()
    for file in {e["file"] for e in LocalSource(shared).entries()}:
        (into / file).symlink_to(shared / file)
    (into / "manifest.yaml").write_text((shared / "manifest.yaml").read_text())
    major, minor, patch = (int(p) for p in version.lstrip("v").split("."))
    newer = f"v{major}.{minor}.{patch + 1}"
    entry = next(e for e in LocalSource(shared).entries() if e["component"] == "etcd" and str(e["version"]) == version)
    work = into.parent / "repack"
    with tarfile.open(shared / entry["file"]) as tar:
        tar.extractall(work, filter="data")
    (old_top,) = work.iterdir()
    top = work / old_top.name.replace(version, newer)
    old_top.rename(top)
    with open(top / "etcd", "ab") as fh:
        fh.write(b"\0kubexm-lab-repack-" + newer.encode())
    archive = into.parent / f"{top.name}.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for binary in ("etcd", "etcdctl"):
            tar.add(top / binary, arcname=f"{top.name}/{binary}")
    LocalSource(into).add("etcd", newer, str(entry["arch"]), archive)
    return into, newer


@pytest.fixture(scope="module")
def sync_lab(lab_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Lab, str, str]]:
    lab = Lab("kxsync")
    try:
        lab.up(3, "10.213.93.0/24")
        text = lab.cluster_file.read_text()
        shared = Path(re.search(r"localSource: (\S+)", text).group(1))  # type: ignore[union-attr]
        version = re.search(r"etcd:\n    version: (\S+)", text).group(1)  # type: ignore[union-attr]
        source, newer = _private_source(shared, tmp_path_factory.mktemp("kxsync") / "source", version)
        lab.cluster_file.write_text(text.replace(f"localSource: {shared}", f"localSource: {source}"))
        ok(kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "os,etcd,runtime", timeout=1500))
        yield lab, version, newer
    finally:
        lab.down()


def _change_spec(lab: Lab) -> None:
    yaml = YAML()
    doc = yaml.load(lab.cluster_file.read_text())
    spec = doc["spec"]
    spec["containerRuntime"]["registryMirrors"] = [{"registry": MIRROR_REGISTRY, "endpoints": [MIRROR]}]
    spec.setdefault("system", {})["sysctl"] = {SYSCTL_KEY: SYSCTL_VALUE}
    with open(lab.cluster_file, "w") as fh:
        yaml.dump(doc, fh)


def test_config_diff_then_sync_one_node_at_a_time_then_nothing(sync_lab: tuple[Lab, str, str]) -> None:
    lab, _, _ = sync_lab
    cluster = str(lab.cluster_file)
    first = kubexm("config", "diff", "-f", cluster, "-o", "json", timeout=600)
    ok(first)
    assert json.loads(first.stdout)["nodes"] == {}, first.stdout  # the cluster is as created: nothing to sync
    proc = f"/proc/sys/{SYSCTL_KEY.replace('.', '/')}"
    before = {n: ssh(lab, n, f"cat {proc}").strip() for n in NODES}
    assert set(before.values()) != {SYSCTL_VALUE}
    # Lab nodes are nspawn containers: whether /proc/sys/net is writable depends on how the machine mounts it.
    # A key the node cannot write is not the sync's to change (the file is): expectations follow the node.
    writable = {n for n in NODES if ssh(lab, n, f"test -w {proc} && echo yes || echo no").strip() == "yes"}

    _change_spec(lab)
    diff = kubexm("config", "diff", "-f", cluster, "-o", "json", timeout=600)
    ok(diff)
    nodes = json.loads(diff.stdout)["nodes"]
    assert set(nodes) == set(NODES), diff.stdout
    for node in NODES:
        changes = {c["path"]: c["diff"] for c in nodes[node]}
        # Exactly the two changes: the mirror's hosts.toml (new) and the sysctl, as a file and a live value.
        live = {f"sysctl {SYSCTL_KEY}"} if node in writable else set()
        assert set(changes) == {HOSTS_TOML, SYSCTL_FILE} | live, changes
        assert f"+++ {HOSTS_TOML} (spec)" in changes[HOSTS_TOML] and MIRROR in changes[HOSTS_TOML]
        assert f"+{SYSCTL_KEY} = {SYSCTL_VALUE}" in changes[SYSCTL_FILE]
        if live:
            assert changes[f"sysctl {SYSCTL_KEY}"] == f"-{SYSCTL_KEY} = {before[node]}\n+{SYSCTL_KEY} = {SYSCTL_VALUE}\n"
    text = kubexm("config", "diff", "-f", cluster, timeout=600)
    ok(text)
    assert "== node1" in text.stdout and f"+{SYSCTL_KEY} = {SYSCTL_VALUE}" in text.stdout
    # Nothing changed on the nodes yet.
    assert ssh(lab, "node2", f"test -e {HOSTS_TOML} && echo present || echo absent").strip() == "absent"

    refused = kubexm("config", "sync", "-f", cluster)
    assert refused.returncode == 2 and "--yes" in refused.stderr

    sync = kubexm("config", "sync", "-f", cluster, "-y", "--log-format", "json", timeout=900)
    ok(sync)
    events = [json.loads(line) for line in sync.stdout.splitlines() if line.startswith("{")]
    steps = [e for e in events if e.get("kind") == "step.end" and e.get("task") == "SyncNodeSettings"]
    order = [e["host"] for e in steps]
    # One node at a time: each node's steps, its health gate last, all before the next node's first step.
    assert [h for i, h in enumerate(order) if i == 0 or order[i - 1] != h] == list(NODES), order
    for node in NODES:
        mine = [e for e in steps if e["host"] == node]
        assert mine[-1]["step"] == "NodeHealthy" and mine[-1]["status"] == "ok", mine[-1]
    gates = {e["host"]: e["time"] for e in steps if e["step"] == "NodeHealthy"}
    starts = {n: min(e["time"] for e in events if e.get("kind") == "step.start" and e.get("host") == n
                     and e.get("task") == "SyncNodeSettings") for n in NODES}
    assert gates["node1"] <= starts["node2"] and gates["node2"] <= starts["node3"]
    status = {(e["host"], e["step"]): e["status"] for e in steps}
    for node in NODES:
        assert status[(node, "ContainerdConfig")] == "changed", status
        # A container cannot set every key (net.bridge.*, ip_forward): the step names those and applies the rest.
        assert status[(node, "Sysctl")] in ("changed", "not-applicable"), status
    for node in NODES:
        assert MIRROR in ssh(lab, node, f"cat {HOSTS_TOML}")
        assert f"{SYSCTL_KEY} = {SYSCTL_VALUE}\n" in ssh(lab, node, f"cat {SYSCTL_FILE}")
        assert ssh(lab, node, f"cat {proc}").strip() == (SYSCTL_VALUE if node in writable else before[node])
        assert ssh(lab, node, "systemctl is-active containerd etcd").split() == ["active", "active"]

    again = kubexm("config", "diff", "-f", cluster, "-o", "json", timeout=600)
    ok(again)
    assert json.loads(again.stdout)["nodes"] == {}, again.stdout


def _etcd_sha(lab: Lab) -> dict[str, str]:
    return {n: ssh(lab, n, "sha256sum /usr/local/bin/etcd").split()[0] for n in NODES}


def test_etcd_upgrade_then_rollback_returns_every_node_to_the_previous_binary(sync_lab: tuple[Lab, str, str]) -> None:
    lab, version, newer = sync_lab
    cluster = str(lab.cluster_file)
    nothing = kubexm("rollback", "cluster", "-f", cluster, "-y")
    assert nothing.returncode == 1 and "nothing to roll back" in nothing.stderr, nothing.stderr
    assert len(nothing.stderr.strip().splitlines()) == 1, nothing.stderr

    old = _etcd_sha(lab)
    assert len(set(old.values())) == 1
    ssh(lab, "node1", f"for i in $(seq 1 50); do {ETCDCTL} put before$i v$i >/dev/null || exit 1; done")
    up = kubexm("upgrade", "etcd", "-f", cluster, "--to-version", newer, "-y", timeout=900)
    ok(up)
    new = _etcd_sha(lab)
    assert set(new.values()) != set(old.values()) and len(set(new.values())) == 1
    for node in NODES:
        manifest = json.loads(ssh(lab, node, "cat /var/lib/kubexm/rollback/*/manifest.json"))
        kept = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert kept["/usr/local/bin/etcd"] == old[node] and manifest["from"] == version and manifest["to"] == newer
    ssh(lab, "node2", f"for i in $(seq 1 50); do {ETCDCTL} put after$i v$i >/dev/null || exit 1; done")

    plan = kubexm("rollback", "cluster", "-f", cluster, "--plan")
    ok(plan)
    assert newer in plan.stdout and version in plan.stdout and "node3" in plan.stdout

    back = kubexm("rollback", "cluster", "-f", cluster, "-y", timeout=900)
    ok(back)
    assert _etcd_sha(lab) == old
    for node in NODES:
        assert ssh(lab, node, "systemctl is-active etcd").strip() == "active"
        keys = ssh(lab, node, f"{ETCDCTL} get '' --prefix --keys-only").split()
        assert {f"before{i}" for i in range(1, 51)} | {f"after{i}" for i in range(1, 51)} <= set(keys)
    health = ssh(lab, "node1", f"{ETCDCTL} endpoint health --cluster 2>&1")
    assert health.count("is healthy") == 3, health
    again = kubexm("rollback", "cluster", "-f", cluster, "-y")
    assert again.returncode == 1 and "already rolled back" in again.stderr

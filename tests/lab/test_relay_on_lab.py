"""create cluster with spec.assets.relay on real lab nodes: release files go node to node, verified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from kubexm.spec.loader import load_cluster
from kubexm.steps.binaries import ASSET_DIR, asset_store, component_version

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab


def test_release_files_are_relayed_node_to_node_then_installed(running_lab: RunningLab, tmp_path: Path) -> None:
    lab = running_lab
    relay_file = tmp_path / "relay.yaml"
    relay_file.write_text(lab.cluster_file.read_text().replace("  assets:\n", "  assets:\n    relay: true\n", 1))
    cluster = load_cluster(relay_file)
    assert cluster.spec.assets.relay
    asset, local = asset_store(cluster).get("etcd", component_version(cluster, "etcd"), "amd64")
    # No node holds etcd's release file or has it installed: all three need it.
    for node in lab.nodes:
        lab.ssh(node, f"rm -f {ASSET_DIR}/etcd*")
    res = kubexm("create", "cluster", "-f", str(relay_file), "-y", "--tags", "os,etcd")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    size_mb = local.stat().st_size / 1e6
    # Two nodes got it from the deploy machine, the third from one of them: two copies sent, not three.
    assert (f"{asset.file}: 3 node(s) by relay, 0 directly; the deploy machine sent {2 * size_mb:.0f} MB "
            f"instead of {3 * size_mb:.0f} MB") in res.stdout, res.stdout[-3000:]
    want = hashlib.sha256(local.read_bytes()).hexdigest()
    for node in lab.nodes:
        assert lab.ssh(node, f"sha256sum {ASSET_DIR}/{asset.file}").split()[0] == want
        assert lab.ssh(node, f"stat -c '%u %a' {ASSET_DIR}/{asset.file}").strip() == "0 644"
        assert lab.ssh(node, f"ls -a {ASSET_DIR} | grep -c kubexm-relay; true").strip() == "0"
        assert lab.ssh(node, f"cat {ASSET_DIR}/etcd.installed").strip() == want  # then installed from it
    # Everything in place: the relay has nothing to send and the run changes nothing.
    again = kubexm("create", "cluster", "-f", str(relay_file), "-y", "--tags", "os,etcd")
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout[-3000:]

"""kubexm itself against real lab nodes: ad-hoc commands, preflight, uploads, a node dying mid-run."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

from kubexm.engine import RunContext, RunOptions
from kubexm.spec.loader import load_cluster

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab


def test_run_command_returns_each_nodes_own_name(lab: RunningLab) -> None:
    res = kubexm("run", "command", "-f", str(lab.cluster_file), "--nodes", "*", "--", "hostname")
    assert res.returncode == 0, res.stdout + res.stderr
    for node in lab.nodes:
        assert f"== {node} (exit 0)\n{node}\n" in res.stdout


def test_create_cluster_runs_everything_before_kubeadm_then_names_the_missing_binary(lab: RunningLab) -> None:
    # The lab has no Kubernetes server binaries (none can be installed on this machine kind): the run does
    # every real step before them, then stops with the asset it lacks.
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y")
    assert res.returncode != 0, res.stdout
    assert "Preflight" in res.stdout
    rows = [line for line in res.stdout.splitlines() if "│ container" in line]
    assert len(rows) == 3 and all("warn" in r for r in rows)
    assert "fail " not in res.stdout
    out = res.stdout + res.stderr
    assert "kubeadm v1.33.7 (amd64) is not in the local asset source" in out, out[-3000:]
    assert "the run stopped after task InstallKubernetes" in out
    for done in ("PrepareNodesOS", "InstallEtcdCluster", "InstallContainerd", "GenerateKubernetesPKI"):
        assert done in out
    # Nothing of Kubernetes was half-installed: no kubelet unit, no binaries.
    assert lab.ssh("node1", "ls /usr/local/bin/kube* /etc/systemd/system/kubelet.service 2>/dev/null; true") == ""


def test_dry_run_after_create_completes_with_a_plan(lab: RunningLab) -> None:
    # Everything this machine can run now exists on the nodes (the test above): a connected dry run of the
    # whole pipeline, Kubernetes and addons included, must still end as a plan, never as a failure.
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "--dry-run", timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "Traceback" not in out and "internal error" not in out and "✗" not in out, out[-4000:]
    for task in ("InstallEtcdCluster", "InstallContainerd", "BootstrapFirstMaster", "InstallCNI"):
        assert task in out, task


def test_large_upload_skips_on_second_run(lab: RunningLab, tmp_path: Path) -> None:
    blob = tmp_path / "blob.bin"
    blob.write_bytes(os.urandom(50 * 1024 * 1024))
    cluster = load_cluster(lab.cluster_file)

    async def upload_everywhere() -> list[bool]:
        run = RunContext(cluster, RunOptions())
        try:
            return list(await asyncio.gather(*(run.host(n).upload(blob, "/opt/kubexm-test/blob.bin") for n in lab.nodes)))
        finally:
            await run.close()

    assert asyncio.run(upload_everywhere()) == [True, True, True]
    start = time.monotonic()
    assert asyncio.run(upload_everywhere()) == [False, False, False]
    assert time.monotonic() - start < 10
    digest = lab.ssh("node2", "sha256sum /opt/kubexm-test/blob.bin").split()[0]
    import hashlib

    assert digest == hashlib.sha256(blob.read_bytes()).hexdigest()


def test_killing_a_node_mid_run_fails_only_that_node(lab: RunningLab) -> None:
    killer = threading.Timer(2.0, lambda: lab.lab.kill("node3"))
    killer.start()
    try:
        res = kubexm("run", "command", "-f", str(lab.cluster_file), "--nodes", "*", "--", "sleep 5; hostname",
                     timeout=180)
    finally:
        killer.join()
    assert res.returncode == 1
    assert "== node1 (exit 0)" in res.stdout and "== node2 (exit 0)" in res.stdout
    assert "✗ node3" in res.stdout and "Traceback" not in res.stdout + res.stderr
    failure = next(line for line in res.stdout.splitlines() if "✗ node3" in line)
    assert "node3" in failure and ("connection" in failure or "connect" in failure)


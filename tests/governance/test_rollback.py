"""The rollback point an etcd upgrade keeps, and `rollback cluster` going back to it, on in-memory nodes."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import shlex
import tarfile
from pathlib import Path
from typing import Any

import pytest
from governance.test_config_sync import BASE, NODES, FakeNode
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import Executor, RunContext, RunOptions
from kubexm.engine.executor import RunReport
from kubexm.engine.task import Task
from kubexm.errors import StepFailed
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.rollback import ROLLBACK_CLUSTER
from kubexm.pipelines.upgrade import KeepEtcdRollbackPoint, SaveEtcdRollbackFiles
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.rollback import load_point, point_dir

OLD, NEW = "v3.5.16", "v3.5.17"
ETCD = "/usr/local/bin/etcd"
KEPT = ("/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/etc/etcd.env", "/etc/systemd/system/etcd.service",
        "/var/lib/kubexm/assets/etcd.installed")


def spec(version: str) -> Cluster:
    return parse_cluster(BASE + f"  etcd: {{version: {version}}}\n")


def _copy_in(host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
    directory = shlex.split(m.group(1))[0]
    for path in shlex.split(m.group(2)):
        host.files[f"{directory}/files{path}"] = host.files[path]
    return 0, "", ""


def _put_back(host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
    copy, _part, path = (shlex.split(g)[0] for g in m.groups())
    host.files[path] = host.files[copy]
    return 0, "", ""


def _snapshot(host: MemoryHost, m: re.Match[str], _: bytes | None) -> tuple[int, str, str]:
    host.files[shlex.split(m.group(1))[0]] = b"etcd snapshot of " + host.name.encode()
    return 0, "", ""


def etcd_fleet() -> tuple[MemoryFleet, dict[str, FakeNode]]:
    fleet = MemoryFleet(list(NODES))
    nodes = {n: FakeNode(fleet[n], 3) for n in NODES}
    for name in NODES:
        host = fleet[name]
        for path in KEPT:
            host.files[path] = f"{path} of {OLD}".encode()
        host.on(r"^mkdir -p -m 0700 -- (\S+) && for f in (.*?); do d=", _copy_in)
        host.on(r"^cp -a -- (\S+) (\S+) && mv -f -- \S+ (\S+)$", _put_back)
        host.on(r"etcdctl .*snapshot save (\S+)", _snapshot)
        host.on(r"^test -s (\S+)$", lambda h, m, s: (0 if h.files.get(shlex.split(m.group(1))[0]) else 1, "", ""))
    return fleet, nodes


def run(cluster: Cluster, fleet: MemoryFleet, tasks: list[Task] | None = None, **extra: Any) -> tuple[RunReport, RunContext]:
    options = RunOptions(extra=dict(extra), skip_tags=set(extra.pop("skip_tags", set())))
    options.extra.pop("skip_tags", None)
    ctx = RunContext(cluster, options, pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))
    executor = Executor(ctx)
    if tasks is None:
        report = asyncio.run(executor.run_pipeline(ROLLBACK_CLUSTER))
    else:
        report = asyncio.run(executor.run_tasks([(None, t) for t in tasks]))
    return report, ctx


def upgrade_and_keep(fleet: MemoryFleet) -> dict[str, Any]:
    """What `upgrade etcd` does before the first member changes, then the members' files replaced."""
    report, _ = run(spec(NEW), fleet, [KeepEtcdRollbackPoint, SaveEtcdRollbackFiles], from_version=OLD)
    assert report.ok, [r.message for r in report.failures]
    for name in NODES:
        for path in KEPT:
            fleet[name].files[path] = f"{path} of {NEW}".encode()
    point = load_point("sync")
    assert point is not None
    return point


def test_upgrade_keeps_a_snapshot_and_each_nodes_files_with_their_sha256() -> None:
    fleet, _ = etcd_fleet()
    point = upgrade_and_keep(fleet)
    assert point["component"] == "etcd" and point["from"] == OLD and point["to"] == NEW and point["state"] == "ready"
    assert point["nodes"] == list(NODES)
    with tarfile.open(point["snapshot"]) as tar:  # the snapshot right before, on the deploy machine
        meta = json.loads(tar.extractfile("meta.json").read())  # type: ignore[union-attr]
    assert meta["cluster"] == "sync"
    for name in NODES:
        manifest = json.loads(fleet[name].files[f"{point_dir(point['id'])}/manifest.json"])
        kept = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert kept == {p: hashlib.sha256(f"{p} of {OLD}".encode()).hexdigest() for p in KEPT}
        assert (manifest["from"], manifest["to"]) == (OLD, NEW)
        assert fleet[name].files[f"{point_dir(point['id'])}/files{ETCD}"] == f"{ETCD} of {OLD}".encode()
    # A re-run of the same upgrade (after a failure half-way) keeps the first copies, not the upgraded files.
    report, _ = run(spec(NEW), fleet, [KeepEtcdRollbackPoint, SaveEtcdRollbackFiles], from_version=OLD)
    assert report.ok and report.count("changed") == 0
    assert load_point("sync") == point
    assert fleet["n2"].files[f"{point_dir(point['id'])}/files{ETCD}"] == f"{ETCD} of {OLD}".encode()


def test_rollback_restores_every_node_one_at_a_time_then_has_nothing_left() -> None:
    fleet, _ = etcd_fleet()
    point = upgrade_and_keep(fleet)
    report, _ = run(spec(NEW), fleet, rollback=point, skip_tags={"etcd-data"})
    assert report.ok, [r.message for r in report.failures]
    for name in NODES:
        assert all(fleet[name].files[p] == f"{p} of {OLD}".encode() for p in KEPT)
        assert any(re.search(r"systemctl restart -- etcd", c) for c in fleet[name].commands)
    order = [r.host for r in report.records if r.task == "RestoreNodeFiles"]
    # One node at a time, workers before the control plane (a kubelet must not be newer than its API server).
    assert [h for i, h in enumerate(order) if i == 0 or order[i - 1] != h] == ["n2", "n3", "n1"]
    assert "RestoreETCD" not in report.tasks_run  # etcd data only when asked
    assert load_point("sync")["state"] == "rolled-back"  # type: ignore[index]
    again, _ = run(spec(NEW), fleet)
    assert not again.ok and "has no upgrade to roll back" in again.failures[0].message


def test_rollback_stops_at_the_first_unhealthy_node() -> None:
    fleet, nodes = etcd_fleet()
    point = upgrade_and_keep(fleet)
    nodes["n2"].runtime_ok = False
    report, _ = run(spec(NEW), fleet, rollback=point, skip_tags={"etcd-data"}, health_timeout=0)
    (failure,) = report.failures
    assert failure.host == "n2" and "n2 is unhealthy after its change" in failure.message
    assert fleet["n2"].files[ETCD] == f"{ETCD} of {OLD}".encode()
    assert fleet["n3"].files[ETCD] == fleet["n1"].files[ETCD] == f"{ETCD} of {NEW}".encode()
    assert load_point("sync")["state"] == "ready"  # type: ignore[index]  # a re-run carries on


def test_a_point_id_is_one_plain_directory_name() -> None:
    assert point_dir("etcd-v3.5.17-abc123") == "/var/lib/kubexm/rollback/etcd-v3.5.17-abc123"
    for bad in ("", "..", "../x", "a/b", "a b", ".hidden"):
        with pytest.raises(StepFailed):
            point_dir(bad)


def test_nothing_to_roll_back_is_refused_before_any_node_is_touched(tmp_path: Path) -> None:
    fleet, _ = etcd_fleet()
    report, _ = run(spec(NEW), fleet)
    assert [r.task for r in report.failures] == ["FindRollbackPoint"]
    assert all(not any(c.startswith(("cp ", "<put")) for c in fleet[n].commands) for n in NODES)


@pytest.mark.parametrize("tags", [set(), {"control-plane"}, {"worker"}])
def test_every_upgrade_keeps_its_point_before_the_first_node_changes(tags: set[str]) -> None:
    from kubexm.pipelines.upgrade import UPGRADE_CLUSTER, UPGRADE_ETCD

    for pipeline, keep, save, first_change in (
            (UPGRADE_CLUSTER, "KeepKubernetesRollbackPoint", "SaveKubernetesRollbackFiles",
             "UpgradeWorkerNodes" if tags == {"worker"} else "UpgradeFirstControlPlane"),
            (UPGRADE_ETCD, "KeepEtcdRollbackPoint", "SaveEtcdRollbackFiles", "UpgradeEtcdMembers")):
        names = [t.name for _, t in pipeline.plan(spec(NEW), tags if pipeline is UPGRADE_CLUSTER else set())]
        assert names.index(keep) < names.index(save) < names.index(first_change), names

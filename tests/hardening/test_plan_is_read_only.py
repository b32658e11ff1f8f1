"""While the engine plans (every check, the whole of a dry run) a host can only be read: a step that tries to
change it is stopped before anything is sent, and reported as the defect it is."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from support.memory import MemoryFleet

from kubexm.engine import Executor, HostContext, RunContext, RunOptions, RunReport, Step, Task, all_hosts
from kubexm.hosts.pool import ConnectionPool
from kubexm.hosts.shell import Cmd, sh
from kubexm.spec.loader import parse_cluster

CLUSTER = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: plan}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n1]}
""")


@dataclass(frozen=True)
class WritesInCheck(Step):
    """A defective step: its check creates a file."""

    async def check(self, host: HostContext) -> bool:
        await host.run(sh("touch", "/etc/marker"))
        return False

    async def run(self, host: HostContext) -> None:
        await host.run(sh("touch", "/etc/marker"))


@dataclass(frozen=True)
class UploadsInCheck(Step):
    async def check(self, host: HostContext) -> bool:
        await host.upload(b"x", "/etc/marker")
        return False

    async def run(self, host: HostContext) -> None:
        return None


@dataclass(frozen=True)
class Probe(Step):
    """A read-only step (runs during dry runs): here it tries to write."""

    mutates = False
    command: Cmd = field(default_factory=lambda: sh("true"))

    async def run(self, host: HostContext) -> None:
        await host.run(self.command)


@dataclass(frozen=True)
class Installs(Step):
    async def check(self, host: HostContext) -> bool:
        return (await host.run(sh("test", "-e", "/etc/marker", readonly=True), check=False)).ok

    async def run(self, host: HostContext) -> None:
        await host.run(sh("touch", "/etc/marker"))


def execute(step: Step, *, dry_run: bool) -> tuple[RunReport, MemoryFleet]:
    fleet = MemoryFleet(["n1"])
    options = RunOptions(dry_run=dry_run)
    run = RunContext(CLUSTER, options, pool=ConnectionPool(CLUSTER, options.connect, factory=fleet.factory))
    task = Task("T", hosts=all_hosts(), steps=[step])
    report = asyncio.run(Executor(run).run_tasks([(None, task)], "test"))
    return report, fleet


def sent(fleet: MemoryFleet) -> list[str]:
    return [c for c in fleet["n1"].commands if "/etc/os-release" not in c]


def test_a_check_that_writes_is_refused_before_anything_is_sent() -> None:
    for dry_run in (True, False):
        report, fleet = execute(WritesInCheck(), dry_run=dry_run)
        [failure] = report.failures
        assert "internal error" in failure.message and "not declared read-only" in failure.message
        assert not any("touch" in c for c in sent(fleet)), sent(fleet)


def test_an_upload_from_a_check_is_refused() -> None:
    report, fleet = execute(UploadsInCheck(), dry_run=True)
    assert report.failures and "not declared read-only" in report.failures[0].message
    assert "/etc/marker" not in fleet["n1"].files


def test_a_read_only_step_that_writes_during_a_dry_run_is_refused() -> None:
    report, fleet = execute(Probe(sh("touch", "/etc/marker")), dry_run=True)
    assert report.failures and not any("touch" in c for c in sent(fleet))
    report, fleet = execute(Probe(sh("uname", "-r", readonly=True)), dry_run=True)
    assert report.ok


def test_a_well_behaved_step_plans_then_runs() -> None:
    report, fleet = execute(Installs(), dry_run=True)
    assert [r.status for r in report.records] == ["would-change"]
    assert not any("touch" in c for c in sent(fleet))
    report, fleet = execute(Installs(), dry_run=False)
    assert [r.status for r in report.records] == ["changed"]
    assert any("touch" in c for c in sent(fleet))

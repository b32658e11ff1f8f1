"""The executor's contract, on in-memory hosts: barriers, strategies, dry-run, failures, retries."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from support.memory import MemoryFleet

from kubexm.engine import (
    SERIAL,
    Event,
    EventBus,
    Executor,
    HostContext,
    Module,
    Pipeline,
    RunContext,
    RunOptions,
    RunReport,
    Step,
    Task,
    all_hosts,
    role,
    rolling,
)
from kubexm.engine.task import Strategy
from kubexm.errors import AuthenticationError, CommandFailed, NotApplicable, UsageError
from kubexm.hosts.pool import ConnectionPool
from kubexm.hosts.shell import sh
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster

NAMES = ["n1", "n2", "n3", "n4"]


def cluster() -> Cluster:
    hosts = "\n".join(f"    - {{name: {n}, address: 10.0.0.{i + 1}}}" for i, n in enumerate(NAMES))
    return parse_cluster(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: eng}}
spec:
  hosts:
{hosts}
  roleGroups:
    etcd: [n1]
    control-plane: [n1]
    worker: [n2, n3, n4]
""")


@dataclass
class Log:
    """What steps did, in order, with timestamps (shared by the test's steps)."""

    entries: list[tuple[str, str, str, float]] = field(default_factory=list)
    active: int = 0
    peak: int = 0

    def add(self, what: str, host: str, step: str) -> None:
        self.entries.append((what, host, step, time.monotonic()))


@dataclass(frozen=True, eq=False)
class Probe(Step):
    """A step whose check/run results and delays the test controls."""

    label: str
    log: Log
    done_on: frozenset[str] = frozenset()
    fail_on: frozenset[str] = frozenset()
    na_on: frozenset[str] = frozenset()
    delay: dict[str, float] = field(default_factory=dict)
    read_only: bool = False

    @property
    def name(self) -> str:
        return self.label

    @property
    def mutates(self) -> bool:  # type: ignore[override]
        return not self.read_only

    def describe(self) -> str:
        return f"probe {self.label}"

    async def check(self, host: HostContext) -> bool:
        self.log.add("check", host.name, self.label)
        if host.name in self.na_on:
            raise NotApplicable("cannot here")
        return host.name in self.done_on

    async def run(self, host: HostContext) -> None:
        self.log.add("start", host.name, self.label)
        self.log.active += 1
        self.log.peak = max(self.log.peak, self.log.active)
        try:
            await asyncio.sleep(self.delay.get(host.name, 0.01))
            if host.name in self.fail_on:
                await host.run(sh("false-cmd", "--flag"), check=True)
        finally:
            self.log.active -= 1
        self.log.add("end", host.name, self.label)


def execute(tasks: list[Task], fleet: MemoryFleet | None = None, **opts: Any) -> tuple[RunReport, list[Event], MemoryFleet]:
    fleet = fleet or MemoryFleet(NAMES)
    fleet["n1"].on(r"false-cmd", lambda h, m, s: (2, "", "line1\nthe real reason\n"))
    for n in NAMES:
        fleet[n].on(r"false-cmd", lambda h, m, s: (2, "", "line1\nthe real reason\n"))
    c = cluster()
    events: list[Event] = []
    options = RunOptions(retry_backoff=0.01, **opts)
    run = RunContext(c, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    module = Module("M", tasks=tasks)
    report = asyncio.run(Executor(run).run_pipeline(Pipeline("P", [module])))
    return report, events, fleet


def statuses(report: RunReport, task: str | None = None) -> dict[tuple[str, str], str]:
    return {(r.host, r.step): r.status for r in report.records if task is None or r.task == task}


def test_tasks_are_barriers_and_hosts_walk_independently() -> None:
    log = Log()
    slow = {"n1": 0.3}
    t1 = Task("T1", steps=[Probe("a", log, delay=slow), Probe("b", log)])
    t2 = Task("T2", steps=[Probe("c", log)])
    report, _, _ = execute([t1, t2])
    assert report.ok
    ends_t1 = [t for what, _, step, t in log.entries if what == "end" and step in "ab"]
    starts_t2 = [t for what, _, step, t in log.entries if what == "start" and step == "c"]
    assert max(ends_t1) <= min(starts_t2)  # nobody starts T2 before every host finished T1
    # n2 ran its step b while n1 was still in its slow step a
    n2_b = next(t for what, h, s, t in log.entries if (what, h, s) == ("end", "n2", "b"))
    n1_a = next(t for what, h, s, t in log.entries if (what, h, s) == ("end", "n1", "a"))
    assert n2_b < n1_a


def test_parallel_bound_is_respected() -> None:
    log = Log()
    report, _, _ = execute([Task("T", steps=[Probe("a", log, delay=dict.fromkeys(NAMES, 0.05))])], parallel=2)
    assert report.ok and log.peak == 2


def test_serial_and_rolling_batches() -> None:
    log = Log()
    execute([Task("T", steps=[Probe("a", log, delay=dict.fromkeys(NAMES, 0.02))], strategy=SERIAL)])
    assert log.peak == 1
    log = Log()
    report, _, _ = execute([Task("T", steps=[Probe("a", log, fail_on=frozenset({"n2"}))], strategy=rolling(2))])
    assert not report.ok
    ran = {h for what, h, _, _ in log.entries if what == "start"}
    assert ran == {"n1", "n2"}  # the failed batch stops the roll: n3, n4 never start
    assert str(Strategy("rolling", batch=2)) == "2 at a time"


def test_then_steps_run_once_after_all_hosts_and_not_after_a_failure() -> None:
    log = Log()
    task = Task("T", steps=[Probe("a", log)], then=[Probe("after", log)])
    execute([task])
    afters = [e for e in log.entries if e[2] == "after" and e[0] == "start"]
    assert len(afters) == 1
    assert afters[0][3] >= max(t for what, _, s, t in log.entries if s == "a" and what == "end")
    log = Log()
    execute([Task("T", steps=[Probe("a", log, fail_on=frozenset({"n3"}))], then=[Probe("after", log)])])
    assert not [e for e in log.entries if e[2] == "after"]


def test_check_skips_run_and_second_run_changes_nothing() -> None:
    log = Log()
    report, _, _ = execute([Task("T", steps=[Probe("a", log, done_on=frozenset(NAMES))])])
    assert set(statuses(report).values()) == {"ok"}
    assert not [e for e in log.entries if e[0] == "start"]
    assert report.summary() == "4 ok"


def test_dry_run_checks_but_never_runs_mutating_steps() -> None:
    log = Log()
    steps = [Probe("a", log, done_on=frozenset({"n1"})), Probe("ro", log, read_only=True)]
    report, _, _ = execute([Task("T", steps=steps)], dry_run=True)
    st = statuses(report)
    assert st[("n1", "a")] == "ok" and st[("n2", "a")] == "would-change"
    assert st[("n2", "ro")] == "ok"
    started = {(h, s) for what, h, s, _ in log.entries if what == "start"}
    assert all(s == "ro" for _, s in started)


def test_offline_plan_never_connects() -> None:
    log = Log()
    fleet = MemoryFleet(NAMES)
    calls: list[object] = []

    def factory(host: object, options: object) -> Any:
        calls.append(host)
        return fleet.factory(host, options)

    fleet.factory = factory  # type: ignore[method-assign]
    report, _, _ = execute([Task("T", steps=[Probe("a", log)])], fleet=fleet, dry_run=True, offline=True)
    assert set(statuses(report).values()) == {"planned"}
    assert calls == [] and log.entries == []


def test_tags_and_skip_tags_and_nodes() -> None:
    log = Log()
    tasks = [Task("Etcd", steps=[Probe("e", log)], hosts=role("etcd"), tags=frozenset({"etcd"})),
             Task("Work", steps=[Probe("w", log)], hosts=role("worker"), tags=frozenset({"workers"}))]
    report, _, _ = execute(tasks, tags={"etcd"})
    assert report.tasks_run == ["Etcd"]
    report, _, _ = execute(tasks, skip_tags={"etcd"})
    assert report.tasks_run == ["Work"]
    report, _, _ = execute(tasks, nodes=["n3,n4"])
    assert {h for h, _ in statuses(report)} == {"n3", "n4"}
    with pytest.raises(UsageError, match="matches no host"):
        execute(tasks, nodes=["zz*"])


def test_disabled_module_is_skipped() -> None:
    log = Log()
    module = Module("Off", tasks=[Task("T", steps=[Probe("a", log)])], enabled=lambda c: False)
    assert Pipeline("P", [module]).plan(cluster()) == []


def test_failure_stops_host_reports_command_and_stops_run() -> None:
    log = Log()
    delay = {"n2": 0.2}
    t1 = Task("T1", steps=[Probe("a", log, fail_on=frozenset({"n1"}), delay=delay), Probe("b", log)])
    t2 = Task("T2", steps=[Probe("c", log)])
    report, _, _ = execute([t1, t2])
    assert not report.ok and report.stopped_at == "T1" and "T2" not in report.tasks_run
    (fail,) = report.failures
    assert (fail.host, fail.task, fail.step, fail.command, fail.exit_status) == ("n1", "T1", "a", "false-cmd --flag", 2)
    assert fail.stderr == "line1 | the real reason"
    st = statuses(report)
    assert st[("n2", "a")] == "changed"  # n2 finished the step it was in
    assert st[("n2", "b")] == "skipped"  # but started nothing new
    assert ("n1", "b") not in st


def test_on_failure_continue_lets_others_finish() -> None:
    log = Log()
    report, _, _ = execute([Task("T", steps=[Probe("a", log, fail_on=frozenset({"n1"})), Probe("b", log)],
                                 on_failure="continue")])
    st = statuses(report)
    assert st[("n1", "a")] == "failed" and all(st[(n, "b")] == "changed" for n in ("n2", "n3", "n4"))


@dataclass(frozen=True)
class Remote(Step):
    async def run(self, host: HostContext) -> None:
        await host.run(sh("echo", "hi"))


def test_connection_faults_are_retried_with_growing_backoff() -> None:
    fleet = MemoryFleet(NAMES)
    fleet["n2"].fail_next_commands = 2
    report, events, _ = execute([Task("T", steps=[Remote()])], fleet=fleet, retries=3)
    assert report.ok
    retries = [e for e in events if e.kind == "host.retry"]
    assert [e.host for e in retries] == ["n2", "n2"]
    assert "in 0.0s" in retries[0].message or "in 0.01" in retries[0].message
    assert fleet["n2"].connects == 3  # the pool reconnected after each fault
    fleet = MemoryFleet(NAMES)
    fleet["n2"].fail_next_commands = 10
    report, _, _ = execute([Task("T", steps=[Remote()])], fleet=fleet, retries=2)
    assert "gave up after 2 retries" in report.failures[0].message


@dataclass(frozen=True)
class Denied(Step):
    calls: list[int]

    async def run(self, host: HostContext) -> None:
        self.calls.append(1)
        raise AuthenticationError(f"{host.name}: rejected")


def test_permanent_errors_are_not_retried_and_not_applicable_is_not_failure() -> None:
    calls: list[int] = []
    report, _, _ = execute([Task("T", steps=[Denied(calls)], hosts=role("etcd"))], retries=3)
    assert len(calls) == 1 and report.failures[0].message == "n1: rejected"
    log = Log()
    report, _, _ = execute([Task("T", steps=[Probe("a", log, na_on=frozenset({"n1"}))])])
    assert report.ok and statuses(report)[("n1", "a")] == "not-applicable"


@dataclass(frozen=True)
class Facts2(Step):
    async def run(self, host: HostContext) -> None:
        await host.facts()
        await host.facts()


def test_facts_are_gathered_once_per_host_per_run() -> None:
    fleet = MemoryFleet(NAMES)
    execute([Task("A", steps=[Facts2()]), Task("B", steps=[Facts2()])], fleet=fleet)
    assert sum("/etc/os-release" in c for c in fleet["n1"].commands) == 1


def test_upload_skips_when_checksum_matches_and_template_is_strict(tmp_path: Any) -> None:
    from kubexm.steps.common import PutFile, Template

    fleet = MemoryFleet(NAMES)
    report, _, _ = execute([Task("T", steps=[PutFile(b"abc", "/etc/x.conf", 0o600)], hosts=role("etcd"))], fleet=fleet)
    assert statuses(report)[("n1", "PutFile")] == "changed" and fleet["n1"].modes["/etc/x.conf"] == 0o600
    report, _, _ = execute([Task("T", steps=[PutFile(b"abc", "/etc/x.conf", 0o600)], hosts=role("etcd"))], fleet=fleet)
    assert statuses(report)[("n1", "PutFile")] == "ok"
    assert sum(c.startswith("<put") for c in fleet["n1"].commands) == 1
    report, _, _ = execute([Task("T", steps=[Template("no-such.j2", "/etc/y")], hosts=role("etcd"))], fleet=fleet)
    assert not report.ok and "no-such.j2" in report.failures[0].message


def test_failed_command_in_check_does_not_crash() -> None:
    @dataclass(frozen=True)
    class Bad(Step):
        async def check(self, host: HostContext) -> bool:
            raise CommandFailed(host.name, "probe", 1, "nope")

        async def run(self, host: HostContext) -> None:
            return None

    report, _, _ = execute([Task("T", steps=[Bad()], hosts=role("etcd"))], dry_run=True)
    (rec,) = report.records
    assert rec.status == "would-change" and "check:" in rec.message


def test_registry_rejects_duplicates_and_loads_plugins(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubexm.engine import registry as reg

    r = reg.Registry()
    t = Task("Same", steps=[])
    r.add_task(t)
    r.add_task(t)
    with pytest.raises(ValueError, match="two different tasks are named Same"):
        r.add_task(Task("Same", steps=[]))
    with pytest.raises(UsageError, match="no task named 'Sam'"):
        r.task("Sam")

    plugin_task = Task("PluginTask", steps=[])

    class EntryPoint:
        def load(self) -> Any:
            return lambda registry: registry.add_module(Module("PluginModule", [plugin_task]))

    monkeypatch.setattr(reg, "entry_points", lambda group: [EntryPoint()] if group == "kubexm.plugins" else [])
    monkeypatch.setattr(reg, "_REGISTRY", None)
    loaded = reg.get_registry()
    assert loaded.task("PluginTask") is plugin_task
    assert "CreateClusterPipeline" in loaded.pipelines
    monkeypatch.setattr(reg, "_REGISTRY", None)


def test_all_hosts_selector_and_events() -> None:
    log = Log()
    _, events, _ = execute([Task("T", steps=[Probe("a", log)], hosts=all_hosts())])
    kinds = [e.kind for e in events]
    assert kinds[0] == "run.start" and kinds[-1] == "run.end"
    assert kinds.count("step.end") == 4

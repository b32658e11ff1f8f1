"""Every command a step sends has a limit by kind of work: read-only commands the check limit, others the
command limit, long work what the step asks for; --command-timeout replaces the defaults."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest
from support.memory import MemoryConnection, MemoryFleet

from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, Task, all_hosts
from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.hosts.base import CHECK_TIMEOUT, COMMAND_TIMEOUT, LONG_TIMEOUT, CommandResult, Connection, ConnectOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.hosts.shell import Cmd, sh
from kubexm.spec.loader import parse_cluster

CLUSTER = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: limits}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n1]}
""")


class Recording(MemoryConnection):
    """What the transport is asked to do: (command, timeout) per command."""

    seen: list[tuple[str, float | None]]

    async def run(self, command: str, *, sudo: bool = True, stdin: bytes | str | None = None,
                  timeout: float | None = None) -> CommandResult:
        self.seen.append((command, timeout))
        return await super().run(command, sudo=sudo, stdin=stdin, timeout=timeout)


def context(connect: ConnectOptions | None = None) -> tuple[RunContext, list[tuple[str, float | None]]]:
    fleet = MemoryFleet(["n1"])
    seen: list[tuple[str, float | None]] = []

    def factory(host: object, options: object) -> Connection:
        conn = Recording(fleet["n1"])
        conn.seen = seen
        return conn

    options = RunOptions(connect=connect or ConnectOptions())
    return RunContext(CLUSTER, options, bus=EventBus([lambda e: None]),
                      pool=ConnectionPool(CLUSTER, options.connect, factory=factory)), seen


def limit_of(seen: list[tuple[str, float | None]], command: str) -> float | None:
    [limit] = [t for c, t in seen if c == command]
    return limit


def test_read_only_commands_get_the_check_limit_others_the_command_limit() -> None:
    run, seen = context()
    host = run.host("n1")

    async def go() -> None:
        await host.run(sh("systemctl", "is-active", "-q", "kubelet", readonly=True), check=False)
        await host.run(sh("systemctl", "restart", "kubelet"))
        await host.run(sh("apt-get", "install", "-y", "socat"), timeout=host.timeout_for("long"))
        await host.run(sh("cat", "/etc/hostname", readonly=True), check=False, timeout=7)
        await host.facts()
        await run.close()

    asyncio.run(go())
    assert limit_of(seen, "systemctl is-active -q kubelet") == CHECK_TIMEOUT
    assert limit_of(seen, "systemctl restart kubelet") == COMMAND_TIMEOUT
    assert limit_of(seen, "apt-get install -y socat") == LONG_TIMEOUT  # long work asks for its own
    assert limit_of(seen, "cat /etc/hostname") == 7  # a step's own bound wins
    facts = [t for c, t in seen if "/etc/os-release" in c]
    assert facts == [CHECK_TIMEOUT]
    assert CHECK_TIMEOUT < COMMAND_TIMEOUT < LONG_TIMEOUT


def test_the_command_timeout_option_replaces_every_default_but_not_a_steps_own_bound() -> None:
    run, seen = context(ConnectOptions(command_timeout=42))
    host = run.host("n1")

    async def go() -> None:
        await host.run(sh("test", "-e", "/etc/kubexm", readonly=True), check=False)
        await host.run(sh("systemctl", "daemon-reload"))
        await host.run(sh("kubeadm", "reset", "-f"), timeout=host.timeout_for("long"))
        await host.run(sh("systemctl", "stop", "etcd"), timeout=5)
        await run.close()

    asyncio.run(go())
    assert [t for _, t in seen] == [42, 42, 42, 5]


@dataclass(frozen=True)
class Probe(Step):
    """Checks with one read-only command, acts with one mutating command."""

    path: str

    async def check(self, host: HostContext) -> bool:
        return (await host.run(self.check_script(host), check=False)).ok

    def check_script(self, host: HostContext) -> Cmd:  # several steps are asked in one batched command
        return sh("test", "-e", self.path, readonly=True)

    async def run(self, host: HostContext) -> None:
        await host.run(sh("touch", self.path))


@pytest.mark.parametrize("steps", [1, 3], ids=["alone", "batched"])
def test_through_the_executor_checks_and_batches_get_the_check_limit(steps: int) -> None:
    run, seen = context()
    probes = [Probe(f"/srv/p{i}") for i in range(steps)]
    task = Task("Probes", probes, hosts=all_hosts())
    report = asyncio.run(Executor(run).run_tasks([(Module("M", [task]), task)]))
    assert report.ok and report.count("changed") == steps
    checks = [t for c, t in seen if c.startswith("test -e") or c.startswith("if ( test -e")]
    touches = [t for c, t in seen if c.startswith("touch")]
    assert checks and set(checks) == {CHECK_TIMEOUT}
    assert touches == [COMMAND_TIMEOUT] * steps
    if steps > 1:
        assert any(c.startswith("if ( test -e") for c, _ in seen)  # really went through the batch

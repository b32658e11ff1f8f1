"""Dialing at fleet size: transient errors retried within the budget, answers not retried, queued dials not
charged, handshakes bounded; the pool waits for a dead host once per run."""

from __future__ import annotations

import asyncio
import errno
import time

import pytest

from kubexm.errors import ConnectionFault, HostUnreachable
from kubexm.hosts import dial as dialmod
from kubexm.hosts.base import ConnectOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.spec.models import Cluster


async def test_no_route_is_retried_until_the_host_answers() -> None:
    calls: list[float] = []

    async def attempt(budget: float) -> str:
        calls.append(budget)
        if len(calls) < 3:
            raise OSError(errno.EHOSTUNREACH, "No route to host")
        return "connected"

    assert await dialmod.dial(attempt, 5.0) == "connected"
    assert len(calls) == 3
    assert calls[1] < calls[0]  # one budget for the host, not one per attempt


async def test_refused_and_timed_out_are_answers_not_retried() -> None:
    for exc in (ConnectionRefusedError(errno.ECONNREFUSED, "refused"), TimeoutError()):
        calls = 0

        async def attempt(budget: float, exc: BaseException = exc) -> None:
            nonlocal calls
            calls += 1
            raise exc

        with pytest.raises(type(exc)):
            await dialmod.dial(attempt, 5.0)
        assert calls == 1


async def test_transient_errors_stop_when_the_budget_is_spent() -> None:
    calls = 0

    async def attempt(budget: float) -> None:
        nonlocal calls
        calls += 1
        raise OSError(errno.ENETUNREACH, "Network is unreachable")

    start = time.monotonic()
    with pytest.raises(OSError) as info:
        await dialmod.dial(attempt, 0.6)
    assert info.value.errno == errno.ENETUNREACH
    assert calls >= 2
    assert time.monotonic() - start < 0.6 + dialmod.MAX_BACKOFF


async def test_a_queued_dial_gets_its_whole_budget_and_handshakes_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_DIAL_LIMIT", "2")
    in_flight = peak = 0
    budgets: list[float] = []

    async def attempt(budget: float) -> None:
        nonlocal in_flight, peak
        budgets.append(budget)
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.2)
        in_flight -= 1

    await asyncio.gather(*(dialmod.dial(attempt, 0.3) for _ in range(6)))
    assert peak == 2
    # The last two waited 0.4 s for a slot, longer than the 0.3 s budget, and still got all of it.
    assert min(budgets) > 0.25


def test_connect_timeout_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubexm.errors import UsageError

    monkeypatch.setenv("KUBEXM_CONNECT_TIMEOUT", "4.5")
    assert dialmod.connect_timeout() == 4.5
    for bad in ("soon", "0", "-3", "100000"):
        monkeypatch.setenv("KUBEXM_CONNECT_TIMEOUT", bad)
        with pytest.raises(UsageError, match="KUBEXM_CONNECT_TIMEOUT"):
            dialmod.connect_timeout()


class _Dead:
    dials = 0

    def __init__(self, name: str) -> None:
        self.name = name

    async def open(self) -> None:
        type(self).dials += 1
        raise HostUnreachable(f"{self.name}: cannot connect: connection refused")

    async def close(self) -> None:
        return None


def _cluster() -> Cluster:
    return Cluster.model_validate({
        "apiVersion": "kubexm.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "c"},
        "spec": {"hosts": [{"name": f"n{i}", "address": f"10.9.0.{i}", "user": "root"} for i in range(1, 4)],
                 "roleGroups": {"etcd": ["n1"], "control-plane": ["n1"], "worker": ["n2", "n3"]}}})


async def test_the_pool_waits_for_a_dead_host_once_per_run() -> None:
    _Dead.dials = 0
    pool = ConnectionPool(_cluster(), ConnectOptions(), factory=lambda host, opts: _Dead(host.name if host else "-"))
    await asyncio.wait(pool.dial_each(["n1", "n2", "n3"]).values())
    assert _Dead.dials == 3
    for _ in range(3):  # later tasks and steps ask again: answered from the first failure
        with pytest.raises(HostUnreachable, match="n2: cannot connect"):
            await pool.get("n2")
    assert _Dead.dials == 3


async def test_a_host_that_answered_earlier_in_the_run_stays_retryable() -> None:
    state = {"up": True}

    class Flaky(_Dead):
        async def open(self) -> None:
            if not state["up"]:
                await super().open()

    pool = ConnectionPool(_cluster(), ConnectOptions(), factory=lambda host, opts: Flaky("n1"))
    await pool.get("n1")
    await pool.reset("n1")
    state["up"] = False  # sshd restarting: the engine's retries apply, as for any transport fault
    with pytest.raises(ConnectionFault) as info:
        await pool.get("n1")
    assert not isinstance(info.value, HostUnreachable)
    state["up"] = True
    await pool.get("n1")


async def test_a_live_host_runs_its_steps_while_a_dead_host_is_still_being_dialled() -> None:
    """No barrier after dialing: each host waits for its own connection only (the slow dial of a host whose
    packets are dropped must not delay the fleet's commands by a connect timeout)."""
    from support.memory import MemoryConnection, MemoryFleet

    from kubexm.engine import EventBus, Executor, Module, Pipeline, RunContext, RunOptions, Task
    from kubexm.steps.common import Command

    fleet = MemoryFleet(["n1", "n2", "n3"])
    dead_dial_ends: list[float] = []

    class Slow(MemoryConnection):
        async def open(self) -> None:
            if self.name == "n2":
                await asyncio.sleep(1.0)  # a dropped host: nothing answers until its timeout
                dead_dial_ends.append(time.monotonic())
                raise HostUnreachable("n2: cannot connect to 10.9.0.2:22: timed out")
            await super().open()

    cluster = _cluster()
    options = RunOptions()
    done: dict[str, float] = {}

    def record(event: object) -> None:
        if getattr(event, "kind", "") == "step.end":
            done[getattr(event, "host", "")] = time.monotonic()

    run = RunContext(cluster, options, bus=EventBus([record]),
                     pool=ConnectionPool(cluster, options.connect, factory=lambda h, o: Slow(fleet[h.name])))
    task = Task("T", steps=[Command("true", sudo=False)])
    report = await Executor(run).run_pipeline(Pipeline("P", [Module("M", tasks=[task])]))
    assert [r.host for r in report.failures] == ["n2"]
    assert done["n1"] < dead_dial_ends[0] and done["n3"] < dead_dial_ends[0]

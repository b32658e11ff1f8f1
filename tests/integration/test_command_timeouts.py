"""Every remote command has a limit, and a timed-out or cancelled command is killed on the host, not only
abandoned: directly over SSH, through the connection keeper, as the login user and as root through sudo."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubexm.engine import RunContext, RunOptions
from kubexm.hosts import kept
from kubexm.hosts.base import CHECK_TIMEOUT, COMMAND_TIMEOUT, LONG_TIMEOUT, Connection, ConnectOptions
from kubexm.hosts.local import LocalConnection
from kubexm.hosts.ssh import SSHConnection
from kubexm.spec.models import Host

from .conftest import SSHD
from .test_connection_keeper import cluster, keeper_pids

pytestmark = pytest.mark.integration

_serial = itertools.count(1)


def marker() -> str:
    """A sleep duration no other process uses, so the test can find exactly its own command on the host."""
    return f"300.{os.getpid() % 1000:03d}{next(_serial):03d}"


def running(duration: str) -> list[int]:
    """Pids whose command line is ``sleep <duration>`` (the host is this machine)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[:2] == [b"sleep", duration.encode()]:
                found.append(int(entry))
    return found


def owner(pid: int) -> int:
    return os.stat(f"/proc/{pid}").st_uid


async def started(duration: str, within: float = 10) -> list[int]:
    deadline = time.monotonic() + within
    while not (pids := running(duration)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert pids, f"sleep {duration} never started"
    return pids


async def gone(duration: str, within: float = 6) -> bool:
    deadline = time.monotonic() + within
    while running(duration) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return not running(duration)


def host(sshd: SSHD) -> Host:
    return Host.model_validate({"name": "n1", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                                "privateKeyPath": str(sshd.key), "sudoPassword": sshd.password})


def test_every_kind_of_work_has_a_default_limit_and_the_flag_replaces_them() -> None:
    opts = ConnectOptions()
    assert (opts.timeout_for("check"), opts.timeout_for("command"), opts.timeout_for("long")) == \
        (CHECK_TIMEOUT, COMMAND_TIMEOUT, LONG_TIMEOUT)
    assert opts.limit(None) == COMMAND_TIMEOUT and opts.limit(5) == 5
    forced = ConnectOptions(command_timeout=42)
    assert forced.timeout_for("check") == forced.timeout_for("long") == forced.limit(None) == 42
    assert forced.limit(7) == 7  # a step that knows its own bound keeps it


@pytest.mark.parametrize("sudo", [False, True])
async def test_a_timeout_kills_the_remote_command(sshd: SSHD, sudo: bool) -> None:
    conn = SSHConnection(host(sshd), ConnectOptions())
    duration = marker()
    try:
        began = time.monotonic()
        res = await conn.run(f"echo before; sleep {duration}; echo never", sudo=sudo, timeout=2)
        assert res.exit_status == 124 and "timed out after 2s" in res.stderr
        assert res.stdout == "before\n" and "kubexm-pid" not in res.stderr
        assert time.monotonic() - began < 10
        assert await gone(duration)
        # The connection still serves the next command.
        assert (await conn.run("echo still", sudo=sudo)).stdout == "still\n"
    finally:
        await conn.close()


@pytest.mark.parametrize("sudo", [False, True])
async def test_a_cancelled_command_is_killed_on_the_host(sshd: SSHD, sudo: bool) -> None:
    conn = SSHConnection(host(sshd), ConnectOptions())
    duration = marker()
    try:
        task = asyncio.create_task(conn.run(f"sleep {duration}", sudo=sudo))
        pids = await started(duration)
        assert owner(pids[0]) == (0 if sudo else sshd_uid(sshd))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # Stopped by the time the cancellation returns: a run releases its lock only after this.
        assert not running(duration)
        assert (await conn.run("echo still", sudo=sudo)).stdout == "still\n"
    finally:
        await conn.close()


async def test_a_command_that_ignores_sigterm_is_killed(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd), ConnectOptions())
    duration = marker()
    try:
        task = asyncio.create_task(conn.run(f"trap '' TERM; sleep {duration}; echo survived", sudo=True))
        await started(duration)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await gone(duration)
    finally:
        await conn.close()


async def test_exit_status_stdin_and_stderr_are_unchanged_by_the_guard(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd), ConnectOptions())
    try:
        res = await conn.run("cat; echo oops >&2; exit 3", sudo=True, stdin=b"in\n")
        assert (res.exit_status, res.stdout, res.stderr) == (3, "in\n", "oops\n")
        res = await conn.run("id -u", sudo=True)
        assert res.stdout == "0\n" and res.stderr == ""
    finally:
        await conn.close()


def sshd_uid(sshd: SSHD) -> int:
    import pwd

    return pwd.getpwnam(sshd.user).pw_uid


@pytest.fixture
def stop_keeper(kubexm_home: Path):  # type: ignore[no-untyped-def]
    yield kubexm_home
    for pid in keeper_pids(kubexm_home):
        os.kill(pid, 15)


@pytest.mark.parametrize("sudo", [False, True])
async def test_through_the_keeper_a_timeout_and_a_cancel_kill_the_command(
        sshd: SSHD, stop_keeper: Path, sudo: bool) -> None:
    c = cluster(sshd, sshd.key, sudoPassword=sshd.password)
    run = RunContext(c, RunOptions(connect=ConnectOptions(persist=30)))
    try:
        conn = await run.pool.get("n1")
        assert isinstance(conn, kept.KeptConnection)
        duration = marker()
        res = await conn.run(f"sleep {duration}", sudo=sudo, timeout=2)
        assert res.exit_status == 124 and await gone(duration)

        duration = marker()
        task = asyncio.create_task(conn.run(f"sleep {duration}", sudo=sudo))
        await started(duration)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert not running(duration)
        # The stream was given up; the next call binds a new one on the same keeper.
        assert (await conn.run("echo again", sudo=sudo)).stdout == "again\n"
        assert len(keeper_pids(stop_keeper)) == 1
    finally:
        await run.close()


async def test_a_client_that_goes_away_mid_command_gets_it_killed_by_the_keeper(
        sshd: SSHD, stop_keeper: Path, tmp_path: Path) -> None:
    # A kubexm process killed outright (SIGKILL) cannot ask for anything: its stream just closes.
    script = tmp_path / "client.py"
    duration = marker()
    script.write_text(
        "import asyncio, sys\n"
        "from kubexm.engine import RunContext, RunOptions\n"
        "from kubexm.hosts.base import ConnectOptions\n"
        "from kubexm.spec.loader import parse_cluster\n"
        "async def main():\n"
        "    c = parse_cluster(open(sys.argv[1]).read())\n"
        "    run = RunContext(c, RunOptions(connect=ConnectOptions(persist=30)))\n"
        "    conn = await run.pool.get('n1')\n"
        f"    await conn.run('sleep {duration}', sudo=True)\n"
        "asyncio.run(main())\n")
    spec = tmp_path / "c.yaml"
    spec.write_text(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata: {name: keep}\nspec:\n  hosts:\n"
        + sshd.host_yaml("n1", privateKeyPath=str(sshd.key), sudoPassword=sshd.password)
        + "  roleGroups:\n    etcd: [n1]\n    control-plane: [n1]\n    worker: [n1]\n")
    env = dict(os.environ, KUBEXM_HOME=str(stop_keeper))
    client = subprocess.Popen([sys.executable, str(script), str(spec)], env=env)
    try:
        await started(duration, within=30)
        client.kill()
        client.wait(5)
        assert await gone(duration)
    finally:
        if client.poll() is None:
            client.kill()


@pytest.mark.parametrize("sudo", [False, True])
async def test_local_commands_are_limited_and_killed_too(sudo: bool) -> None:
    conn: Connection = LocalConnection("local")
    duration = marker()
    res = await conn.run(f"sleep {duration}", sudo=sudo, timeout=1)
    assert res.exit_status == 124 and await gone(duration)
    duration = marker()
    task = asyncio.create_task(conn.run(f"sleep {duration}", sudo=sudo))
    await started(duration)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not running(duration)

"""The connection keeper against a real sshd: later runs reuse the SSH connection of an earlier one, errors
arrive as the same kubexm errors, a connection cut between runs is re-dialled, the keeper leaves when idle."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubexm.engine import RunContext, RunOptions
from kubexm.errors import AuthenticationError
from kubexm.hosts import keeper, kept
from kubexm.hosts.base import ConnectOptions
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster

from .conftest import SSHD

pytestmark = pytest.mark.integration


def cluster(sshd: SSHD, key: Path, **fields: object) -> Cluster:
    return parse_cluster(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata: {name: keep}\nspec:\n  hosts:\n"
        + sshd.host_yaml("n1", privateKeyPath=str(key), **fields)
        + "  roleGroups:\n    etcd: [n1]\n    control-plane: [n1]\n    worker: [n1]\n")


async def one_run(c: Cluster, command: str, persist: float = 30) -> str:
    """What a kubexm process does: a run context, one command on n1, close."""
    run = RunContext(c, RunOptions(connect=ConnectOptions(persist=persist)))
    try:
        conn = await run.pool.get("n1")
        res = await conn.run(command, sudo=False)
        assert res.ok, res.stderr
        return res.stdout.strip()
    finally:
        await run.close()


def keeper_socket(home: Path) -> Path:
    return home / "run" / f"keeper-v{keeper.PROTOCOL}.sock"


def keeper_pids(home: Path) -> list[int]:
    out = subprocess.run(["pgrep", "-f", f"kubexm.hosts.keeper {keeper_socket(home)}"],
                         capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


@pytest.fixture
def stop_keeper(kubexm_home: Path):  # type: ignore[no-untyped-def]
    yield kubexm_home
    for pid in keeper_pids(kubexm_home):
        os.kill(pid, 15)


async def test_second_run_uses_the_first_runs_connection(sshd: SSHD, stop_keeper: Path) -> None:
    c = cluster(sshd, sshd.key)
    # SSH_CONNECTION names the client's source port: the same port means the same TCP connection.
    first = await one_run(c, "echo $SSH_CONNECTION")
    second = await one_run(c, "echo $SSH_CONNECTION")
    assert first == second and first.startswith("127.0.0.1 ")
    # A direct run (no keeper) dials its own connection.
    assert await one_run(c, "echo $SSH_CONNECTION", persist=0) != first
    assert len(keeper_pids(stop_keeper)) == 1
    sock = keeper_socket(stop_keeper)
    assert sock.stat().st_mode & 0o777 == 0o600 and (stop_keeper / "run").stat().st_mode & 0o777 == 0o700


async def test_files_sudo_and_streams_go_through_the_keeper(sshd: SSHD, stop_keeper: Path, tmp_path: Path) -> None:
    c = cluster(sshd, sshd.key, sudoPassword=sshd.password)
    run = RunContext(c, RunOptions(connect=ConnectOptions(persist=30)))
    try:
        conn = await run.pool.get("n1")
        assert isinstance(conn, kept.KeptConnection)
        assert (await conn.run("id -un")).stdout.strip() == "root"  # sudo with the password over the socket
        await conn.put(b"from bytes\n", "/root/kx-keeper-a", mode=0o600)
        large = os.urandom(keeper.INLINE_LIMIT + 1)  # beyond the inline limit: passed as a temp file
        await conn.put(large, "/root/kx-keeper-c")
        assert (await conn.run("sha256sum /root/kx-keeper-c")).stdout.split()[0] == hashlib.sha256(large).hexdigest()
        assert not list((stop_keeper / "run").glob(".put-*"))
        src = tmp_path / "big.bin"
        src.write_bytes(os.urandom(3 << 20))
        await conn.put(src, "/root/kx-keeper-b")
        back = tmp_path / "back.bin"
        await conn.get("/root/kx-keeper-b", back)
        assert back.read_bytes() == src.read_bytes()
        res = await conn.run_streaming("sha256sum", src)
        assert res.stdout.split()[0] == hashlib.sha256(src.read_bytes()).hexdigest()
        stat = await conn.run("stat -c %a /root/kx-keeper-a && cat /root/kx-keeper-a")
        assert stat.stdout.split() == ["600", "from", "bytes"]
        # The sudo password is in no process's argv, the keeper's included.
        for pid in keeper_pids(stop_keeper):
            assert sshd.password.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
    finally:
        await conn.run("rm -f /root/kx-keeper-a /root/kx-keeper-b /root/kx-keeper-c")
        await run.close()


async def test_errors_arrive_as_kubexm_errors(sshd: SSHD, stop_keeper: Path, tmp_path: Path) -> None:
    stranger = tmp_path / "id_stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(AuthenticationError, match="rejected the credentials") as info:
        await one_run(cluster(sshd, stranger), "true")
    assert info.value.hint and "authorized_keys" in info.value.hint
    assert await one_run(cluster(sshd, sshd.key), "echo fine") == "fine"  # the keeper itself is unharmed


async def test_connection_cut_between_runs_is_dialled_again(sshd: SSHD, stop_keeper: Path) -> None:
    c = cluster(sshd, sshd.key)
    first = await one_run(c, "echo $SSH_CONNECTION")
    assert sshd.kill_sessions() > 0  # the keeper's connection dies while no run uses it
    await asyncio.sleep(keeper.PROBE_AFTER + 0.5)
    second = await one_run(c, "echo $SSH_CONNECTION")
    assert second != first


async def test_idle_keeper_exits_and_removes_its_socket(sshd: SSHD, stop_keeper: Path) -> None:
    await one_run(cluster(sshd, sshd.key), "true", persist=1)
    sock = keeper_socket(stop_keeper)
    assert sock.exists()
    deadline = time.monotonic() + 10
    while keeper_pids(stop_keeper) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert not keeper_pids(stop_keeper) and not sock.exists()


async def test_no_keeper_possible_means_a_direct_connection(
        sshd: SSHD, stop_keeper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", "/bin/false")  # the keeper cannot start
    monkeypatch.setattr(keeper, "_started", {})
    assert await one_run(cluster(sshd, sshd.key), "echo direct") == "direct"
    assert not keeper_pids(stop_keeper)


async def test_keeper_started_ahead_of_a_run_serves_it(
        sshd: SSHD, stop_keeper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper, "_started", {})
    monkeypatch.setenv("KUBEXM_PERSIST", "30")
    keeper.prestart()  # what a command line that reaches hosts does before loading anything else
    [early] = keeper_pids(stop_keeper)
    keeper.prestart()  # a second call in the same process starts nothing more
    assert await one_run(cluster(sshd, sshd.key), "echo served") == "served"
    assert keeper_pids(stop_keeper) == [early]


async def test_no_keeper_is_started_ahead_when_turned_off(
        stop_keeper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(keeper, "_started", {})
    monkeypatch.setenv("KUBEXM_PERSIST", "0")
    keeper.prestart()
    assert not keeper_pids(stop_keeper) and not keeper_socket(stop_keeper).exists()


async def test_keeper_that_never_gets_a_client_leaves_early(stop_keeper: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. the run stopped at a malformed cluster file: its keeper does not wait out the whole persist time.
    monkeypatch.setattr(keeper, "_started", {})
    sock = keeper.socket_path()
    assert sock == keeper_socket(stop_keeper)
    proc = keeper.start(sock, persist=300, unused_grace=1)
    assert proc is not None
    deadline = time.monotonic() + 10
    while not sock.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert sock.exists()
    assert proc.wait(timeout=10) == 0
    assert not sock.exists()


def test_keeper_dials_without_loading_the_spec_models() -> None:
    # The keeper gets plain Login dicts; pydantic would cost it ~20 MB and part of a first run's start-up.
    probe = ("import sys, kubexm.hosts.keeper, kubexm.hosts.ssh; "
             "print(sorted(m for m in sys.modules if m.startswith(('pydantic', 'kubexm.spec'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_a_command_line_that_reaches_hosts_starts_the_keeper_first(stop_keeper: Path, tmp_path: Path) -> None:
    env = dict(os.environ, KUBEXM_HOME=str(stop_keeper), KUBEXM_PERSIST="30")
    kubexm = [sys.executable, "-m", "kubexm"]
    # A command that reaches no host starts none.
    subprocess.run([*kubexm, "create", "config", "-o", str(tmp_path / "c.yaml")], env=env, capture_output=True)
    assert not keeper_pids(stop_keeper)
    # One that does starts it before it even reads the cluster file (here: a missing one).
    res = subprocess.run([*kubexm, "run", "command", "-f", str(tmp_path / "missing.yaml"), "--", "true"],
                         env=env, capture_output=True, text=True)
    assert res.returncode != 0 and "missing.yaml" in res.stderr
    assert len(keeper_pids(stop_keeper)) == 1

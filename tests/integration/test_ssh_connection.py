"""SSHConnection against a real OpenSSH sshd: auth modes, sudo, files, host keys, faults."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import time
from pathlib import Path

import pytest

from kubexm.engine import Event, EventBus, Executor, RunContext, RunOptions
from kubexm.errors import AuthenticationError, ConnectionFault, HostKeyError
from kubexm.hosts.base import ConnectOptions
from kubexm.hosts.shell import sh, user_shell
from kubexm.hosts.ssh import SSHConnection
from kubexm.pipelines.adhoc import RUN_COMMAND
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Host

from .conftest import SSHD

pytestmark = pytest.mark.integration


def host(sshd: SSHD, **fields: object) -> Host:
    base: dict[str, object] = {"name": "n1", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user}
    base.update(fields)
    return Host.model_validate(base)


async def whoami(conn: SSHConnection, sudo: bool) -> str:
    res = await conn.run("id -un", sudo=sudo)
    assert res.ok, res.stderr
    return res.stdout.strip()


@pytest.mark.parametrize("auth", ["key", "key+passphrase", "password"])
async def test_auth_modes_and_sudo(sshd: SSHD, auth: str) -> None:
    fields: dict[str, object] = {
        "key": {"privateKeyPath": str(sshd.key), "sudoPassword": sshd.password},
        "key+passphrase": {"privateKeyPath": str(sshd.encrypted_key), "privateKeyPassphrase": sshd.passphrase,
                           "sudoPassword": sshd.password},
        "password": {"password": sshd.password},
    }[auth]
    conn = SSHConnection(host(sshd, **fields), ConnectOptions())
    try:
        assert await whoami(conn, sudo=False) == sshd.user
        assert await whoami(conn, sudo=True) == "root"
    finally:
        await conn.close()


async def test_sudo_password_never_in_argv(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key), sudoPassword=sshd.password), ConnectOptions())
    try:
        task = asyncio.create_task(conn.run("sleep 1.5"))
        seen: list[str] = []
        for _ in range(10):
            await asyncio.sleep(0.1)
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
                    except OSError:
                        continue
        assert (await task).ok
        assert any("sleep 1.5" in line for line in seen), "the sudo command was never observed running"
        assert not any(sshd.password in line for line in seen)
    finally:
        await conn.close()


async def test_wrong_sudo_password_is_a_clear_error(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key), sudoPassword="not-the-password"), ConnectOptions())
    try:
        with pytest.raises(AuthenticationError, match="sudo refused"):
            await asyncio.wait_for(conn.run("true"), 20)
    finally:
        await conn.close()


async def test_wrong_password_is_authentication_error(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd, password="wrong-one"), ConnectOptions())
    with pytest.raises(AuthenticationError, match=f"{sshd.user}@127.0.0.1:{sshd.port} rejected"):
        await conn.open()


async def test_nothing_listening_is_connection_fault() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conn = SSHConnection(Host(name="gone", address="127.0.0.1", port=port), ConnectOptions(connect_timeout=10))
    started = time.monotonic()
    with pytest.raises(ConnectionFault, match=f"gone: cannot connect to 127.0.0.1:{port}: connection refused") as err:
        await conn.open()
    assert time.monotonic() - started < 2, "a refused port must fail at once, not after the connect timeout"
    assert err.value.hint and "sshd listens" in err.value.hint


def cluster_yaml(sshd: SSHD, names: list[str], **fields: object) -> str:
    hosts = "".join(sshd.host_yaml(n, **fields) for n in names)
    return (f"apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: it\nspec:\n  hosts:\n{hosts}"
            f"  roleGroups:\n    etcd: [{names[0]}]\n    control-plane: [{names[0]}]\n    worker: [{', '.join(names)}]\n")


async def test_upload_skips_identical_file_and_download(sshd: SSHD, tmp_path: Path) -> None:
    cluster = parse_cluster(cluster_yaml(sshd, ["n1"], privateKeyPath=sshd.key, sudoPassword=sshd.password))
    run = RunContext(cluster, RunOptions())
    payload = tmp_path / "blob"
    payload.write_bytes(os.urandom(3 * 1024 * 1024))
    h = run.host("n1")
    try:
        assert await h.upload(payload, "/opt/kubexm-it/blob.bin", mode=0o600) is True
        stat = await h.run(sh("stat", "-c", "%U %a", "/opt/kubexm-it/blob.bin"))
        assert stat.stdout.split() == ["root", "600"]
        assert await h.upload(payload, "/opt/kubexm-it/blob.bin", mode=0o640) is False  # same content: skipped
        stat = await h.run(sh("stat", "-c", "%U %a", "/opt/kubexm-it/blob.bin"))
        assert stat.stdout.split() == ["root", "640"]  # ...but the mode asked for is still enforced
        await h.run(sh("chown", f"{sshd.user}:{sshd.user}", "/opt/kubexm-it/blob.bin"))
        assert await h.file_state("/opt/kubexm-it/blob.bin", large=True) == (
            hashlib.sha256(payload.read_bytes()).hexdigest(), f"640 {sshd.user}:{sshd.user}")
        assert await h.upload(payload, "/opt/kubexm-it/blob.bin", mode=0o640) is False
        stat = await h.run(sh("stat", "-c", "%U:%G %a", "/opt/kubexm-it/blob.bin"))
        assert stat.stdout.split() == ["root:root", "640"]  # ...and so is the owner
        leftovers = await h.run(user_shell("ls -a /tmp /opt/kubexm-it | grep -c '^.kubexm-' || true"))
        assert leftovers.stdout.strip() == "0", "the staged copy of an upload must not be left behind"
        back = tmp_path / "back.bin"
        await h.download("/opt/kubexm-it/blob.bin", back)
        assert back.read_bytes() == payload.read_bytes()
    finally:
        await h.run(sh("rm", "-rf", "/opt/kubexm-it"), check=False)
        await run.close()


async def test_host_key_pinned_changed_key_refused_then_accepted(sshd: SSHD, kubexm_home: Path) -> None:
    h = host(sshd, privateKeyPath=str(sshd.key))
    conn = SSHConnection(h, ConnectOptions())
    await conn.open()
    await conn.close()
    known = (kubexm_home / "known_hosts").read_text()
    assert f"n1 [127.0.0.1]:{sshd.port} ssh-ed25519 " in known

    sshd.stop()
    sshd.new_host_key()
    sshd.start()
    with pytest.raises(HostKeyError, match=r"host key of n1 .* changed") as err:
        await SSHConnection(h, ConnectOptions()).open()
    assert "--accept-new-host-key n1" in (err.value.hint or "")
    accepted = SSHConnection(h, ConnectOptions(replace_host_keys=frozenset({"n1"})))
    assert await whoami(accepted, sudo=False) == sshd.user
    await accepted.close()
    assert (kubexm_home / "known_hosts").read_text() != known
    again = SSHConnection(h, ConnectOptions())
    assert await whoami(again, sudo=False) == sshd.user
    await again.close()


async def test_dropped_connection_is_reopened(sshd: SSHD) -> None:
    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key)), ConnectOptions())
    try:
        assert await whoami(conn, sudo=False) == sshd.user
        sshd.stop()  # kills the listener and this session's sshd process
        sshd.start()
        for _ in range(50):  # the client notices the closed socket on its own
            if conn._conn is None or conn._conn.is_closed():
                break
            await asyncio.sleep(0.05)
        assert await whoami(conn, sudo=False) == sshd.user  # the next call dials again by itself
    finally:
        await conn.close()


async def test_bastion_jump(sshd: SSHD) -> None:
    yaml = cluster_yaml(sshd, ["n1"], privateKeyPath=sshd.key, bastion="jump").replace(
        "  roleGroups:", f"  bastions:\n    - name: jump\n      address: 127.0.0.1\n      port: {sshd.port}\n"
        f"      user: {sshd.user}\n      privateKeyPath: {sshd.key}\n  roleGroups:")
    cluster = parse_cluster(yaml)
    run = RunContext(cluster, RunOptions())
    try:
        res = await run.host("n1").run(user_shell("echo $SSH_CONNECTION"), sudo=False)
        # Through the jump host the session's client address is the bastion's own loopback connection.
        assert res.stdout.split()[2] == "127.0.0.1"
        conn = await run.pool.get("n1")
        assert isinstance(conn, SSHConnection) and conn._tunnel is not None
    finally:
        await run.close()


async def test_agent_authentication(sshd: SSHD, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import subprocess

    sock = tmp_path / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL)
    try:
        for _ in range(50):
            if sock.exists():
                break
            await asyncio.sleep(0.05)
        subprocess.run(["ssh-add", "-q", str(sshd.key)], env={"SSH_AUTH_SOCK": str(sock)}, check=True)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        monkeypatch.setenv("HOME", str(tmp_path))  # no default keys in ~/.ssh: only the agent can succeed
        conn = SSHConnection(host(sshd), ConnectOptions())
        try:
            assert await whoami(conn, sudo=False) == sshd.user
        finally:
            await conn.close()
    finally:
        agent.terminate()
        agent.wait()


def _running(fragment: str) -> bool:
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if fragment in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode():
                    return True
            except OSError:
                continue
    return False


async def test_killed_session_mid_command_is_retried_by_the_executor(sshd: SSHD) -> None:
    cluster = parse_cluster(cluster_yaml(sshd, ["n1"], privateKeyPath=sshd.key, sudoPassword=sshd.password))
    events: list[Event] = []
    run = RunContext(cluster, RunOptions(retry_backoff=0.1, extra={"command": "sleep 1.5; echo finished"}),
                     bus=EventBus([events.append]))
    try:
        execution = asyncio.create_task(Executor(run).run_pipeline(RUN_COMMAND))
        for _ in range(100):  # wait until the command runs on the host, then cut the connection under it
            await asyncio.sleep(0.05)
            if await asyncio.to_thread(_running, "sleep 1.5"):
                break
        assert sshd.kill_sessions() >= 1
        report = await execution
    finally:
        await run.close()
    assert report.ok, report.failures
    retries = [e for e in events if e.kind == "host.retry"]
    assert retries and retries[0].host == "n1" and "connection lost" in (retries[0].message or "")
    assert any(e.kind == "message" and "finished" in (e.message or "") for e in events)


async def test_sudo_password_never_in_events(sshd: SSHD) -> None:
    yaml = cluster_yaml(sshd, ["n1", "n2"], privateKeyPath=sshd.key, sudoPassword=sshd.password)
    yaml = yaml.replace("    - name: n2\n      address: 127.0.0.1", "    - name: n2\n      address: 127.0.0.2")
    events: list[Event] = []
    run = RunContext(parse_cluster(yaml), RunOptions(extra={"command": "id -u; false"}), bus=EventBus([events.append]))
    try:
        report = await Executor(run).run_pipeline(RUN_COMMAND)
    finally:
        await run.close()
    assert {r.host for r in report.failures} == {"n1", "n2"}  # `false` fails on both, after `id -u` ran as root
    outputs = [e for e in events if e.kind == "message"]
    assert sorted(e.data["stdout"].split() for e in outputs) == [["0"], ["0"]]
    assert not any(sshd.password in repr(e) for e in events)
    assert not any(sshd.password in f"{r.message} {r.stderr} {r.command}" for r in report.records)


async def test_unknown_host_refused_when_new_keys_are_not_accepted(sshd: SSHD, kubexm_home: Path) -> None:
    h = host(sshd, privateKeyPath=str(sshd.key))
    with pytest.raises(HostKeyError, match="not in kubexm's known hosts") as err:
        await SSHConnection(h, ConnectOptions(accept_new_host_keys=False)).open()
    assert "--accept-new-host-key n1" in (err.value.hint or "")
    known = kubexm_home / "known_hosts"
    assert not known.exists() or "[127.0.0.1]" not in known.read_text()


async def test_root_user_runs_without_sudo_and_moves_files_over_sftp(sshd: SSHD, tmp_path: Path) -> None:
    conn = SSHConnection(host(sshd, user="root", privateKeyPath=str(sshd.key)), ConnectOptions())
    try:
        res = await conn.run("id -u; echo \"sudo_user=${SUDO_USER:-}\"")
        assert res.stdout.split() == ["0", "sudo_user="]  # root: the command is not wrapped in sudo
        await conn.put(b"secret-material\n", "/opt/kubexm-it-root/sub/key.pem", mode=0o600)
        stat = await conn.run("stat -c '%U %a' /opt/kubexm-it-root/sub/key.pem; ls -a /opt/kubexm-it-root/sub")
        assert stat.stdout.split() == ["root", "600", ".", "..", "key.pem"]
        back = tmp_path / "key.pem"
        await conn.get("/opt/kubexm-it-root/sub/key.pem", back)
        assert back.read_bytes() == b"secret-material\n"
    finally:
        await conn.run("rm -rf /opt/kubexm-it-root")
        await conn.close()


async def test_non_root_get_reads_root_only_file(sshd: SSHD, tmp_path: Path) -> None:
    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key), sudoPassword=sshd.password), ConnectOptions())
    try:
        await conn.put(b"only root reads this", "/opt/kubexm-it-get/f", mode=0o600)
        assert not (await conn.run("cat /opt/kubexm-it-get/f", sudo=False)).ok  # the user alone cannot
        await conn.get("/opt/kubexm-it-get/f", tmp_path / "f")
        assert (tmp_path / "f").read_bytes() == b"only root reads this"
    finally:
        await conn.run("rm -rf /opt/kubexm-it-get")
        await conn.close()


async def test_a_command_longer_than_the_keepalive_window_is_not_cut_short(sshd: SSHD) -> None:
    """Short keepalives while a command runs: a busy but answering host keeps its command (no false alarm)."""
    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key)), ConnectOptions(connect_timeout=1))
    try:
        res = await conn.run(sh("sh", "-c", "sleep 3; echo done").text, sudo=False)
        assert res.ok and res.stdout.strip() == "done"
    finally:
        await conn.close()


async def test_a_host_that_goes_silent_mid_command_is_unreachable_within_its_connect_timeout(sshd: SSHD) -> None:
    """Its sshd frozen (SIGSTOP: no RST, no answer, as a power cut or dropped packets look): the command ends
    with HostUnreachable (not retried by the engine) after about one connect timeout, not its own limit."""
    import signal

    from kubexm.errors import HostUnreachable

    conn = SSHConnection(host(sshd, privateKeyPath=str(sshd.key)), ConnectOptions(connect_timeout=2))
    frozen: list[int] = []
    try:
        assert await whoami(conn, sudo=False) == sshd.user
        running = asyncio.ensure_future(conn.run(sh("sleep", "60").text, sudo=False))
        await asyncio.sleep(0.5)
        frozen = sshd.sessions()
        assert frozen
        for pid in frozen:
            os.kill(pid, signal.SIGSTOP)
        start = time.monotonic()
        with pytest.raises(HostUnreachable) as err:
            await asyncio.wait_for(running, 20)
        took = time.monotonic() - start
        assert took < 2 * 2 + 1, took  # about one connect timeout (keepalives every 0.5 s, 3 unanswered)
        assert "stopped answering" in err.value.message and "\n" not in err.value.message
    finally:
        for pid in frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        sshd.kill_sessions()
        await conn.close()


async def test_a_host_that_drops_packets_holds_no_handshake_slot(sshd: SSHD, monkeypatch: pytest.MonkeyPatch) -> None:
    """A host whose SYNs go unanswered waits out its connect timeout in the TCP connect, outside the bound on
    handshakes: with one handshake slot, a live host dialled meanwhile still connects at once."""
    import socket

    from kubexm.errors import HostUnreachable

    # A listener with a full accept queue: the kernel drops further SYNs, as a firewall dropping packets does.
    hole = socket.socket()
    hole.bind(("127.0.0.9", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.9", port))
        fillers.append(filler)
    await asyncio.sleep(0.3)
    monkeypatch.setenv("KUBEXM_DIAL_LIMIT", "1")
    dead = SSHConnection(Host.model_validate({"name": "dead", "address": "127.0.0.9", "port": port,
                                              "user": sshd.user}), ConnectOptions(connect_timeout=3))
    live = SSHConnection(host(sshd, privateKeyPath=str(sshd.key)), ConnectOptions(connect_timeout=3))
    try:
        dialling = asyncio.ensure_future(dead.open())
        await asyncio.sleep(0.2)  # the dead host asked first
        start = time.monotonic()
        await live.open()
        assert time.monotonic() - start < 2.0  # not after the dead host's 3 s
        with pytest.raises(HostUnreachable) as err:
            await dialling
        assert "timed out" in err.value.message
    finally:
        await live.close()
        await dead.close()
        for s in [hole, *fillers]:
            s.close()

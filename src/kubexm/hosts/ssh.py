"""SSH connections with asyncssh: one persistent connection per host, commands on channels.

Authentication follows what the cluster file gives (key, key + passphrase, password, else
the ssh-agent and the user's default keys). Non-root users reach root through sudo with the
password fed on stdin, never in argv. Host keys are pinned in kubexm's own known-hosts file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import socket
import time
import uuid
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import asyncssh

from kubexm import paths
from kubexm.errors import AuthenticationError, ConnectionFault, HostKeyError, HostUnreachable, KubexmError
from kubexm.hosts.base import (
    KILL_AFTER,
    PID_MARK,
    POSIX_SHELLS,
    CommandResult,
    Connection,
    ConnectOptions,
    Login,
    guarded,
    kill_group,
    sudo_wrap,
)
from kubexm.hosts.dial import dial, open_tcp
from kubexm.hosts.known_hosts import KnownHosts, KnownKey
from kubexm.hosts.shell import sh

if TYPE_CHECKING:
    from kubexm.spec.models import Bastion, Host

# Transport failures after the connection was made: the engine retries these.
_TRANSPORT_ERRORS = (
    OSError,
    asyncssh.ConnectionLost,
    asyncssh.DisconnectError,
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
    EOFError,
    BrokenPipeError,
)
# Seconds past a command's limit (and the host's KILL_AFTER) before kubexm stops waiting for a host that
# did not end it itself (a frozen host, a lost link that keepalives have not noticed yet).
_BACKSTOP = 10.0
# Keepalives: a connection at rest asks every IDLE_KEEPALIVE s (a kept connection can wait minutes for its next
# run); while a command runs it asks every connect_timeout / (KEEPALIVE_COUNT + 1) s, so a host that goes
# silent mid-command (power cut, packets dropped) is given up after about one connect timeout, as one that
# never answered the dial is, instead of waiting minutes for the command's own limit.
IDLE_KEEPALIVE = 15.0
KEEPALIVE_COUNT = 3
_CHUNK = 4 << 20  # bytes per SFTP write (asyncssh splits each into parallel requests)
# AES-GCM first: one AEAD call per packet in OpenSSL (AES-NI on the machines kubexm targets) where
# chacha20-poly1305, asyncssh's first choice, costs several per packet; measured ~10% less client CPU for
# many short commands. The rest of asyncssh's defaults follow, so older servers still connect.
_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com",
            "aes256-ctr", "aes192-ctr", "aes128-ctr")


class _PinningClient(asyncssh.SSHClient):
    """Checks the server's key against kubexm's known-hosts file during the handshake."""

    def __init__(self, name: str, address: str, port: int, options: ConnectOptions) -> None:
        self.name, self.address, self.port, self.options = name, address, port, options
        self.mismatch: str | None = None
        self.store = KnownHosts(options.known_hosts or paths.known_hosts_file())
        self.lost: BaseException | None = None  # why the connection ended, when it ended with an error

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc

    def validate_host_public_key(self, host: str, addr: str, port: int, key: asyncssh.SSHKey) -> bool:
        offered = key.export_public_key("openssh").decode().split()[:2]
        offered_text = " ".join(offered)
        known = self.store.lookup(self.address, self.port)
        if known is None:
            if not self.options.accept_new_host_keys:
                self.mismatch = "unknown"
                return False
            self.store.remember(self.name, self.address, self.port, offered_text)
            return True
        if known.key == offered_text:
            return True
        if self.name in self.options.replace_host_keys:
            self.store.remember(self.name, self.address, self.port, offered_text)
            return True
        self.mismatch = key.get_fingerprint()
        return False


def _stamp(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


@lru_cache(maxsize=32)
def _private_key(path: str, passphrase: str | None, stamp: tuple[int, int]) -> asyncssh.SSHKey:
    """Read and decrypt a key once per run, not once per host: an encrypted key's KDF (bcrypt) costs
    ~0.1-1 s, which 200 hosts would pay 200 times. ``stamp`` makes a changed file be read again."""
    return asyncssh.read_private_key(path, passphrase)


def _connect_kwargs(user: str, password: str | None, key_path: str | None, passphrase: str | None,
                    name: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"username": user}
    if key_path:
        path = Path(key_path).expanduser()
        try:
            key = _private_key(str(path), passphrase, _stamp(path))
        except FileNotFoundError:
            raise AuthenticationError(f"{name}: private key {path} does not exist",
                                      hint="fix privateKeyPath in the cluster file") from None
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
            reason = "it is encrypted; set privateKeyPassphrase" if "passphrase" in str(exc).lower() else str(exc)
            if passphrase and "passphrase" in str(exc).lower():
                reason = "the passphrase is wrong"
            raise AuthenticationError(f"{name}: cannot use private key {path}: {reason}",
                                      hint="check privateKeyPath and privateKeyPassphrase") from None
        except PermissionError:
            raise AuthenticationError(f"{name}: private key {path} is not readable",
                                      hint="run kubexm as a user that can read the key") from None
        kwargs["client_keys"] = [key]
        kwargs["agent_path"] = None
    if password:
        kwargs["password"] = password
        if not key_path:
            kwargs["client_keys"] = None  # password only: do not offer the user's default keys first
            kwargs["agent_path"] = None
    return kwargs


class SSHConnection(Connection):
    def __init__(self, host: Host | Login, options: ConnectOptions, bastion: Bastion | Login | None = None) -> None:
        self.host = Login.of(host)
        self.name = self.host.name
        self.user = self.host.user
        self.options = options
        self.bastion = Login.of(bastion) if bastion is not None else None
        self._conn: asyncssh.SSHClientConnection | None = None
        self._tunnel: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._sudo_password = self.host.sudo_password or self.host.password
        self._busy: dict[int, int] = {}  # commands in flight per live link (they get the short keepalives)
        self._client: _PinningClient | None = None  # the host link's client: it learns why the link ended
        # Whether the login shell reads POSIX sh (learned from the first command on each link, see _line).
        self._posix_login: bool | None = None

    # -- connecting -----------------------------------------------------------------------
    async def open(self) -> None:
        if self._conn is not None:
            if not self._conn.is_closed():
                return
            await self._drop()  # the link died while idle (host rebooted, sshd restarted): dial again
        tunnel = None
        if self.bastion is not None:
            b = self.bastion
            tunnel, _ = await self._dial(b.name, b.address, b.port,
                                         _connect_kwargs(b.user, b.password, b.private_key_path, None, b.name), None)
            self._tunnel = tunnel
        h = self.host
        kwargs = _connect_kwargs(h.user, h.password, h.private_key_path, h.private_key_passphrase, h.name)
        self._posix_login = None  # a new link learns its login shell again
        try:
            self._conn, self._client = await self._dial(h.name, h.address, h.port, kwargs, tunnel)
        except BaseException:
            if tunnel is not None:
                tunnel.close()
                self._tunnel = None
            raise

    async def _dial(self, name: str, address: str, port: int, kwargs: dict[str, Any],
                    tunnel: asyncssh.SSHClientConnection | None) -> tuple[asyncssh.SSHClientConnection, _PinningClient]:
        """The connection and its client (which learns why the link ends)."""
        client = _PinningClient(name, address, port, self.options)
        where = f"{address}:{port}" + (f" via bastion {self.bastion.name}" if tunnel and self.bastion else "")

        # Directly reached hosts: the TCP connect first, outside the handshake bound (see kubexm.hosts.dial), so a
        # host whose packets are dropped waits out its timeout without holding a handshake slot.
        ready: list[socket.socket] = []

        async def attempt(budget: float) -> asyncssh.SSHClientConnection:
            sock = ready.pop() if ready else None
            if sock is None and tunnel is None:  # a second attempt: the first one's socket is used up
                sock = await open_tcp(address, port, budget)
            conn, _ = await asyncssh.create_connection(
                lambda: client, address, port, tunnel=tunnel, sock=sock,
                known_hosts=([], [], []),  # nothing pre-trusted: every key goes through the pinning client
                encryption_algs=_CIPHERS,
                server_host_key_algs=_host_key_algs(client.store.lookup(address, port)),
                connect_timeout=budget,
                keepalive_interval=IDLE_KEEPALIVE, keepalive_count_max=KEEPALIVE_COUNT,
                config=None, **kwargs,
            )
            return conn

        try:
            if tunnel is None:
                ready.append(await open_tcp(address, port, self.options.connect_timeout))
            return await dial(attempt, self.options.connect_timeout), client
        except asyncssh.HostKeyNotVerifiable:
            if client.mismatch == "unknown":
                raise HostKeyError(f"{name} ({where}) is not in kubexm's known hosts",
                                   hint=f"re-run with --accept-new-host-key {name}") from None
            if client.mismatch is None:  # e.g. a host certificate, which kubexm does not pin
                raise HostKeyError(f"host key of {name} ({where}) could not be verified",
                                   hint=f"re-run with --accept-new-host-key {name} to pin the key it presents") from None
            raise HostKeyError(
                f"host key of {name} ({where}) changed: it now presents {client.mismatch}, "
                "which is not the key remembered on first use",
                hint=f"if the host was reinstalled, re-run with --accept-new-host-key {name}; "
                     "otherwise treat it as a possible man-in-the-middle",
            ) from None
        except asyncssh.PermissionDenied:
            raise AuthenticationError(
                f"{name}: {kwargs['username']}@{where} rejected the credentials",
                hint="check user, privateKeyPath/password in the cluster file and the host's authorized_keys",
            ) from None
        except (TimeoutError, asyncssh.misc.ConnectionLost, asyncssh.DisconnectError, OSError) as exc:
            reason = _reason(exc)
            raise HostUnreachable(f"{name}: cannot connect to {where}: {reason}",
                                  hint="check that the host is up, sshd listens on that port and no firewall blocks it")\
                from None
        finally:
            for sock in ready:  # never handed to a handshake (cancelled while queued): not left open
                sock.close()

    # -- commands -------------------------------------------------------------------------
    @contextlib.contextmanager
    def _watched(self, conn: asyncssh.SSHClientConnection) -> Iterator[None]:
        """Short keepalives while a command runs on ``conn``, the idle ones again after the last one ends."""
        key = id(conn)
        if not self._busy.get(key):
            conn.set_keepalive(max(0.5, self.options.connect_timeout / (KEEPALIVE_COUNT + 1)), KEEPALIVE_COUNT)
        self._busy[key] = self._busy.get(key, 0) + 1
        try:
            yield
        finally:
            self._busy[key] -= 1
            if not self._busy[key]:
                del self._busy[key]
                if not conn.is_closed():
                    conn.set_keepalive(IDLE_KEEPALIVE, KEEPALIVE_COUNT)

    def _lost(self, exc: BaseException, doing: str) -> ConnectionFault:
        """The error for a link lost while ``doing``: a host that stopped answering keepalives is unreachable
        (not retried, as a host that did not answer the dial is); any other loss is a transport fault."""
        # The link's own end says more than the call's error (a channel open fails as "connection closed").
        why = self._client.lost if self._client is not None and self._client.lost is not None else exc
        if isinstance(why, asyncssh.ConnectionLost) and "keepalive" in str(why).lower():
            return HostUnreachable(
                f"{self.name}: stopped answering while {doing} (no reply to SSH keepalives for about "
                f"{self.options.connect_timeout:g} s); what it was doing may have run in part",
                hint="check that the host is up and reachable, then run the command again")
        return ConnectionFault(f"{self.name}: connection lost while {doing}: {_reason(exc)}",
                               hint="the engine retries; check the host if it persists")

    async def run(self, command: str, *, sudo: bool = True, stdin: bytes | str | None = None,
                  timeout: float | None = None) -> CommandResult:
        res, out, err = await self._exec(command, sudo=sudo, stdin=stdin, timeout=timeout)
        return CommandResult(command, res, out.decode(errors="replace"), err.decode(errors="replace"))

    def _line(self, command: str, limit: float, *, as_root: bool, data: bytes | None) -> tuple[str, bytes | None]:
        """The channel's command line: ``command`` guarded by the host's timeout, through sudo when ``as_root``.

        sshd hands the line to the user's login shell. Until that shell is known the guard runs under ``sh -c``
        (a csh or fish login shell could not read it) and reports ``$SHELL``; once the shell is known to read POSIX
        sh, the guard goes to it directly: one program start fewer for every command on the link."""
        if not as_root:
            if self._posix_login:
                return guarded(command, limit, report_pid=True), data
            guard = guarded(command, limit, report_pid=True, report_shell=self._posix_login is None)
            return sh("sh", "-c", guard).text, data
        guard = guarded(command, limit, report_pid=True)
        line, feed = sudo_wrap(guard, password_needed=self._sudo_password is not None)
        if feed and self._sudo_password is not None:
            data = self._sudo_password.encode() + b"\n" + (data or b"")
        return line, data

    async def _exec(self, command: str, *, sudo: bool, stdin: bytes | str | None,
                    timeout: float | None) -> tuple[int, bytes, bytes]:
        await self.open()
        assert self._conn is not None
        conn = self._conn
        as_root = sudo and not self.is_root
        limit = self.options.limit(timeout)
        line, data = self._line(command, limit, as_root=as_root,
                                data=stdin.encode() if isinstance(stdin, str) else stdin)
        started = time.monotonic()
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            with self._watched(conn):
                proc = await conn.create_process(line, encoding=None)
                if data:
                    proc.stdin.write(data)
                proc.stdin.write_eof()
                # The host's timeout ends the command at ``limit``; this one only guards against a host that
                # does not answer at all.
                done = await proc.wait(check=False, timeout=limit + KILL_AFTER + _BACKSTOP)
        except (asyncssh.TimeoutError, TimeoutError) as exc:
            assert proc is not None
            await _stopping(self._stop(conn, proc, as_root, seen=_bytes(getattr(exc, "stderr", b""))))
            return 124, b"", f"timed out after {limit:g}s (the host did not end the command)".encode()
        except asyncio.CancelledError:
            if proc is not None:
                await _stopping(self._stop(conn, proc, as_root))
            raise
        except _TRANSPORT_ERRORS as exc:
            await self._drop()
            raise self._lost(exc, "running a command") from None
        _, err = self._stderr_of(_bytes(done.stderr))
        if done.exit_status is None and done.exit_signal is None:
            # The channel closed without the command reporting how it ended: the host or its sshd went away.
            await self._drop()
            raise self._lost(ConnectionError("no exit status"), "running a command")
        if done.exit_signal is not None:
            signal_name = done.exit_signal[0]
            return 128 + _signal_number(signal_name), _bytes(done.stdout), err + \
                f"\nkilled by signal {signal_name}".encode()
        status = done.exit_status if done.exit_status is not None else 255
        if status in (124, 128 + 9) and time.monotonic() - started >= limit:
            return 124, _bytes(done.stdout), err + f"\ntimed out after {limit:g}s".encode()
        if as_root and status != 0 and _sudo_refused(err):
            raise AuthenticationError(
                f"{self.name}: sudo refused user {self.user}: {err.decode(errors='replace').strip()[:200]}",
                hint="set sudoPassword (or password) for this host, or allow the user passwordless sudo",
            )
        return status, _bytes(done.stdout), err

    def _stderr_of(self, stderr: bytes) -> tuple[int | None, bytes]:
        """The pid line split off a finished command's stderr; a login shell it reports is learned for the link."""
        pid, rest, shell = _split_pid(stderr)
        if shell is not None and self._posix_login is None:
            self._posix_login = posixpath.basename(shell) in POSIX_SHELLS
        return pid, rest

    async def _stop(self, conn: asyncssh.SSHClientConnection, proc: asyncssh.SSHClientProcess[bytes],
                    as_root: bool, seen: bytes = b"") -> None:
        """Kill what ``proc`` started on the host (its whole process group, as root when it runs as root),
        then close the channel. Closing alone would leave it running: without a pty sshd sends no SIGHUP."""
        try:
            if proc.exit_status is not None or proc.exit_signal is not None:
                return
            pid, _, _ = _split_pid(seen + _peek_stderr(proc))
            deadline = time.monotonic() + 3  # the pid line is the first thing the command prints
            while pid is None and time.monotonic() < deadline and not proc.is_closing():
                await asyncio.sleep(0.05)
                pid, _, _ = _split_pid(seen + _peek_stderr(proc))
            if pid is None:
                return  # never started (or already gone): the host's timeout bounds it anyway
            line, data = sh("sh", "-c", kill_group(pid)).text, None
            if as_root:
                line, feed = sudo_wrap(kill_group(pid), password_needed=self._sudo_password is not None)
                if feed and self._sudo_password is not None:
                    data = self._sudo_password.encode() + b"\n"
            with contextlib.suppress(Exception):
                await conn.run(line, input=data, check=False, encoding=None, timeout=15)
        finally:
            with contextlib.suppress(Exception):
                proc.close()

    async def run_streaming(self, command: str, source: Path, *, timeout: float | None = None) -> CommandResult:
        """The file goes to the command's stdin in chunks: memory stays flat whatever its size."""
        await self.open()
        assert self._conn is not None
        conn = self._conn
        limit = self.options.limit(timeout)
        line, _ = self._line(command, limit, as_root=False, data=None)
        proc: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            with self._watched(conn):
                proc = await conn.create_process(line, encoding=None)
                with open(source, "rb") as fh:
                    while chunk := fh.read(_CHUNK):
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                proc.stdin.write_eof()
                done = await proc.wait(check=False, timeout=limit + KILL_AFTER + _BACKSTOP)
        except (asyncssh.TimeoutError, TimeoutError) as exc:
            assert proc is not None
            await _stopping(self._stop(conn, proc, False, seen=_bytes(getattr(exc, "stderr", b""))))
            return CommandResult(command, 124, "", f"timed out after {limit:g}s")
        except asyncio.CancelledError:
            if proc is not None:
                await _stopping(self._stop(conn, proc, False))
            raise
        except _TRANSPORT_ERRORS as exc:
            await self._drop()
            raise self._lost(exc, "streaming a file to a command") from None
        status = done.exit_status if done.exit_status is not None else 255
        _, err = self._stderr_of(_bytes(done.stderr))
        return CommandResult(command, status, _bytes(done.stdout).decode(errors="replace"), err.decode(errors="replace"))

    # -- files ----------------------------------------------------------------------------
    async def _sftp_client(self) -> asyncssh.SFTPClient:
        await self.open()
        assert self._conn is not None
        if self._sftp is None:
            try:
                self._sftp = await self._conn.start_sftp_client()
            except _TRANSPORT_ERRORS as exc:
                await self._drop()
                raise ConnectionFault(f"{self.name}: cannot start sftp: {_reason(exc)}") from None
        return self._sftp

    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        parent = posixpath.dirname(remote) or "/"
        staging_dir = parent if self.is_root else "/tmp"
        staged = posixpath.join(staging_dir, f".kubexm-{uuid.uuid4().hex[:12]}")
        try:
            if self.is_root:
                await self._checked(sh("mkdir", "-p", "--", parent).text)
            sftp = await self._sftp_client()
            # Created exclusively and private: a key being uploaded is never readable by others in transit.
            async with sftp.open(staged, "xb", asyncssh.SFTPAttrs(permissions=0o600)) as fh:
                if isinstance(source, bytes):
                    await fh.write(source)
                else:
                    with open(source, "rb") as local:
                        while chunk := local.read(_CHUNK):
                            await fh.write(chunk)
            if self.is_root:
                await sftp.chmod(staged, mode)
                await sftp.posix_rename(staged, remote)
            else:
                await self._checked((sh("mkdir", "-p", "--", parent)
                                     & sh("install", "-m", f"{mode:o}", "--", staged, remote + ".kubexm-new")
                                     & sh("mv", "-f", "--", remote + ".kubexm-new", remote)).text)
        except _TRANSPORT_ERRORS as exc:
            await self._drop()
            raise ConnectionFault(f"{self.name}: upload to {remote} interrupted: {_reason(exc)}") from None
        except asyncssh.SFTPError as exc:
            raise KubexmError(f"{self.name}: cannot write {remote}: {exc.reason}") from None
        finally:
            if self._conn is not None and not self.is_root:
                await self._exec(sh("rm", "-f", "--", staged).text, sudo=False, stdin=None, timeout=30)

    async def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.is_root:
            sftp = await self._sftp_client()
            try:
                await sftp.get(remote, str(local))
            except asyncssh.SFTPError as exc:
                raise KubexmError(f"{self.name}: cannot read {remote}: {exc.reason}") from None
            except _TRANSPORT_ERRORS as exc:
                await self._drop()
                raise ConnectionFault(f"{self.name}: download of {remote} interrupted: {_reason(exc)}") from None
            return
        status, out, err = await self._exec(sh("cat", "--", remote).text, sudo=True, stdin=None, timeout=None)
        if status != 0:
            raise KubexmError(f"{self.name}: cannot read {remote}: {err.decode(errors='replace').strip()}")
        tmp = local.with_name(local.name + ".part")
        tmp.write_bytes(out)
        os.replace(tmp, local)

    async def _checked(self, command: str) -> None:
        status, _, err = await self._exec(command, sudo=True, stdin=None, timeout=None)
        if status != 0:
            raise KubexmError(f"{self.name}: `{command}` exited {status}: {err.decode(errors='replace').strip()}")

    # -- closing --------------------------------------------------------------------------
    @property
    def is_open(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    async def probe(self, timeout: float) -> bool:
        """One SSH round trip (a keepalive global request, which OpenSSH answers without forking anything):
        whether an idle connection still reaches its host. The connection keeper asks before reusing one."""
        if not self.is_open:
            return False
        assert self._conn is not None
        request = getattr(self._conn, "_make_global_request", None)
        if request is None:  # an asyncssh without it: trust the transport's own state
            return True
        try:
            await asyncio.wait_for(request(b"keepalive@openssh.com"), timeout)
        except (TimeoutError, *_TRANSPORT_ERRORS):
            return False
        return self.is_open

    async def _drop(self) -> None:
        """Forget a broken connection so the next call reconnects."""
        conn, tunnel, self._conn, self._tunnel, self._sftp = self._conn, self._tunnel, None, None, None
        for c in (conn, tunnel):
            if c is not None:
                c.abort()

    async def close(self) -> None:
        conn, tunnel, sftp = self._conn, self._tunnel, self._sftp
        self._conn = self._tunnel = None
        self._sftp = None
        if sftp is not None:
            sftp.exit()
        for c in (conn, tunnel):
            if c is not None:
                c.close()
                try:
                    await c.wait_closed()
                except Exception:  # closing a dead link: nothing left to do
                    continue


async def _stopping(work: Any) -> None:
    """Finish stopping a remote command even if the caller is cancelled again meanwhile (Ctrl-C twice): the
    kill must reach the host before the run lets go of the cluster."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), 20)


def _peek_stderr(proc: Any) -> bytes:
    """What the process wrote on stderr so far, without consuming it (asyncssh keeps it until collected)."""
    buf = proc._recv_buf.get(asyncssh.EXTENDED_DATA_STDERR, [])  # no public peek in asyncssh
    return b"".join(b for b in buf if isinstance(b, bytes))


def _split_pid(stderr: bytes) -> tuple[int | None, bytes, str | None]:
    """The pid ``guarded`` reported, stderr without that line, and the login shell when the line carries one."""
    at = 0 if stderr.startswith(PID_MARK) else stderr.find(b"\n" + PID_MARK) + 1
    if at == 0 and not stderr.startswith(PID_MARK):
        return None, stderr, None
    end = stderr.find(b"\n", at)
    if end == -1:
        return None, stderr, None  # the line is not complete yet
    digits, space, shell = stderr[at + len(PID_MARK):end].partition(b" ")
    return ((int(digits) if digits.isdigit() else None), stderr[:at] + stderr[end + 1:],
            shell.decode(errors="replace") if space else None)


def _bytes(value: Any) -> bytes:
    if value is None:
        return b""
    return value if isinstance(value, bytes) else str(value).encode()


def _signal_number(name: str) -> int:
    import signal

    try:
        return int(signal.Signals["SIG" + name.removeprefix("SIG")])
    except KeyError:
        return 0


_SUDO_REFUSALS = ("incorrect password", "a password is required", "no password was provided",
                  "is not in the sudoers file", "may not run sudo", "is not allowed to execute")


def _sudo_refused(stderr: bytes) -> bool:
    """Whether sudo itself (not the command it ran) refused: sudo's own ``sudo:`` lines, or its sudoers verdict."""
    for line in stderr.decode(errors="replace").lower().splitlines():
        if "is not in the sudoers file" in line or (line.startswith("sudo:") and any(r in line for r in _SUDO_REFUSALS)):
            return True
    return False


def _host_key_algs(known: KnownKey | None) -> list[str]:
    """Plain host-key algorithms, the pinned key's first: a server with several keys keeps presenting
    the pinned one, and certificates (which kubexm does not pin) are not negotiated."""
    algs = [a.decode() for a in asyncssh.public_key.get_default_public_key_algs()]
    if known is None:
        return algs
    try:
        pinned = [a.decode() for a in asyncssh.import_public_key(known.key).sig_algorithms]
    except (asyncssh.KeyImportError, ValueError):
        return algs
    return pinned + [a for a in algs if a not in pinned]


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()
    text = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    if "Multiple exceptions" in str(text) or "Connect call failed" in str(text):
        return "no route to host or connection refused"
    return str(text)

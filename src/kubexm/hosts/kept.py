"""A connection served by the connection keeper (``keeper.py``): the same contract as ``SSHConnection``,
without dialling or loading asyncssh in this process when the keeper already holds the host.

The pool uses it for SSH hosts when ``KUBEXM_PERSIST`` is not 0. When no keeper answers, one is started
in the background; when that fails too, the pool falls back to a direct ``SSHConnection`` (``KeeperDown``).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import subprocess
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from kubexm import errors
from kubexm.hosts import keeper
from kubexm.hosts.base import KILL_AFTER, CommandResult, Connection, ConnectOptions, Login
from kubexm.spec.models import Bastion, Host

START_TIMEOUT = 10.0
CANCEL_WAIT = 20.0  # seconds a cancelled call waits for the keeper to have killed the remote command
BACKSTOP = 30.0  # seconds past a command's limit before the client stops waiting for the keeper


class KeeperDown(Exception):
    """No keeper could be reached or started; the caller connects directly instead."""


def target(host: Host, options: ConnectOptions, bastion: Bastion | None) -> dict[str, Any]:
    """Everything the keeper needs to dial ``host`` as this run would; also the identity it shares under."""
    return {
        # Secrets revealed: they go to the keeper over the private socket only, never argv or logs.
        "host": dataclasses.asdict(Login.of(host)),
        "bastion": dataclasses.asdict(Login.of(bastion)) if bastion else None,
        "options": {"known_hosts": str(options.known_hosts) if options.known_hosts else None,
                    "accept_new_host_keys": options.accept_new_host_keys,
                    "replace_host_keys": sorted(options.replace_host_keys),
                    "connect_timeout": options.connect_timeout, "command_timeout": options.command_timeout},
    }


# While a keeper starts, one watcher per socket looks for the socket file (a stat every few milliseconds) and
# every stream waiting for it wakes up as soon as it appears: a first run's streams connect within a few ms of
# the keeper listening, without each of hundreds of them polling with connect() meanwhile.
WATCH_EVERY = 0.003
RETRY_EVERY = 0.02  # the socket file is there but refuses (a keeper that is just leaving or starting)
_watchers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, asyncio.Task[None]]] = \
    weakref.WeakKeyDictionary()


def _keeper_failed(proc: subprocess.Popen[bytes] | None) -> bool:
    # A keeper that exited 0 lost the race to another one, which is about to listen; any other exit means
    # keepers cannot run here.
    return proc is None or proc.poll() not in (None, 0)


async def _watch(path: Path, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    while not path.exists() and time.monotonic() < deadline and not _keeper_failed(proc):
        await asyncio.sleep(WATCH_EVERY)


async def _socket_appears(path: Path, deadline: float, proc: subprocess.Popen[bytes] | None) -> None:
    """Return once ``path`` exists, or after RETRY_EVERY seconds (the caller checks its keeper again)."""
    loop = asyncio.get_running_loop()
    watchers = _watchers.setdefault(loop, {})
    key = str(path)
    watcher = watchers.get(key)
    if watcher is None or watcher.done():
        watcher = watchers[key] = loop.create_task(_watch(path, deadline, proc))

        def forget(task: asyncio.Task[None]) -> None:
            # A finished watcher would otherwise keep its loop (the dictionary's weak key) alive.
            if watchers.get(key) is task:
                del watchers[key]

        watcher.add_done_callback(forget)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.shield(watcher), RETRY_EVERY)


async def _open_stream(path: Path, persist: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    try:
        return await asyncio.open_unix_connection(str(path))
    except (FileNotFoundError, ConnectionRefusedError):
        pass
    proc = keeper.start(path, persist)
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            return await asyncio.open_unix_connection(str(path))
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            if _keeper_failed(proc) or time.monotonic() > deadline:
                raise KeeperDown(f"no connection keeper on {path}") from exc
            if path.exists():
                await asyncio.sleep(RETRY_EVERY)
            else:
                await _socket_appears(path, deadline, proc)


async def _finish(work: Any) -> None:
    """Run ``work`` to its end even when the caller is cancelled again meanwhile (a second Ctrl-C)."""
    task = asyncio.ensure_future(work)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(task)
    if not task.done():
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(asyncio.shield(task), CANCEL_WAIT)


class KeptConnection(Connection):
    def __init__(self, host: Host, options: ConnectOptions, bastion: Bastion | None = None,
                 persist: float = keeper.DEFAULT_PERSIST) -> None:
        self.host = host
        self.name = host.name
        self.user = host.user
        self.options = options
        self.persist = persist
        self._target = target(host, options, bastion)
        self._stream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        self._lock = asyncio.Lock()

    async def open(self) -> None:
        """Bind a keeper stream to this host; the keeper dials (or reuses) the SSH connection and reports
        the same errors a direct connection would. Raises KeeperDown when no keeper can be reached."""
        async with self._lock:
            await self._bind()

    async def _bind(self) -> None:
        if self._stream is not None:
            return
        self._stream = await _open_stream(keeper.socket_path(), self.persist)
        try:
            await self._exchange({"op": "open", "target": self._target})
        except BaseException:
            await self.close()
            raise

    async def _call(self, request: dict[str, Any]) -> dict[str, Any]:
        async with self._lock:  # one request at a time per stream; the engine works a host's steps in order
            await self._bind()  # again after the keeper went away: a new one is started
            return await self._exchange(request)

    async def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self._stream is not None
        reader, writer = self._stream
        cause: OSError | None = None
        try:
            await keeper.write_frame(writer, request)
            reply = await keeper.read_frame(reader)
        except OSError as exc:  # ConnectionError included
            reply, cause = None, exc
        except asyncio.CancelledError:
            await _finish(self._abandon())
            raise
        if reply is None:
            # The keeper went away mid-request (killed, or it exited): the next call starts another.
            self._stream = None
            raise errors.ConnectionFault(f"{self.name}: the connection keeper went away ({cause or 'closed'})",
                                         hint="the engine retries; set KUBEXM_PERSIST=0 to connect directly")
        if not reply.get("ok"):
            cls = getattr(errors, str(reply.get("error")), errors.ConnectionFault)
            if not (isinstance(cls, type) and issubclass(cls, errors.KubexmError)):
                cls = errors.ConnectionFault
            raise cls(str(reply.get("message")), hint=reply.get("hint"))
        return reply

    async def _abandon(self) -> None:
        """Ask the keeper to stop the request in flight (it kills the remote command) and wait until it has:
        it then closes the stream. The next call binds a new stream."""
        stream, self._stream = self._stream, None
        if stream is None:
            return
        reader, writer = stream
        try:
            # A keeper that is gone or stuck is left alone: the host's own timeout still ends the command.
            with contextlib.suppress(OSError, TimeoutError):
                await keeper.write_frame(writer, {"op": "cancel"})
                async with asyncio.timeout(CANCEL_WAIT):
                    while await reader.read(1 << 16):
                        continue  # drain until the keeper closes the stream
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    def _result(command: str, reply: dict[str, Any]) -> CommandResult:
        return CommandResult(command, int(reply["exit"]), reply["stdout"], reply["stderr"])

    async def run(self, command: str, *, sudo: bool = True, stdin: bytes | str | None = None,
                  timeout: float | None = None) -> CommandResult:
        data = stdin.encode() if isinstance(stdin, str) else stdin
        limit = self.options.limit(timeout)
        return await self._limited(command, limit, {"op": "run", "command": command, "sudo": sudo,
                                                    "stdin": keeper.b64(data), "timeout": limit})

    async def run_streaming(self, command: str, source: Path, *, timeout: float | None = None) -> CommandResult:
        # The keeper runs as this user on this machine: it reads the file itself.
        limit = self.options.limit(timeout)
        return await self._limited(command, limit, {"op": "stream", "command": command,
                                                    "source": str(Path(source).resolve()), "timeout": limit})

    async def _limited(self, command: str, limit: float, request: dict[str, Any]) -> CommandResult:
        """The keeper enforces ``limit`` on the host; this only guards against a keeper that stopped answering."""
        try:
            reply = await asyncio.wait_for(self._call(request), limit + KILL_AFTER + BACKSTOP)
        except TimeoutError:
            return CommandResult(command, 124, "", f"timed out after {limit:g}s (no answer from the connection keeper)")
        return self._result(command, reply)

    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        if isinstance(source, bytes) and len(source) > keeper.INLINE_LIMIT:
            # Large contents go as a file only this user can read, removed once the keeper has sent it.
            fd, tmp = tempfile.mkstemp(dir=keeper.run_dir(), prefix=".put-")
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(source)
                await self._call({"op": "put", "path": tmp, "remote": remote, "mode": mode})
            finally:
                os.unlink(tmp)
        elif isinstance(source, bytes):
            await self._call({"op": "put", "data": keeper.b64(source), "remote": remote, "mode": mode})
        else:
            await self._call({"op": "put", "path": str(Path(source).resolve()), "remote": remote, "mode": mode})

    async def get(self, remote: str, local: Path) -> None:
        await self._call({"op": "get", "remote": remote, "local": str(Path(local).resolve())})

    async def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            with contextlib.suppress(Exception):
                stream[1].close()
                await stream[1].wait_closed()

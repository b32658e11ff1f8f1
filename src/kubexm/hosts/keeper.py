"""The connection keeper: SSH connections that outlive one kubexm run, like OpenSSH's ControlPersist.

A kubexm process spends most of a short run dialling: TCP, key exchange, authentication, and importing
asyncssh to do it. The keeper is a small process per kubexm home that holds the authenticated connections
and serves later runs over a unix socket (``$KUBEXM_HOME/run/keeper-v1.sock``, in a 0700 directory, peer uid
checked), so the next run opens channels on connections that are already up. It exits after ``persist``
seconds without a client (``KUBEXM_PERSIST``, default 60; 0 turns it off).

Each client stream is bound to one host by an ``open`` request carrying everything ``SSHConnection``
needs (secrets included: they travel only over the private socket, never in argv or logs). Connections are
shared by every stream with the same host identity; a connection that sat idle is probed with one SSH
round trip before reuse and re-dialled when the probe fails, so a host that died between runs costs a
reconnect, not a hang. Errors come back as the same kubexm error classes, with message and hint.

Frames: 4-byte big-endian length, then JSON; bytes are base64. One request at a time per stream; while it is
served the client may send ``{"op": "cancel"}`` (or close the stream): the keeper then stops the request
(killing its remote command) and closes the stream once that is done, which the client waits for.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubexm import paths
from kubexm.state.files import open_private, private_dir

# asyncio is imported where it is used, not here: a command that reaches hosts imports this module first thing
# to start the keeper (``prestart``), and asyncio (~15-20 ms) would hold that start back.
if TYPE_CHECKING:
    import asyncio

DEFAULT_PERSIST = 60.0
MAX_FRAME = 64 << 20  # a put of bytes travels in one frame; bigger payloads go as files passed by path
INLINE_LIMIT = 4 << 20  # bytes put inline up to this size; above it the client writes a private temp file
_LEN = struct.Struct(">I")
# A connection idle for longer than this is probed before it serves a new run.
PROBE_AFTER = 2.0
PROBE_TIMEOUT = 5.0
# A keeper started ahead of a run (``prestart``) that never sees a client leaves after this many seconds,
# e.g. when the run stopped at a bad cluster file; one that served a client waits ``persist`` seconds.
UNUSED_GRACE = 15.0


def run_dir() -> Path:
    """The keeper's socket, lock and log (which names hosts and errors): a 0700 directory under $KUBEXM_HOME."""
    return private_dir(paths.home() / "run")


# Bumped whenever requests or replies change: a keeper left running by an older kubexm then simply is not
# found (another socket name), instead of misreading a newer client.
PROTOCOL = 2


def socket_path() -> Path:
    return run_dir() / f"keeper-v{PROTOCOL}.sock"


_started: dict[str, subprocess.Popen[bytes]] = {}


def start(path: Path, persist: float, unused_grace: float = UNUSED_GRACE) -> subprocess.Popen[bytes] | None:
    """Start a keeper in its own session (it outlives this run); once per process and socket."""
    if str(path) in _started:
        return _started[str(path)]
    argv = [sys.executable, "-m", "kubexm.hosts.keeper", str(path), str(persist), str(unused_grace)]
    with open_private(path.with_suffix(".log"), "ab") as log:
        try:
            proc = subprocess.Popen(argv,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
                                    close_fds=True)
        except OSError:
            return None
    _started[str(path)] = proc
    return proc


def prestart() -> None:
    """Start the keeper now when this run will want one and none is listening.

    Called at the very start of a command that reaches hosts: the keeper's own start (an interpreter and
    asyncssh) then overlaps this process's imports and cluster-file parsing on another
    core, instead of following them. Never fails: the run's first connection starts or finds one anyway.
    """
    persist = persist_seconds()
    if persist <= 0:
        return
    try:
        path = socket_path()
        if not path.exists():
            start(path, persist)
    except OSError:
        return


def persist_seconds() -> float:
    """``KUBEXM_PERSIST`` (seconds a keeper outlives its last client; 0: no keeper), default 60."""
    raw = os.environ.get("KUBEXM_PERSIST", "").strip()
    try:
        return max(0.0, float(raw)) if raw else DEFAULT_PERSIST
    except ValueError:
        return DEFAULT_PERSIST


def b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


def unb64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


async def write_frame(writer: asyncio.StreamWriter, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    writer.write(_LEN.pack(len(body)) + body)
    await writer.drain()


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any] | None:
    """The next message, or None when the peer closed the stream."""
    import asyncio

    try:
        head = await reader.readexactly(_LEN.size)
    except asyncio.IncompleteReadError:
        return None
    (size,) = _LEN.unpack(head)
    if size > MAX_FRAME:
        raise ValueError(f"frame of {size} bytes is larger than {MAX_FRAME}")
    message: dict[str, Any] = json.loads(await reader.readexactly(size))
    return message


def error_reply(exc: BaseException) -> dict[str, Any]:
    from kubexm.errors import KubexmError

    if isinstance(exc, KubexmError):
        return {"ok": False, "error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
    return {"ok": False, "error": "ConnectionFault", "message": f"connection keeper: {type(exc).__name__}: {exc}",
            "hint": "re-run with KUBEXM_PERSIST=0 to connect without the keeper"}


# -- the keeper process ----------------------------------------------------------------------------------
class Keeper:
    def __init__(self, persist: float, unused_grace: float = UNUSED_GRACE) -> None:
        self.persist = persist
        self.unused_grace = unused_grace
        self.conns: dict[str, Any] = {}  # identity -> SSHConnection
        self.used: dict[str, float] = {}  # identity -> monotonic time of last use
        self.dialing: dict[str, asyncio.Lock] = {}
        self.clients = 0
        self.served = 0  # client streams so far
        self.last_activity = time.monotonic()

    async def connection(self, target: dict[str, Any]) -> Any:
        """The shared connection for one host identity: reused (after a probe when idle) or dialled."""
        import asyncio

        from kubexm.hosts.base import ConnectOptions, Login
        from kubexm.hosts.ssh import SSHConnection

        identity = hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()
        async with self.dialing.setdefault(identity, asyncio.Lock()):
            conn = self.conns.get(identity)
            # The probe takes a third of the connect timeout and the dial after a failed probe the rest, so a host
            # that died since is reported within one connect timeout, as a host dialled afresh is.
            timeout = target["options"]["connect_timeout"]
            probe_timeout = min(PROBE_TIMEOUT, timeout / 3)
            budget = timeout
            if conn is not None and time.monotonic() - self.used.get(identity, 0) > PROBE_AFTER \
                    and not await conn.probe(probe_timeout):
                self.conns.pop(identity, None)
                with contextlib.suppress(Exception):
                    await conn.close()
                conn = None
                budget = timeout - probe_timeout
            if conn is None:
                opts = target["options"]
                options = ConnectOptions(
                    known_hosts=Path(opts["known_hosts"]) if opts.get("known_hosts") else None,
                    accept_new_host_keys=opts["accept_new_host_keys"],
                    replace_host_keys=frozenset(opts["replace_host_keys"]),
                    connect_timeout=opts["connect_timeout"], command_timeout=opts["command_timeout"])
                bastion = Login(**target["bastion"]) if target.get("bastion") else None
                conn = SSHConnection(Login(**target["host"]), dataclasses.replace(options, connect_timeout=budget),
                                     bastion=bastion)
                await conn.open()
                conn.options = options  # later dials (after a drop) get the whole connect timeout again
                self.conns[identity] = conn
            self.used[identity] = time.monotonic()
            return conn

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import asyncio

        sock = writer.get_extra_info("socket")
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != os.getuid():  # the directory is 0700 already; this is the second lock on the door
            writer.close()
            return
        self.clients += 1
        self.served += 1
        conn: Any = None
        frames: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        pump = asyncio.ensure_future(self._pump(reader, frames))
        try:
            while (request := await frames.get()) is not None:
                self.last_activity = time.monotonic()
                if request.get("op") == "cancel":
                    return  # a cancel that crossed the reply of its request: nothing left to stop
                try:
                    op = request["op"]
                    if op == "open":
                        conn = await self.connection(request["target"])
                        reply: dict[str, Any] | None = {"ok": True}
                    elif conn is None:
                        reply = {"ok": False, "error": "ConnectionFault", "message": "no open host on this stream",
                                 "hint": None}
                    else:  # a connection that dropped meanwhile is re-dialled by SSHConnection itself
                        reply = await self.serve_until_cancelled(conn, request, frames)
                except Exception as exc:  # every failure goes back to the client as a kubexm error
                    reply = error_reply(exc)
                if reply is None:
                    return  # the client cancelled or went away: its command was stopped, the stream ends
                await write_frame(writer, reply)
                self.last_activity = time.monotonic()
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            return  # the client went away or spoke garbage: drop its stream (below), keep the SSH connections
        finally:
            pump.cancel()
            self.clients -= 1
            self.last_activity = time.monotonic()
            with contextlib.suppress(Exception):
                writer.close()

    @staticmethod
    async def _pump(reader: asyncio.StreamReader, frames: asyncio.Queue[dict[str, Any] | None]) -> None:
        """Every frame of a stream, read as it arrives, so a cancel is seen while a request is served;
        None once the client closed the stream (or sent garbage)."""
        import asyncio

        try:
            while (frame := await read_frame(reader)) is not None:
                await frames.put(frame)
        except (ConnectionError, ValueError, asyncio.IncompleteReadError):
            pass
        await frames.put(None)

    async def serve_until_cancelled(self, conn: Any, request: dict[str, Any],
                                    frames: asyncio.Queue[dict[str, Any] | None]) -> dict[str, Any] | None:
        """Serve ``request``; when the client sends anything meanwhile (a cancel) or goes away, cancel it,
        which kills the remote command (SSHConnection), and answer None: the stream then ends."""
        import asyncio

        work = asyncio.ensure_future(self.serve(conn, request))
        interrupt = asyncio.ensure_future(frames.get())
        await asyncio.wait({work, interrupt}, return_when=asyncio.FIRST_COMPLETED)
        if not interrupt.done():
            interrupt.cancel()
            return work.result()
        # Even when the work finished at the same moment, the client asked to end: it waits for the close.
        work.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await work
        return None

    @staticmethod
    async def serve(conn: Any, request: dict[str, Any]) -> dict[str, Any]:
        op = request["op"]
        if op == "run":
            res = await conn.run(request["command"], sudo=request["sudo"], stdin=unb64(request.get("stdin")),
                                 timeout=request.get("timeout"))
        elif op == "stream":
            res = await conn.run_streaming(request["command"], Path(request["source"]), timeout=request.get("timeout"))
        elif op == "put":
            source: Path | bytes = Path(request["path"]) if request.get("path") else (unb64(request["data"]) or b"")
            await conn.put(source, request["remote"], mode=request["mode"])
            return {"ok": True}
        elif op == "get":
            await conn.get(request["remote"], Path(request["local"]))
            return {"ok": True}
        else:
            raise ValueError(f"unknown request {op!r}")
        return {"ok": True, "exit": res.exit_status, "stdout": res.stdout, "stderr": res.stderr}

    async def close(self) -> None:
        import asyncio

        conns, self.conns = list(self.conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)


async def serve(sock_path: Path, persist: float, unused_grace: float = UNUSED_GRACE) -> None:
    import asyncio

    keeper = Keeper(persist, unused_grace)
    server = await asyncio.start_unix_server(keeper.handle, path=str(sock_path))
    os.chmod(sock_path, 0o600)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        while not stop.is_set():
            idle = time.monotonic() - keeper.last_activity
            wait = persist if keeper.served else min(persist, keeper.unused_grace)
            if keeper.clients == 0 and idle >= wait:
                break
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=min(1.0, max(0.05, wait - idle)))
    finally:
        # Unlinked while the lock is still held: no other keeper can have bound this path meanwhile.
        with contextlib.suppress(FileNotFoundError):
            sock_path.unlink()
        server.close()
        await keeper.close()


KEEPER_MAX_HOSTS = 20_000


def main(argv: list[str]) -> int:
    """``python -m kubexm.hosts.keeper SOCKET PERSIST [UNUSED_GRACE]``; started by a kubexm run."""
    import asyncio

    sock_path, persist = Path(argv[0]), float(argv[1])
    unused_grace = float(argv[2]) if len(argv) > 2 else UNUSED_GRACE
    # One keeper per socket. Two runs may start one at the same moment; a keeper that is just exiting still
    # holds the lock for a moment: wait briefly, then leave it to the one that holds it.
    lock = open_private(sock_path.with_suffix(".lock"), "a")  # held for the keeper's whole life
    deadline = time.monotonic() + 3.0
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                return 0
            time.sleep(0.05)
    with contextlib.suppress(FileNotFoundError):
        sock_path.unlink()  # left by a keeper that was killed
    # What dialling needs, loaded before listening: a client that connects meanwhile simply waits for the
    # socket, and the first connections are not held up behind these imports on the event loop.
    import kubexm.hosts.ssh  # noqa: F401
    from kubexm.hosts.limits import raise_open_files

    # One keeper serves every run of this user, whatever the fleet: as many files as the hard limit allows.
    raise_open_files(KEEPER_MAX_HOSTS)
    asyncio.run(serve(sock_path, persist, unused_grace))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

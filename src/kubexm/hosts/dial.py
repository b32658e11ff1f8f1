"""Dialing many hosts at once without losing any: bounded handshakes, transient errors retried in budget.

At fleet size the deploy machine, not the hosts, is what fails first. Three things go wrong when every host
is dialled at the same moment:

- the CPUs cannot finish hundreds of key exchanges at once, so handshakes that started early run past their
  connect timeout while waiting for CPU time. Handshakes in flight are therefore bounded (per process: the run
  and the connection keeper each have their own bound), and a dial waiting for its turn is not charged
  against the host's connect timeout: the budget starts when its own handshake does;
- on a flat network the kernel's neighbour table overflows or has not resolved the address yet, and
  ``connect()`` answers EHOSTUNREACH (or ENETUNREACH, EAGAIN, ENOBUFS) for a host that is up. Those errors are
  retried with exponential backoff and jitter, for as long as the host's connect budget lasts;
- a host that is really down answers "connection refused" at once or never answers at all. Both end the dial
  with ``HostUnreachable`` within one connect timeout; the engine does not dial such a host again in the same
  run (see ``ConnectionPool``), so dead hosts cost one timeout for the whole run, all of them at once.

The TCP connect comes first and outside the handshake bound (``open_tcp``): waiting for a SYN to be answered
costs no CPU, and a host whose packets are dropped must not hold a handshake slot for its whole connect
timeout while the hosts that are up queue behind it.
"""

from __future__ import annotations

import asyncio
import errno
import os
import random
import socket
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

# connect() errors that mean "not yet" rather than "no": address resolution in progress or the neighbour table
# full, a local buffer shortage. A refused connection or a timeout is an answer and is not retried here.
TRANSIENT_ERRNOS = frozenset({errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EAGAIN, errno.ENOBUFS})
FIRST_BACKOFF = 0.2  # seconds; doubled per attempt, with jitter so that retries do not arrive together
MAX_BACKOFF = 3.0
# A handshake is a few milliseconds of CPU on the deploy machine (key exchange, one signature); this many per
# CPU keeps the CPUs busy without letting queued handshakes outlive their timeouts.
HANDSHAKES_PER_CPU = 48
MIN_HANDSHAKES = 32

DEFAULT_CONNECT_TIMEOUT = 15.0


def connect_timeout() -> float:
    """``KUBEXM_CONNECT_TIMEOUT``: seconds one host's dial may take, handshake included (default 15)."""
    raw = os.environ.get("KUBEXM_CONNECT_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_CONNECT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = 0.0
    if not 0.5 <= value <= 600:
        from kubexm.errors import UsageError

        raise UsageError(f"KUBEXM_CONNECT_TIMEOUT={raw!r} is not a number of seconds between 0.5 and 600",
                         hint="unset it for the default of 15 s, or set e.g. KUBEXM_CONNECT_TIMEOUT=5")
    return value


_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()
# TCP connects in flight: only a bound on open sockets and neighbour resolutions at once, far above the
# handshake bound (a connect that waits costs no CPU).
CONNECTS_IN_FLIGHT = 4096
_connect_gates: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Semaphore] = weakref.WeakKeyDictionary()


def handshake_limit() -> int:
    """Handshakes one process runs at once: KUBEXM_DIAL_LIMIT, or a bound from the CPUs this process may use."""
    raw = os.environ.get("KUBEXM_DIAL_LIMIT", "")
    if raw.isdigit() and int(raw) > 0:
        return int(raw)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(MIN_HANDSHAKES, HANDSHAKES_PER_CPU * cpus)


def _gate() -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    gate = _gates.get(loop)
    if gate is None:
        gate = _gates[loop] = asyncio.Semaphore(handshake_limit())
    return gate


def transient(exc: BaseException) -> bool:
    """Whether a failed connect() is worth another try within the same budget."""
    if isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS:
        return True
    # asyncio's happy-eyeballs path joins several OSErrors into one without an errno ("Multiple exceptions").
    inner = getattr(exc, "__cause__", None) or getattr(exc, "__context__", None)
    return isinstance(inner, OSError) and inner.errno in TRANSIENT_ERRNOS


async def dial(attempt: Callable[[float], Awaitable[T]], timeout: float,
               sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
               gate: asyncio.Semaphore | None = None) -> T:
    """Run ``attempt(remaining_seconds)`` until it succeeds, fails for good, or ``timeout`` is used up.

    The budget starts when the first attempt holds a slot of ``gate`` (the handshake bound by default);
    backoff sleeps release the slot so other hosts' attempts go on meanwhile. The last error is raised as it
    came (the caller names it).
    """
    deadline: float | None = None
    backoff = FIRST_BACKOFF
    while True:
        async with gate or _gate():
            now = time.monotonic()
            if deadline is None:
                deadline = now + timeout
            remaining = deadline - now
            try:
                return await attempt(max(remaining, 0.001))
            except Exception as exc:
                remaining = deadline - time.monotonic()
                if not transient(exc) or remaining <= 0:
                    raise
        pause = min(backoff, MAX_BACKOFF, remaining) * random.uniform(0.5, 1.0)
        backoff *= 2
        await sleep(pause)


async def _tcp(address: str, port: int) -> socket.socket:
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(address, port, type=socket.SOCK_STREAM)
    last: OSError = OSError(errno.EHOSTUNREACH, f"no address for {address}")
    for family, kind, proto, _, addr in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, addr)
        except OSError as exc:
            sock.close()
            last = exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise last


async def open_tcp(address: str, port: int, timeout: float,
                   sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> socket.socket:
    """A connected TCP socket to ``address:port`` within ``timeout`` seconds, transient errors retried as
    ``dial`` retries them, under the connect bound instead of the handshake bound. A refusal or the timeout is
    raised as it came (``TimeoutError`` for a host that never answers)."""
    loop = asyncio.get_running_loop()
    gate = _connect_gates.get(loop)
    if gate is None:
        gate = _connect_gates[loop] = asyncio.Semaphore(CONNECTS_IN_FLIGHT)

    async def attempt(remaining: float) -> socket.socket:
        return await asyncio.wait_for(_tcp(address, port), remaining)

    return await dial(attempt, timeout, sleep, gate)

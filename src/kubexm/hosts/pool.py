"""One connection per host per run, opened on first use and reopened after a transport fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from kubexm.errors import ConnectionFault, HostUnreachable
from kubexm.hosts.base import DEPLOY, Connection, ConnectOptions
from kubexm.hosts.kept import KeeperDown, KeptConnection
from kubexm.hosts.limits import raise_open_files
from kubexm.hosts.local import LocalConnection
from kubexm.spec.models import Bastion, Cluster, Host

ConnectionFactory = Callable[[Host | None, ConnectOptions], Connection]


def direct(host: Host, options: ConnectOptions, bastion: Bastion | None) -> Connection:
    from kubexm.hosts.ssh import SSHConnection

    return SSHConnection(host, options, bastion=bastion)


def bastion_of(cluster: Cluster, host: Host) -> Bastion | None:
    return next((b for b in cluster.spec.bastions if b.name == host.bastion), None)


def default_factory(cluster: Cluster) -> ConnectionFactory:
    def make(host: Host | None, options: ConnectOptions) -> Connection:
        if host is None:
            return LocalConnection(DEPLOY, options=options)
        if host.connection == "local":
            sudo = host.sudo_password or host.password
            return LocalConnection(host.name, sudo_password=sudo.get_secret_value() if sudo else None,
                                   options=options)
        bastion = bastion_of(cluster, host)
        if options.persist > 0:
            return KeptConnection(host, options, bastion=bastion, persist=options.persist)
        return direct(host, options, bastion)

    return make


class ConnectionPool:
    def __init__(self, cluster: Cluster, options: ConnectOptions,
                 factory: ConnectionFactory | None = None) -> None:
        self.cluster = cluster
        self.options = options
        self._factory = factory or default_factory(cluster)
        self._conns: dict[str, Connection] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        # Hosts that could not be dialled in this run, and why: asked again, they answer at once instead of
        # costing another connect timeout per task (a dead host is waited for once per run).
        self._unreachable: dict[str, HostUnreachable] = {}
        self._reached: set[str] = set()
        self._redialled: set[str] = set()  # reached earlier, then not: given one retry's dial, not all of them
        raise_open_files(len(cluster.spec.hosts))

    def _spec(self, name: str) -> Host | None:
        return None if name == DEPLOY else self.cluster.host(name)

    async def get(self, name: str) -> Connection:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(name)
            if conn is None and name in self._unreachable:
                raise self._unreachable[name]
            if conn is None:
                spec = self._spec(name)
                conn = self._factory(spec, self.options)
                try:
                    try:
                        await conn.open()
                    except KeeperDown:
                        if spec is None:
                            raise
                        # No connection keeper could be started (no writable run dir, a broken Python): this
                        # run connects by itself, as it would with KUBEXM_PERSIST=0.
                        conn = direct(spec, self.options, bastion_of(self.cluster, spec))
                        await conn.open()
                except HostUnreachable as exc:
                    if name in self._reached and name not in self._redialled:
                        # It answered earlier in this run (sshd restarting, a link blip): one more dial after the
                        # engine's backoff; a host that then still cannot be dialled is down for this run.
                        self._redialled.add(name)
                        raise ConnectionFault(exc.message, hint=exc.hint) from None
                    self._unreachable[name] = exc
                    raise
                self._reached.add(name)
                self._conns[name] = conn
            return conn

    def dial_each(self, names: list[str]) -> dict[str, asyncio.Task[None]]:
        """Start opening the connections of ``names`` at once, one task per host, and return the tasks. Handshakes
        are bounded by kubexm.hosts.dial, not by task slots, so hosts that are down are found in one connect
        timeout for all of them; and a host waits for its own dial only, never for the slowest of the fleet.
        Errors are kept for the step that needs the host to report."""
        return {n: asyncio.ensure_future(self._dial_quietly(n)) for n in dict.fromkeys(names) if n not in self._conns}

    async def _dial_quietly(self, name: str) -> None:
        # Any failure (a refused dial, a missing key) is raised again to the step that asks for the host, which
        # reports it as that host's failure; here it must not surface as an unretrieved task exception.
        with contextlib.suppress(Exception):
            await self.get(name)

    async def reset(self, name: str) -> None:
        """Drop a broken connection so the next ``get`` reconnects."""
        conn = self._conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):  # it is already broken; closing is best effort
                await conn.close()

    async def close_all(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

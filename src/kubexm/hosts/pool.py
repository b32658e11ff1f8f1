"""One connection per host per run, opened on first use and reopened after a transport fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from kubexm.hosts.base import DEPLOY, Connection, ConnectOptions
from kubexm.hosts.kept import KeeperDown, KeptConnection
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

    def _spec(self, name: str) -> Host | None:
        return None if name == DEPLOY else self.cluster.host(name)

    async def get(self, name: str) -> Connection:
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            conn = self._conns.get(name)
            if conn is None:
                spec = self._spec(name)
                conn = self._factory(spec, self.options)
                try:
                    await conn.open()
                except KeeperDown:
                    if spec is None:
                        raise
                    # No connection keeper could be started (no writable run dir, a broken Python): this
                    # run connects by itself, as it would with KUBEXM_PERSIST=0.
                    conn = direct(spec, self.options, bastion_of(self.cluster, spec))
                    await conn.open()
                self._conns[name] = conn
            return conn

    async def reset(self, name: str) -> None:
        """Drop a broken connection so the next ``get`` reconnects."""
        conn = self._conns.pop(name, None)
        if conn is not None:
            with contextlib.suppress(Exception):  # it is already broken; closing is best effort
                await conn.close()

    async def close_all(self) -> None:
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

"""One connection per host per run, opened on first use and reopened after a transport fault."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from kubexm.hosts.base import DEPLOY, Connection, ConnectOptions
from kubexm.hosts.local import LocalConnection
from kubexm.spec.models import Cluster, Host

ConnectionFactory = Callable[[Host | None, ConnectOptions], Connection]


def default_factory(cluster: Cluster) -> ConnectionFactory:
    def make(host: Host | None, options: ConnectOptions) -> Connection:
        if host is None:
            return LocalConnection(DEPLOY)
        if host.connection == "local":
            sudo = host.sudo_password or host.password
            return LocalConnection(host.name, sudo_password=sudo.get_secret_value() if sudo else None)
        from kubexm.hosts.ssh import SSHConnection

        bastion = next((b for b in cluster.spec.bastions if b.name == host.bastion), None)
        return SSHConnection(host, options, bastion=bastion)

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
                conn = self._factory(self._spec(name), self.options)
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

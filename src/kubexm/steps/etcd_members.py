"""Growing and shrinking an etcd cluster one member at a time, keeping quorum throughout."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import ConnectionFault, KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.steps.common import kubexm_command
from kubexm.steps.etcd import (
    BIN,
    BOOTSTRAP_FILE,
    ENV_FILE,
    MARKER,
    PKI_DIR,
    UNIT_FILE,
    bootstrap_text,
    data_dir,
    etcd_members,
    etcdctl,
    url,
)


def _names(host: HostContext) -> list[str]:
    from kubexm.engine.executor import match_hosts

    return match_hosts(host.cluster, host.run_ctx.options.nodes or [])


async def healthy_peer(host: HostContext, exclude: set[str]) -> HostContext:
    """A running member other than ``exclude`` to run membership commands on."""
    tried = []
    for name, _ in etcd_members(host.cluster):
        if name in exclude:
            continue
        peer = host.run_ctx.host(name)
        try:
            res = await peer.run(etcdctl("endpoint", "health", readonly=True), check=False, timeout=20)
        except (ConnectionFault, KubexmError) as exc:
            tried.append(f"{name}: {exc.message}")
            continue
        if res.ok:
            return peer
        tried.append(f"{name}: not healthy")
    raise StepFailed("no healthy etcd member to change membership through: " + ("; ".join(tried) or "none"),
                     hint="bring the existing members up first")


async def member_list(peer: HostContext) -> list[dict[str, Any]]:
    res = await peer.run(etcdctl("member", "list", "-w", "json", readonly=True), timeout=30)
    members: list[dict[str, Any]] = json.loads(res.stdout).get("members", [])
    return members


async def reconfigure(peer: HostContext, *args: str, timeout: float = 60.0) -> None:
    """Run a membership change; etcd refuses one until every member has been connected for a few seconds
    ("unhealthy cluster"), e.g. right after creation or a restart, so that refusal is waited out."""
    deadline = time.monotonic() + timeout
    while True:
        res = await peer.run(etcdctl(*args), check=False, timeout=30)
        if res.ok:
            return
        if "unhealthy cluster" not in res.stderr or time.monotonic() > deadline:
            tail = res.stderr.strip().splitlines()[-1:] or [f"exit {res.exit_status}"]
            raise StepFailed(f"etcdctl {' '.join(args)} failed on {peer.name}: {tail[0]}",
                             hint="check the health of the existing members first")
        await asyncio.sleep(2)


async def wait_all_healthy(peer: HostContext, timeout: float = 120.0) -> None:
    """Every member in the member list answers healthy. `endpoint health --cluster` asks only members that
    published client URLs, and a member just added publishes them only once it has started and caught up:
    all answering endpoints being healthy is not enough, their number must match the member list."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        res = await peer.run(etcdctl("endpoint", "health", "--cluster", "-w", "json", readonly=True),
                             check=False, timeout=30)
        if res.ok:
            try:
                health = json.loads(res.stdout)
                want = len(await member_list(peer))
                if health and all(e.get("health") for e in health) and len(health) >= want:
                    return
                last = str(health) if len(health) >= want else f"{len(health)} of {want} members answer"
            except ValueError:
                last = res.stdout[:200]
        else:
            last = (res.stderr or res.stdout).strip()[-200:]
        await asyncio.sleep(1)
    raise StepFailed(f"etcd did not become healthy after the membership change: {last}",
                     hint="check `journalctl -u etcd` on the new member")


@dataclass(frozen=True)
class JoinEtcdCluster(Step):
    """`member add` through a healthy member, then start this member with state `existing`."""

    def describe(self) -> str:
        return "join the running etcd cluster (member add, start, wait healthy)"

    async def check(self, host: HostContext) -> bool:
        peer = await healthy_peer(host, {host.name})
        started = {m.get("name") for m in await member_list(peer)}
        active = (await host.run(sh("systemctl", "is-active", "-q", "etcd", readonly=True), check=False)).ok
        return host.name in started and active

    async def run(self, host: HostContext) -> None:
        data = data_dir(host.cluster)
        peer = await healthy_peer(host, {host.name})
        peer_url = url(host.address, 2380)
        members = await member_list(peer)
        if not any(peer_url in m.get("peerURLs", []) for m in members):
            await reconfigure(peer, "member", "add", host.name, f"--peer-urls={peer_url}")
            members = await member_list(peer)
        initial = [f"{m['name']}={m['peerURLs'][0]}" for m in members if m.get("name") and m.get("peerURLs")]
        initial = [i for i in initial if not i.startswith(f"{host.name}=")] + [f"{host.name}={peer_url}"]
        aside = f"{data}.before-join-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        await host.run(set_aside(data, aside), check=False)
        await host.upload(bootstrap_text(",".join(initial), "existing"), BOOTSTRAP_FILE, mode=0o644)
        # Not steps.common.Systemd: a joining member is ready only once the cluster took it in, so etcd is
        # started without waiting for it (--no-block) and the health of all members is awaited below.
        await host.run(sh("systemctl", "daemon-reload") & sh("systemctl", "enable", "etcd")
                       & sh("systemctl", "start", "--no-block", "etcd"))
        await wait_all_healthy(peer)


@dataclass(frozen=True)
class LeaveEtcdCluster(Step):
    """`member remove` through another healthy member; refuses to drop the last member or quorum."""

    def describe(self) -> str:
        return "remove this member from the etcd cluster"

    async def check(self, host: HostContext) -> bool:
        leaving = set(_names(host))
        peer = await healthy_peer(host, leaving)
        return not any(m.get("name") == host.name for m in await member_list(peer))

    async def run(self, host: HostContext) -> None:
        leaving = set(_names(host))
        peer = await healthy_peer(host, leaving)
        members = await member_list(peer)
        mine = [m for m in members if m.get("name") == host.name]
        if not mine:
            return
        remaining = len(members) - 1
        if remaining < 1:
            raise StepFailed(f"{host.name} is the last etcd member; removing it would destroy the cluster",
                             hint=f"use `{kubexm_command(host, 'delete', 'cluster')}` to remove the whole cluster")
        health = await peer.run(etcdctl("endpoint", "health", "--cluster", "-w", "json", readonly=True),
                                check=False, timeout=30)
        try:
            healthy = {e.get("endpoint") for e in json.loads(health.stdout or "[]") if e.get("health")}
        except ValueError:
            healthy = set()
        my_urls = set(mine[0].get("clientURLs", []))
        healthy_after = len(healthy - my_urls)
        quorum_after = remaining // 2 + 1
        if healthy_after < quorum_after and not host.run_ctx.options.force:
            raise StepFailed(f"removing {host.name} leaves {healthy_after} healthy of {remaining} members, "
                             f"below quorum ({quorum_after})",
                             hint="bring the unhealthy members back first, or pass --force")
        member_id = format(int(mine[0]["ID"]), "x")
        await reconfigure(peer, "member", "remove", member_id)
        await wait_all_healthy(peer)


@dataclass(frozen=True)
class CleanEtcdNode(Step):
    """Stop etcd on a removed member and delete its data, configuration, certificates and binaries."""

    def describe(self) -> str:
        return "stop etcd and remove its data, config, certificates and binaries"

    async def check(self, host: HostContext) -> bool:
        return (await host.run(self.check_script(host), check=False)).ok

    def check_script(self, host: HostContext) -> Cmd:
        return shell("test ! -e {unit} && test ! -e {data} && test ! -e {env}",
                     unit=UNIT_FILE, data=data_dir(host.cluster), env=ENV_FILE, readonly=True)

    async def run(self, host: HostContext) -> None:
        files = [data_dir(host.cluster), ENV_FILE, BOOTSTRAP_FILE, UNIT_FILE, PKI_DIR, f"{BIN}/etcd", f"{BIN}/etcdctl",
                 MARKER]
        await host.run(sh("systemctl", "disable", "--now", "etcd").no_stderr()
                       .then(sh("rm", "-rf", "--", *files) & sh("systemctl", "daemon-reload")))


def set_aside(data: str, aside: str) -> Cmd:
    """Stop etcd and move its data directory (when there is one) to ``aside``."""
    return sh("systemctl", "stop", "etcd").no_stderr().then(
        shell("if [ -e {data} ]; then mv -- {data} {aside}; fi", data=data, aside=aside))


__all__ = ["CleanEtcdNode", "JoinEtcdCluster", "LeaveEtcdCluster"]

"""Relay distribution: one file to many hosts while the deploy machine sends it only a few times.

The deploy machine streams the file into ``seeds`` hosts; each of them writes it to disk and forwards the
same stream to the next host of its chain over a plain TCP connection (socat), and so on down the chain,
all at once. Every hop verifies the sha256 before the file is moved into place. A host whose copy did not
arrive intact (a relay host failed, socat is missing, a port was taken) gets a direct upload instead, so
the result is the same as uploading to everyone, only faster.
"""

from __future__ import annotations

import asyncio
import hashlib
import shlex
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubexm.engine.context import RunContext

PORT = 47123


def sha256_path(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class Distribution:
    """How each host got the file: "present" (already there), "relay", "direct"; and what failed."""

    how: dict[str, str] = field(default_factory=dict)
    relay_failures: dict[str, str] = field(default_factory=dict)
    bytes_sent: int = 0  # by the deploy machine


def chains(hosts: list[str], seeds: int) -> list[list[str]]:
    """Hosts split into ``seeds`` chains of near-equal length (order kept)."""
    count = max(1, min(seeds, len(hosts)))
    return [hosts[i::count] for i in range(count)]


# -T: a hop that stops moving data for this long is given up on (a stalled peer must not hold the chain).
STALL = 10


def _forward(next_ip: str | None, port: int) -> str:
    if not next_ip:
        return "cat >/dev/null"
    return f"socat -T {STALL} -u STDIN TCP:{next_ip}:{port},retry=100,interval=0.05"


def _receive_script(tmp: str, digest: str, listen_ip: str, next_ip: str | None, port: int, wait: int) -> str:
    forward = _forward(next_ip, port)
    # tee -p: keep writing this host's copy even if the next hop breaks.
    return (f"umask 077; timeout {wait} socat -T {STALL} -u TCP-LISTEN:{port},bind={listen_ip},reuseaddr STDOUT "
            f"| tee -p {tmp} | {forward}; "
            f"test \"$(sha256sum < {tmp} | cut -d' ' -f1)\" = {digest}")


def _seed_script(tmp: str, digest: str, next_ip: str | None, port: int) -> str:
    forward = _forward(next_ip, port)
    return (f"umask 077; tee -p {tmp} | {forward}; "
            f"test \"$(sha256sum < {tmp} | cut -d' ' -f1)\" = {digest}")


async def distribute(run: RunContext, hosts: list[str], source: Path, remote: str, *, mode: int = 0o644,
                     seeds: int = 2, port: int = PORT, wait: int = 600) -> Distribution:
    """Put ``source`` at ``remote`` on every host; returns how each got it."""
    digest = await asyncio.to_thread(sha256_path, source)
    size = source.stat().st_size
    result = Distribution()
    have = await asyncio.gather(*(run.host(h).sha256(remote) for h in hosts))
    todo = [h for h, got in zip(hosts, have, strict=True) if got != digest]
    result.how.update({h: "present" for h in hosts if h not in todo})
    relayed: set[str] = set()
    if len(todo) > seeds and await _relay_possible(run, todo):
        relayed = await _relay(run, todo, source, digest, remote, mode, seeds, port, wait, result)
        result.bytes_sent += size * min(seeds, len(todo))
    direct = [h for h in todo if h not in relayed]

    async def upload(h: str) -> None:
        await run.host(h).upload(source, remote, mode=mode)
        result.how[h] = "direct"

    await asyncio.gather(*(upload(h) for h in direct))
    result.bytes_sent += size * len(direct)
    return result


async def _relay_possible(run: RunContext, hosts: list[str]) -> bool:
    answers = await asyncio.gather(*(run.host(h).run("command -v socat >/dev/null && command -v tee >/dev/null",
                                                     sudo=False, check=False) for h in hosts))
    return all(a.ok for a in answers)


async def _relay(run: RunContext, todo: list[str], source: Path, digest: str, remote: str, mode: int, seeds: int,
                 port: int, wait: int, result: Distribution) -> set[str]:
    tmp = f"/tmp/.kubexm-relay-{uuid.uuid4().hex[:12]}"
    ips = {h: run.cluster.host(h).internal_ip for h in todo}
    ok: set[str] = set()

    async def finish(h: str, res_ok: bool, why: str) -> None:
        host = run.host(h)
        if res_ok:
            placed = await host.run(f"mkdir -p {shlex.quote(str(Path(remote).parent))} && install -m {mode:o} "
                                    f"{tmp} {shlex.quote(remote)}", check=False)
            res_ok, why = placed.ok, placed.stderr.strip() or why
        await host.run(f"rm -f {tmp}", sudo=False, check=False)
        if res_ok:
            ok.add(h)
            result.how[h] = "relay"
        else:
            result.relay_failures[h] = why

    async def receiver(h: str, nxt: str | None) -> None:
        try:
            res = await run.host(h).run(_receive_script(tmp, digest, ips[h], ips.get(nxt) if nxt else None,
                                                        port, wait), sudo=False, check=False, timeout=wait + 30)
            await finish(h, res.ok, res.stderr.strip()[-200:] or f"exit {res.exit_status}")
        except Exception as exc:
            result.relay_failures[h] = str(exc)

    async def seed(chain: list[str]) -> None:
        h, nxt = chain[0], (chain[1] if len(chain) > 1 else None)
        try:
            conn = await run.pool.get(h)
            res = await conn.run_streaming(_seed_script(tmp, digest, ips.get(nxt) if nxt else None, port), source,
                                           timeout=wait)
            await finish(h, res.ok, res.stderr.strip()[-200:] or f"exit {res.exit_status}")
        except Exception as exc:
            result.relay_failures[h] = str(exc)

    async def run_chain(chain: list[str]) -> None:
        loop = asyncio.get_running_loop()
        receivers = [asyncio.ensure_future(receiver(h, chain[i + 1] if i + 1 < len(chain) else None))
                     for i, h in enumerate(chain) if i > 0]
        started = loop.time()
        await seed(chain)
        if not receivers:
            return
        # The stream has left the seed: intact hops finish within moments. A hop still waiting after a grace
        # period sits behind a broken one; stop its listener so it falls back to a direct upload.
        grace = max(10.0, 2 * (loop.time() - started))
        _, pending = await asyncio.wait(receivers, timeout=grace)
        for i, h in enumerate(chain[1:]):
            if receivers[i] in pending:
                await run.host(h).run(f"pkill -f {shlex.quote(f'TCP-LISTEN:{port},bind={ips[h]}')}", sudo=False,
                                      check=False)
        await asyncio.gather(*receivers)

    await asyncio.gather(*(run_chain(c) for c in chains(todo, seeds)))
    return ok

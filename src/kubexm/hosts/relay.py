"""Relay distribution: one file to many hosts while the deploy machine sends it only a few times.

The deploy machine streams the file into ``seeds`` hosts; each of them writes it to disk and forwards the
same stream to the next host of its chain over a plain TCP connection (socat), and so on down the chain,
all at once. Every hop verifies the sha256 before the file is moved into place. A host whose copy did not
arrive intact (a relay host failed, socat is missing, a port was taken) gets a direct upload instead, so
the result is the same as uploading to everyone, only faster.
"""

from __future__ import annotations

import asyncio
import posixpath
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubexm.hosts.digest import sha256_command, sha256_file
from kubexm.hosts.shell import Cmd, sh, shell

if TYPE_CHECKING:
    from kubexm.engine.context import RunContext

PORT = 47123


@dataclass
class Distribution:
    """How each host got the file: "present" (already there), "relay", "direct"; and what failed."""

    how: dict[str, str] = field(default_factory=dict)
    relay_failures: dict[str, str] = field(default_factory=dict)
    unreachable: list[tuple[str, str]] = field(default_factory=list)  # (hop, next hop) it could not pass it on to
    bytes_sent: int = 0  # by the deploy machine


def chains(hosts: list[str], seeds: int) -> list[list[str]]:
    """Hosts split into ``seeds`` chains of near-equal length (order kept)."""
    count = max(1, min(seeds, len(hosts)))
    return [hosts[i::count] for i in range(count)]


# -T: a hop that stops moving data for this long is given up on (a stalled peer must not hold the chain).
STALL = 10
# Connecting to the next hop: its listener may start a moment after this hop does (refused: retried every
# 0.1 s, ~6 s in all); a firewall that drops the port answers nothing, and each attempt then ends after
# CONNECT_TIMEOUT, so such a hop gives up within about a minute and the hosts behind it get direct uploads.
CONNECT_TIMEOUT = 1
RETRIES = 60
# What a hop prints (stderr) when it could not pass the stream on: the hops behind it stop waiting at once.
FORWARD_FAILED = "kubexm-relay: forward failed"
# socat moves 8 KiB per system call by default; 128 KiB cuts the calls (and CPU) per hop by an order.
BUFFER = 131072


# An address socat reads as one host: anything else (a comma or a colon starts socat syntax) is not relayed.
_SOCAT_HOST = re.compile(r"[A-Za-z0-9.-]+|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")


def _connect(ip: str, port: int) -> str:
    host = f"[{ip}]" if ":" in ip else ip  # socat takes an IPv6 address in brackets
    return f"TCP:{host}:{port},connect-timeout={CONNECT_TIMEOUT},retry={RETRIES},interval=0.1"


def _listen(ip: str, port: int) -> str:
    if ":" in ip:
        return f"TCP6-LISTEN:{port},bind=[{ip}],reuseaddr"
    return f"TCP-LISTEN:{port},bind={ip},reuseaddr"


def _forward(next_ip: str | None, port: int) -> Cmd:
    if not next_ip:
        return shell("cat >/dev/null")
    socat = sh("socat", "-b", BUFFER, "-T", STALL, "-u", "STDIN", _connect(next_ip, port))
    return shell("{socat} || echo {failed} >&2", socat=socat, failed=FORWARD_FAILED)


def _verify(tmp: str, digest: str) -> Cmd:
    # Reads the copy once more, from the page cache, with digest.py's fast form (openssl where present).
    return shell('test "$({sha256} < {tmp} | cut -d " " -f1)" = {digest}', sha256=sha256_command((), fast=True),
                 tmp=tmp, digest=digest)


def _receive_script(tmp: str, digest: str, listen_ip: str, next_ip: str | None, port: int, wait: int) -> Cmd:
    # tee -p: keep writing this host's copy even if the next hop breaks.
    return shell("umask 077; timeout {wait} socat -b {buffer} -T {stall} -u {listen} STDOUT | tee -p {tmp} | {forward}; "
                 "{verify}", wait=wait, buffer=BUFFER, stall=STALL, listen=_listen(listen_ip, port), tmp=tmp,
                 forward=_forward(next_ip, port), verify=_verify(tmp, digest))


def _seed_script(tmp: str, digest: str, next_ip: str | None, port: int) -> Cmd:
    return shell("umask 077; tee -p {tmp} | {forward}; {verify}", tmp=tmp, forward=_forward(next_ip, port),
                 verify=_verify(tmp, digest))


def _listener_pattern(ip: str, port: int) -> str:
    """A pkill -f regular expression matching exactly this host's relay listener."""
    return re.sub(r"[.\[\]]", lambda m: "\\" + m.group(), _listen(ip, port).split(",reuseaddr")[0])


async def distribute(run: RunContext, hosts: list[str], source: Path, remote: str, *, mode: int = 0o644,
                     seeds: int = 2, port: int = PORT, wait: int = 600, missing: bool = False) -> Distribution:
    """Put ``source`` at ``remote`` on every host; returns how each got it. ``missing``: the caller has just
    checked that no host holds it, so the per-host checksum round is skipped."""
    digest = await asyncio.to_thread(sha256_file, source)
    size = source.stat().st_size
    result = Distribution()
    todo = list(hosts)
    if not missing:
        have = await asyncio.gather(*(run.host(h).sha256(remote, large=True) for h in hosts))
        todo = [h for h, got in zip(hosts, have, strict=True) if got != digest]
    result.how.update({h: "present" for h in hosts if h not in todo})
    relayed: set[str] = set()
    staged = await _stage(run, todo, remote) if len(todo) > seeds else {}
    if len(staged) > seeds:
        relayed = await _relay(run, staged, source, digest, remote, mode, seeds, port, wait, result)
        result.bytes_sent += size * min(seeds, len(staged))
    direct = [h for h in todo if h not in relayed]

    async def upload(h: str) -> None:
        await run.host(h).upload(source, remote, mode=mode)
        result.how[h] = "direct"

    await asyncio.gather(*(upload(h) for h in direct))
    result.bytes_sent += size * len(direct)
    return result


async def _stage(run: RunContext, hosts: list[str], remote: str) -> dict[str, str]:
    """{host: private staging directory beside ``remote``} for the hosts that can take part in a relay.

    The directory sits in the destination's own directory (same filesystem), owned by the login user: the
    stream is written there without root, and moved into place by a rename instead of a second copy.
    """
    parent = posixpath.dirname(remote) or "/"

    async def one(h: str) -> tuple[str, str | None]:
        if not _SOCAT_HOST.fullmatch(run.cluster.host(h).internal_ip):
            return h, None  # not an address socat can be given safely: this host gets a direct upload
        # An unguessable name, created atomically (mkdir fails if it exists) and private until handed over.
        d = posixpath.join(parent, f".kubexm-relay-{secrets.token_hex(8)}")
        res = await run.host(h).run(shell(
            "command -v socat >/dev/null && command -v tee >/dev/null && mkdir -p {parent} && "
            "mkdir -m 0700 {d} && chown -- {user} {d} && echo {d}", parent=parent, d=d,
            user=run.cluster.host(h).user), check=False)
        out = res.stdout.strip()
        return h, out if res.ok and out.startswith("/") else None

    answers = await asyncio.gather(*(one(h) for h in hosts))
    return {h: d for h, d in answers if d}


def _why(stderr: str, exit_status: int) -> str:
    return stderr.strip()[-200:] or f"exit {exit_status}"


async def _relay(run: RunContext, staged: dict[str, str], source: Path, digest: str, remote: str, mode: int,
                 seeds: int, port: int, wait: int, result: Distribution) -> set[str]:
    todo = list(staged)
    tmp = {h: f"{d}/data" for h, d in staged.items()}
    ips = {h: run.cluster.host(h).internal_ip for h in todo}
    ok: set[str] = set()

    async def finish(h: str, res_ok: bool, why: str) -> None:
        host, data = run.host(h), tmp[h]
        if res_ok:
            place = shell("chown 0:0 {data} && chmod {mode} {data} && mv -f {data} {remote}", data=data,
                          mode=f"{mode:o}", remote=remote)
            cleanup = shell("{place}; s=$?; rm -rf {d}; exit $s", place=place, d=staged[h])
        else:
            cleanup = sh("rm", "-rf", staged[h])
        done = await host.run(cleanup, check=False)
        if res_ok and done.ok:
            ok.add(h)
            result.how[h] = "relay"
        else:
            result.relay_failures[h] = why if not res_ok else (done.stderr.strip() or f"exit {done.exit_status}")

    def passed_on(h: str, nxt: str | None, stderr: str) -> bool:
        if FORWARD_FAILED in stderr and nxt:
            result.unreachable.append((h, nxt))
            return False
        return True

    async def receiver(h: str, nxt: str | None) -> bool:
        """This hop's copy, placed; True when it also passed the stream on to ``nxt``."""
        try:
            res = await run.host(h).run(_receive_script(tmp[h], digest, ips[h], ips.get(nxt) if nxt else None,
                                                        port, wait), sudo=False, check=False, timeout=wait + 30)
            await finish(h, res.ok, _why(res.stderr, res.exit_status))
            return passed_on(h, nxt, res.stderr)
        except Exception as exc:
            result.relay_failures[h] = str(exc)
            return False

    async def seed(chain: list[str]) -> bool:
        h, nxt = chain[0], (chain[1] if len(chain) > 1 else None)
        try:
            conn = await run.pool.get(h)
            res = await conn.run_streaming(_seed_script(tmp[h], digest, ips.get(nxt) if nxt else None, port).text,
                                           source, timeout=wait)
            await finish(h, res.ok, _why(res.stderr, res.exit_status))
            return passed_on(h, nxt, res.stderr)
        except Exception as exc:
            result.relay_failures[h] = str(exc)
            return False

    async def run_chain(chain: list[str]) -> None:
        loop = asyncio.get_running_loop()
        receivers = [asyncio.ensure_future(receiver(h, chain[i + 1] if i + 1 < len(chain) else None))
                     for i, h in enumerate(chain) if i > 0]
        started = loop.time()
        broken = None if await seed(chain) else 0  # receivers[broken:] will never get the stream
        if broken is None and receivers:
            # The stream has left the seed: intact hops finish one after another within moments. A hop that
            # could not pass it on, or one still waiting after a grace period, cuts off the hops behind it.
            deadline = loop.time() + max(10.0, 2 * (loop.time() - started))
            for i, hop in enumerate(receivers):
                try:
                    forwarded = await asyncio.wait_for(asyncio.shield(hop), timeout=max(0.0, deadline - loop.time()))
                except TimeoutError:
                    broken = i
                    break
                if not forwarded:
                    broken = i + 1
                    break
        if broken is not None:
            # Stop the listeners still waiting there, so that those hosts fall back to a direct upload now.
            for h, hop in zip(chain[1 + broken:], receivers[broken:], strict=True):
                if not hop.done():
                    await run.host(h).run(sh("pkill", "-f", _listener_pattern(ips[h], port)), sudo=False, check=False)
        await asyncio.gather(*receivers)

    await asyncio.gather(*(run_chain(c) for c in chains(todo, seeds)))
    return ok

"""Host-side plumbing for lab nodes: commands, network namespaces, veth and bridge, overlays, processes."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import signal
import subprocess
import time
from pathlib import Path

from kubexm.errors import KubexmError


def sh(*argv: str, check: bool = True, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(argv), capture_output=True, text=True, input=input_text, check=False)
    if check and proc.returncode != 0:
        raise KubexmError(f"`{' '.join(argv)}` failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    return proc


def link_exists(name: str) -> bool:
    return sh("ip", "link", "show", "dev", name, check=False).returncode == 0


def netns_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()


def used_networks() -> list[tuple[str, ipaddress.IPv4Network]]:
    """Networks already on this machine's interfaces and routes (to refuse an overlapping lab subnet)."""
    out: list[tuple[str, ipaddress.IPv4Network]] = []
    addrs = json.loads(sh("ip", "-j", "-4", "addr", "show").stdout or "[]")
    for link in addrs:
        for info in link.get("addr_info", []):
            net = ipaddress.ip_network(f"{info['local']}/{info['prefixlen']}", strict=False)
            out.append((link["ifname"], net))  # type: ignore[arg-type]
    routes = json.loads(sh("ip", "-j", "-4", "route", "show").stdout or "[]")
    for route in routes:
        dst = route.get("dst", "")
        if dst and dst != "default":
            out.append((route.get("dev", "?"), ipaddress.ip_network(dst if "/" in dst else f"{dst}/32", strict=False)))  # type: ignore[arg-type]
    return out


def ensure_bridge(name: str, address: str, prefix: int) -> None:
    if not link_exists(name):
        sh("ip", "link", "add", name, "type", "bridge")
    current = sh("ip", "-4", "-o", "addr", "show", "dev", name).stdout
    if f" {address}/{prefix} " not in current:
        sh("ip", "addr", "add", f"{address}/{prefix}", "dev", name)
    sh("ip", "link", "set", name, "up")


def ensure_node_network(netns: str, host_veth: str, bridge: str, address: str, prefix: int, gateway: str) -> None:
    """A netns whose eth0 is one end of a veth pair; the other end is plugged into the bridge."""
    if not netns_exists(netns):
        sh("ip", "netns", "add", netns)
    if not link_exists(host_veth):
        peer = host_veth + "p"
        sh("ip", "link", "add", host_veth, "type", "veth", "peer", "name", peer)
        sh("ip", "link", "set", peer, "netns", netns)
        sh("ip", "-n", netns, "link", "set", peer, "name", "eth0")
    sh("ip", "link", "set", host_veth, "master", bridge)
    sh("ip", "link", "set", host_veth, "up")
    have = sh("ip", "-n", netns, "-4", "-o", "addr", "show", "dev", "eth0").stdout
    if f" {address}/{prefix} " not in have:
        sh("ip", "-n", netns, "addr", "add", f"{address}/{prefix}", "dev", "eth0")
    sh("ip", "-n", netns, "link", "set", "lo", "up")
    sh("ip", "-n", netns, "link", "set", "eth0", "up")
    del gateway  # no default route on purpose: nodes reach only the lab subnet


def remove_link(name: str) -> None:
    if link_exists(name):
        sh("ip", "link", "del", name, check=False)


def remove_netns(name: str) -> None:
    if netns_exists(name):
        sh("ip", "netns", "del", name, check=False)


def is_mounted(path: Path) -> bool:
    target = str(path.resolve())
    with open("/proc/self/mounts") as fh:
        return any(line.split()[1] == target for line in fh)


def mount_overlay(lower: Path, upper: Path, work: Path, merged: Path) -> None:
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    if not is_mounted(merged):
        sh("mount", "-t", "overlay", "overlay", "-o",
           f"lowerdir={lower},upperdir={upper},workdir={work}", str(merged))


def unmount(path: Path) -> None:
    for _ in range(20):
        if not is_mounted(path):
            return
        # Nested mounts nspawn left behind go first; then the overlay itself.
        sh("umount", "-R", str(path), check=False)
        if is_mounted(path):
            time.sleep(0.25)
    if is_mounted(path):
        sh("umount", "-l", str(path), check=False)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (read from /proc; a container's processes hang below nspawn)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def stop_process(pid: int | None, grace: float = 20.0) -> None:
    """SIGTERM (nspawn then shuts the node down cleanly), then SIGKILL the whole tree if it lingers."""
    if not alive(pid):
        return
    assert pid is not None
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive(pid):
        _reap(pid)
        time.sleep(0.2)
    if alive(pid):
        kill_tree(pid)


def kill_tree(pid: int | None) -> None:
    if not alive(pid):
        return
    assert pid is not None
    for p in [pid, *descendants(pid)]:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and alive(pid):
        _reap(pid)
        time.sleep(0.1)


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)

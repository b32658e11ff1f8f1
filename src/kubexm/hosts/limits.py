"""Limits of the deploy machine that a large fleet runs into: open files and the kernel's neighbour table."""

from __future__ import annotations

import ipaddress
import json
import resource
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

# File descriptors per host: the SSH socket, a bastion tunnel or the keeper's stream, and slack for uploads.
FDS_PER_HOST = 3
FDS_BASE = 256
NEIGH = Path("/proc/sys/net/ipv4/neigh/default")
NEIGH6 = Path("/proc/sys/net/ipv6/neigh/default")


def open_files_needed(hosts: int) -> int:
    return FDS_BASE + FDS_PER_HOST * hosts


def raise_open_files(hosts: int) -> str | None:
    """Raise this process's soft RLIMIT_NOFILE towards what ``hosts`` connections need (never above the hard
    limit, never lowering it). Returns a warning when the hard limit is too low, else None."""
    need = open_files_needed(hosts)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    target = need if hard == resource.RLIM_INFINITY else min(need, hard)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            target = soft
    if target < need:
        return (f"{hosts} hosts need about {need} open files but this process may open at most {target} "
                f"(hard limit): raise it, e.g. `ulimit -Hn {need}` or LimitNOFILE in the service that starts kubexm")
    return None


def _local_networks() -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """The subnets of this machine's own interfaces (where hosts are reached without a router)."""
    ip = shutil.which("ip")
    if ip is None:
        return []
    try:
        out = subprocess.run([ip, "-j", "addr", "show"], capture_output=True, text=True, timeout=5, check=True).stdout
        links = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    nets: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for link in links:
        for a in link.get("addr_info", []):
            try:
                net = ipaddress.ip_network(f"{a['local']}/{a['prefixlen']}", strict=False)
            except (KeyError, ValueError):
                continue
            if not net.is_loopback and net.num_addresses > 1:
                nets.append(net)
    return nets


def _read_int(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def neighbour_warning(addresses: Iterable[str]) -> str | None:
    """A warning when more hosts sit on this machine's own subnets than its neighbour table keeps.

    Above gc_thresh2 the kernel evicts entries within seconds and above gc_thresh3 it refuses new ones, so
    connects to hosts that are up fail with "no route to host" at random. Routed hosts need no entry."""
    ips = []
    for a in addresses:
        try:
            ips.append(ipaddress.ip_address(a))
        except ValueError:
            continue  # a host name: where it resolves is not known here
    nets = _local_networks()
    for family, base in ((4, NEIGH), (6, NEIGH6)):
        near = sum(1 for ip in ips if ip.version == family and any(ip in n for n in nets if n.version == family))
        soft, hard = _read_int(base / "gc_thresh2"), _read_int(base / "gc_thresh3")
        if soft is None or hard is None or near <= soft:
            continue
        sysctl = f"net.ipv{family}.neigh.default"
        want = max(1024, 1 << (near * 2 - 1).bit_length())
        return (f"{near} hosts are on this machine's own subnets but its neighbour table keeps {soft} entries "
                f"({sysctl}.gc_thresh2; at most {hard}): connects will fail with 'no route to host'; raise it, e.g. "
                f"sysctl -w {sysctl}.gc_thresh1={want // 2} {sysctl}.gc_thresh2={want} {sysctl}.gc_thresh3={want * 2}")
    return None

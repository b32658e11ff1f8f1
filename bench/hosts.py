"""Lightweight SSH hosts for the benchmark: one network namespace, address and OpenSSH sshd each.

Every host has its own netns with a veth on a shared bridge, its own sshd (run in a private mount
namespace so /srv/kxbench is the host's own directory), and serves one non-root user, ``kxbench``, whose
shell is /bin/sh and who has no profile: commands cost what SSH costs, nothing more. The hosts' files live
on a tmpfs: real machines have a disk each, here fifty would share one virtual disk, and a workload that
writes to every host (d) would measure that disk's write-back instead of the tools. Everything is
removed again by ``teardown`` (also after a crash, from the state file).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

USER = "kxbench"
BRIDGE = "kxbench0"
NET = ipaddress.ip_network("10.214.0.0/16")
STATE = Path("/run/kxbench/state.json")
LOCK = Path("/run/kxbench/lock")  # held from setup to teardown: one set of bench hosts on a machine at a time
WORK = Path("/var/tmp/kxbench")
ETC = WORK / "etc"


@dataclass
class BenchHost:
    name: str
    address: str
    netns: str
    veth: str


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=check)


def _ensure_user() -> None:
    if _run("id", USER, check=False).returncode != 0:
        _run("useradd", "--create-home", "--shell", "/bin/sh", USER)
    # No password, but not locked: sshd without PAM refuses locked accounts even for key logins.
    _run("usermod", "-p", "*", USER)
    home = Path(f"/home/{USER}")
    for profile in (".profile", ".bashrc", ".bash_profile", ".bash_logout"):
        (home / profile).unlink(missing_ok=True)
    # kubexm moves uploaded files into place with sudo for non-root users; peers do not need it.
    Path("/etc/sudoers.d/kxbench").write_text(f"{USER} ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod("/etc/sudoers.d/kxbench", 0o440)


def _keys(root: Path) -> tuple[Path, Path]:
    ETC.mkdir(parents=True, exist_ok=True)
    key = root / "id_ed25519"
    host_key = ETC / "ssh_host_ed25519_key"
    for path in (key, host_key):
        if not path.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path))
    # sshd reads it as the user: it must sit where kxbench can reach (not under a private temp dir).
    WORK.mkdir(parents=True, exist_ok=True)
    os.chmod(WORK, 0o755)
    auth = WORK / "authorized_keys"
    auth.write_text((root / "id_ed25519.pub").read_text())
    shutil.chown(auth, USER)
    os.chmod(auth, 0o600)
    return key, host_key


def _sshd_config(host: BenchHost, host_key: Path) -> Path:
    # Outside /tmp: each host's sshd sees its own /tmp.
    cfg = ETC / f"sshd-{host.name}.conf"
    cfg.write_text(
        f"ListenAddress {host.address}\nPort 22\nHostKey {host_key}\nPidFile {ETC}/sshd-{host.name}.pid\n"
        f"AuthorizedKeysFile {WORK}/authorized_keys\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
        "UsePAM no\nUseDNS no\nPermitRootLogin no\nStrictModes no\nMaxStartups 200:30:400\nMaxSessions 100\n"
        f"AllowUsers {USER}\nSubsystem sftp internal-sftp\nPrintMotd no\nPrintLastLog no\nLogLevel ERROR\n")
    return cfg


def capacity_mib() -> int:
    """What the hosts' tmpfs can hold: half the machine's memory."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 2048
    return 0


_held: list[int] = []  # the lock's file descriptor while this process owns the hosts


def lock() -> None:
    """Wait until no other process owns the bench hosts (setup's teardown would remove theirs)."""
    import fcntl

    if _held:
        return
    LOCK.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"bench: another process uses the bench hosts ({LOCK}); waiting for it to finish", flush=True)
        fcntl.flock(fd, fcntl.LOCK_EX)
    _held.append(fd)


def setup(count: int, root: Path) -> tuple[list[BenchHost], Path]:
    """Create ``count`` hosts; returns them and the private key that logs in as kxbench."""
    lock()
    teardown(release=False)
    WORK.mkdir(parents=True, exist_ok=True)
    # Half the memory at most (tmpfs' default); pages are only used as files are written.
    _run("mount", "-t", "tmpfs", "-o", "mode=0755", "kxbench", str(WORK))
    root.mkdir(parents=True, exist_ok=True)
    STATE.parent.mkdir(parents=True, exist_ok=True)
    # sshd refuses to start without its privilege-separation directory; /run is empty on a fresh boot and
    # only the openssh-server package's own unit (not running on a machine without systemd) creates it.
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    _ensure_user()
    key, host_key = _keys(root)
    gateway = str(NET.network_address + 1)
    _run("ip", "link", "add", BRIDGE, "type", "bridge")
    _run("ip", "addr", "add", f"{gateway}/{NET.prefixlen}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    hosts = [BenchHost(f"h{i + 1:03d}", str(NET.network_address + 256 + i + 1), f"kxb-{i + 1}", f"kxbv{i + 1}")
             for i in range(count)]  # 10.214.1.1, ...
    # All of them recorded before any is made: a crash half way still leaves teardown a complete list.
    saved = _raise_kernel_limits(count)
    STATE.write_text(json.dumps({"root": str(root), "hosts": [vars(x) for x in hosts], "sysctl": saved}))
    # Each host is a handful of short `ip` commands and one sshd start: in parallel, 1,000 hosts take seconds.
    with ThreadPoolExecutor(max_workers=min(32, max(1, count))) as pool:
        list(pool.map(lambda h: _make_host(h, host_key), hosts))
    _wait_ready(hosts, timeout=60 + count * 0.1)
    return hosts, key


def _make_host(h: BenchHost, host_key: Path) -> None:
    _run("ip", "netns", "add", h.netns)
    _run("ip", "link", "add", h.veth, "type", "veth", "peer", "name", "eth0", "netns", h.netns)
    _run("ip", "link", "set", h.veth, "master", BRIDGE, "up")
    _run("ip", "-n", h.netns, "addr", "add", f"{h.address}/{NET.prefixlen}", "dev", "eth0")
    _run("ip", "-n", h.netns, "link", "set", "eth0", "up")
    _run("ip", "-n", h.netns, "link", "set", "lo", "up")
    data = WORK / h.name
    data.mkdir(parents=True, exist_ok=True)
    shutil.chown(data, USER)
    tmp = WORK / f"{h.name}.tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o1777)
    _sshd_config(h, host_key)
    _start_sshd(h)


def _start_sshd(h: BenchHost) -> None:
    cfg = ETC / f"sshd-{h.name}.conf"
    # A private mount namespace per host: /srv/kxbench and /tmp are this host's own, as on a machine.
    data, tmp = WORK / h.name, WORK / f"{h.name}.tmp"
    _run("ip", "netns", "exec", h.netns, "unshare", "--mount", "--propagation", "private", "sh", "-c",
         f"mkdir -p /srv/kxbench && mount --bind {data} /srv/kxbench && mount --bind {tmp} /tmp && "
         f"exec /usr/sbin/sshd -f {cfg}")


def stop_sshd(hosts: list[BenchHost]) -> None:
    """Kill every sshd of ``hosts`` (the listener and the sessions it forked): the hosts stay on the network,
    so connecting is refused, and connections held to them end as the machine's sshd dying ends them."""
    for h in hosts:
        for pid in _run("ip", "netns", "pids", h.netns, check=False).stdout.split():
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
    for h in hosts:  # gone before the caller measures anything
        deadline = time.monotonic() + 10
        while _run("ip", "netns", "pids", h.netns, check=False).stdout.strip() and time.monotonic() < deadline:
            time.sleep(0.02)


def start_sshd(hosts: list[BenchHost]) -> None:
    """Start the sshd of ``hosts`` again (same configuration and host key) and wait until each answers."""
    for h in hosts:
        if not _run("ip", "netns", "pids", h.netns, check=False).stdout.strip():
            _start_sshd(h)
    _wait_ready(hosts)


# What a bridge of many hosts needs from the machine's own kernel, per host: one neighbour entry (ARP) each,
# beyond the default table of 1,024; a few more open files and a deeper accept queue for the clients.
def _kernel_wants(count: int) -> dict[str, int]:
    table = max(1024, 4 * count)
    return {
        "net/ipv4/neigh/default/gc_thresh1": table,
        "net/ipv4/neigh/default/gc_thresh2": table * 2,
        "net/ipv4/neigh/default/gc_thresh3": table * 4,
        "net/core/somaxconn": max(4096, count * 2),
        "net/ipv4/tcp_max_syn_backlog": max(4096, count * 2),
    }


def _raise_kernel_limits(count: int) -> dict[str, str]:
    """Raise what is too low for ``count`` hosts; returns the previous values (restored by teardown)."""
    saved: dict[str, str] = {}
    for key, want in _kernel_wants(count).items():
        path = Path("/proc/sys") / key
        try:
            current = path.read_text().strip()
        except OSError:
            continue
        if current.isdigit() and int(current) < want:
            saved[key] = current
            path.write_text(f"{want}\n")
    return saved


def _restore_kernel_limits(saved: dict[str, str]) -> None:
    # thresh3 must stay >= thresh2 >= thresh1 while they come down: restore in reverse order of raising.
    for key, value in reversed(list(saved.items())):
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(f"{value}\n")


def _wait_ready(hosts: list[BenchHost], timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    pending = list(hosts)
    while pending and time.monotonic() < deadline:
        still = []
        for h in pending:
            try:
                with socket.create_connection((h.address, 22), timeout=1) as s:
                    s.recv(8)
            except OSError:
                still.append(h)
        pending = still
        if pending:
            time.sleep(0.2)
    if pending:
        raise RuntimeError(f"sshd did not come up on {', '.join(h.name for h in pending[:5])}")


def _remove_host(h: dict[str, str]) -> None:
    pid_file = ETC / f"sshd-{h['name']}.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text()), signal.SIGTERM)
    # Session sshds (and what they run) outlive their listener and would keep the namespace alive:
    # end everything that still runs inside it.
    pids = _run("ip", "netns", "pids", h["netns"], check=False).stdout.split()
    for pid in pids:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    _run("ip", "link", "del", h["veth"], check=False)
    _run("ip", "netns", "del", h["netns"], check=False)


def teardown(release: bool = True) -> None:
    """Stop every sshd, remove namespaces, links, the bridge, fault rules and the data; safe to call any time
    (also from another process, after a crash: it does not wait for the lock a running bench holds)."""
    from bench.faults import allow_traffic

    allow_traffic()  # packets dropped by a fault case (bench/faults.py) flow again, also after a crash
    if STATE.exists():
        state = json.loads(STATE.read_text())
        with ThreadPoolExecutor(max_workers=32) as pool:
            list(pool.map(_remove_host, state["hosts"]))
        _restore_kernel_limits(state.get("sysctl", {}))
        STATE.unlink()
    _run("ip", "link", "del", BRIDGE, check=False)
    if _run("mountpoint", "-q", str(WORK), check=False).returncode == 0:  # setup always tears down first: one mount
        _run("umount", "--lazy", str(WORK), check=False)
    shutil.rmtree(WORK, ignore_errors=True)
    Path("/etc/sudoers.d/kxbench").unlink(missing_ok=True)
    while release and _held:
        os.close(_held.pop())  # closing the descriptor releases the lock


def keeper_peak_kib(home: Path) -> int:
    """Peak RSS of the connection keeper serving ``home`` (VmHWM), 0 when none runs."""
    out = subprocess.run(["pgrep", "-f", f"kubexm.hosts.keeper {home}/run/keeper-"], capture_output=True, text=True)
    peak = 0
    for pid in out.stdout.split():
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        peak = max(peak, next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0))
    return peak


def stop_keepers(home: Path) -> None:
    """Stop the keepers serving ``home`` and wait until they are gone (a first run must find none)."""
    pattern = f"kubexm.hosts.keeper {home}/run/keeper-"
    subprocess.run(["pkill", "-f", pattern], check=False)
    deadline = time.monotonic() + 10
    while subprocess.run(["pgrep", "-f", pattern], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            subprocess.run(["pkill", "-9", "-f", pattern], check=False)
            break
        time.sleep(0.05)

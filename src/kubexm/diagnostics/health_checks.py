"""Judging what ``health.collect`` read: every check ok / warn / fail with a one-line reason and the fix.

The report document (``HealthReport``, see ``document``) is the stable, versioned JSON of
``kubexm health cluster -o json``; its fields are documented in the command's help and in README.
"""

from __future__ import annotations

import datetime as dt
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from kubexm.diagnostics.health import (
    CONTAINER,
    CPUS_ONLINE,
    LOADAVG,
    MEMINFO,
    MODULES,
    OS_RELEASE,
    OSRELEASE,
    UPTIME,
    Collected,
    NodeData,
    cert_read,
    first_json,
    sysctl_values,
)
from kubexm.spec.models import Cluster

API_VERSION = "kubexm.io/health/v1"
KIND = "HealthReport"

Status = Literal["ok", "warn", "fail"]
ORDER: tuple[Status, ...] = ("ok", "warn", "fail")
RANK = {s: i for i, s in enumerate(ORDER)}
EXIT = {"ok": 0, "warn": 3, "fail": 4}  # as `certs check`: 3 something to watch, 4 something broken

# Thresholds. Disk and inodes: kubelet's image GC starts at 85% and its hard eviction at 90% (nodefs.available
# <10%); etcd stops accepting writes when its disk is full.
DISK_WARN_PERCENT = 80
DISK_FAIL_PERCENT = 90
INODE_WARN_PERCENT = 80
INODE_FAIL_PERCENT = 90
MEMORY_AVAILABLE_WARN_PERCENT = 10  # MemAvailable below this share of MemTotal
MEMORY_AVAILABLE_FAIL_PERCENT = 5
LOAD_PER_CPU_WARN = 2.0  # 1-minute load average per CPU
CLOCK_WARN_SECONDS = 1.0  # etcd warns about clock drift at 1 s; the fail bound is spec.preflight.maxClockSkewSeconds
UNIT_RESTARTS_WARN = 3  # NRestarts since the unit was last started by hand: systemd restarting a crashing daemon
ETCD_DB_WARN_PERCENT = 80  # DB size against the backend quota (NOSPACE alarm at 100%)
ETCD_DB_FAIL_PERCENT = 90
ETCD_DEFAULT_QUOTA_BYTES = 2 * 1024 ** 3  # etcd's default --quota-backend-bytes
ETCD_RAFT_SPREAD_WARN = 1000  # raft index difference between the most and least advanced member
ETCD_LATENCY_WARN_MS = 100.0  # an endpoint health round trip (etcd's own slow-request warning is at 100 ms)
ETCD_LATENCY_FAIL_MS = 1000.0
CERT_WARN_DAYS = 30  # as `certs check --warn-days`
POD_RESTARTS_WARN = 5  # a kube-system container restarted this often and not running: crash-looping


@dataclass
class Check:
    """One judged item. ``id`` is stable (``node.disk``, ``unit.etcd``, ``etcd.leader``...); ``target`` the node,
    or ``cluster``, ``etcd``, ``kubernetes``."""

    section: str
    id: str
    target: str
    status: Status
    reason: str
    fix: str = ""
    data: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.status == "ok":
            self.fix = ""  # nothing to fix; the fix texts are written for the failing case

    def as_json(self) -> dict[str, Any]:
        return {"section": self.section, "id": self.id, "target": self.target, "status": self.status,
                "reason": self.reason, "fix": self.fix or None, "data": self.data}


@dataclass
class Report:
    cluster: str
    generated_at: str
    seconds: float
    checks: list[Check]
    nodes: list[dict[str, Any]]
    etcd: dict[str, Any] | None
    kubernetes: dict[str, Any]
    certificates: list[dict[str, Any]]
    all_nodes: bool = True

    @property
    def status(self) -> Status:
        return _worst(c.status for c in self.checks)

    @property
    def exit_code(self) -> int:
        return EXIT[self.status]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for c in self.checks if c.status == s) for s in ORDER}

    def document(self) -> dict[str, Any]:
        return {"kind": KIND, "apiVersion": API_VERSION, "cluster": self.cluster, "generated_at": self.generated_at,
                "duration_seconds": round(self.seconds, 3), "status": self.status, "summary": self.counts(),
                "all_nodes": self.all_nodes, "nodes": self.nodes, "etcd": self.etcd, "kubernetes": self.kubernetes,
                "certificates": self.certificates, "checks": [c.as_json() for c in self.checks]}


class Hints:
    """kubexm command lines for fixes, naming the cluster the way the user did (-f FILE or -c NAME)."""

    def __init__(self, cluster: Cluster, selector: list[str]) -> None:
        self.cluster = cluster
        self.selector = selector

    def kubexm(self, *words: str, head: int = 2) -> str:
        """``kubexm WORDS`` with the cluster selector after the first ``head`` words (verb, noun, arguments)."""
        return shlex.join(["kubexm", *words[:head], *self.selector, *words[head:]])

    def repair(self) -> str:
        return shlex.join(["kubexm", "repair", *self.selector])

    def on_node(self, node: str, *command: str) -> str:
        return self.kubexm("run", "command", "--nodes", node, "--", *command)

    def task(self, name: str, node: str) -> str:
        return self.kubexm("run", "task", name, "--nodes", node, "-y", head=3)


def selector_of(command: str, cluster: Cluster) -> list[str]:
    """``-f FILE`` when the command line read a cluster file, else ``-c NAME``."""
    words = shlex.split(command) if command else []
    for i, word in enumerate(words):
        if word in ("-f", "--file") and i + 1 < len(words):
            return ["-f", words[i + 1]]
        if word.startswith("--file="):
            return ["-f", word.removeprefix("--file=")]
    return ["-c", cluster.name]


# -- parsing ------------------------------------------------------------------------------------------------

def _floats(text: str) -> list[float]:
    out = []
    for word in text.split():
        try:
            out.append(float(word))
        except ValueError:
            continue
    return out


@dataclass
class SystemInfo:
    """The probe's ``proc`` and ``info`` sections: kernel, uptime, load, CPUs, memory, OS name."""

    kernel: str = ""
    uptime: float = 0.0
    load: list[float] = field(default_factory=list)
    cpus: int = 1
    memory: dict[str, int] = field(default_factory=dict)  # kB, by /proc/meminfo key
    os: str = "unknown OS"


def system_info(node: NodeData) -> SystemInfo:
    out = SystemInfo()
    files = node.files
    out.kernel = (files.get(OSRELEASE) or [out.kernel])[0].strip()
    out.uptime = (_floats((files.get(UPTIME) or [""])[0]) or [0.0])[0]
    out.load = _floats((files.get(LOADAVG) or [""])[0])[:3]
    out.cpus = max(cpu_count((files.get(CPUS_ONLINE) or [""])[0]), 1)
    for line in files.get(MEMINFO, []):
        key, _, value = line.partition(":")
        nums = value.split()
        if nums and nums[0].isdigit():
            out.memory[key.strip()] = int(nums[0])
    for path in OS_RELEASE:
        pretty = [line.partition("=")[2].strip().strip('"') for line in files.get(path, [])
                  if line.startswith("PRETTY_NAME=")]
        if pretty and pretty[0]:
            out.os = pretty[0]
            break
    return out


def cpu_count(ranges: str) -> int:
    """CPUs in a kernel CPU list such as ``0-3,8-11`` (/sys/devices/system/cpu/online); 0 when unreadable."""
    count = 0
    for part in ranges.strip().split(","):
        lo, _, hi = part.partition("-")
        if lo.isdigit() and (not hi or hi.isdigit()):
            count += (int(hi) - int(lo) + 1) if hi else 1
    return count


def filesystems(node: NodeData) -> list[dict[str, Any]]:
    """Per probed path that exists: its mount point, size, and the share of blocks and inodes in use, from one
    ``df --output=source,size,used,avail,itotal,iused,iavail,target`` given every path (a line per path, in order)."""
    paths = [p for p in node.section("df-paths").splitlines() if p]
    lines = node.section("df").splitlines()[1:]
    rows = []

    def pct(used: str, free: str) -> float | None:
        try:
            a, c = int(used), int(free)
        except ValueError:  # "-": a file system without inode accounting
            return None
        return round(100.0 * a / (a + c), 1) if a + c > 0 else None

    for path, line in zip(paths, lines, strict=False):
        f = line.split(None, 7)
        if len(f) < 8:
            continue
        rows.append({"path": path, "mount": f[7], "size_kb": int(f[1]) if f[1].isdigit() else None,
                     "available_kb": int(f[3]) if f[3].isdigit() else None, "used_percent": pct(f[2], f[3]),
                     "inodes_used_percent": pct(f[5], f[6])})
    return rows


def unit_states(text: str) -> dict[str, dict[str, str]]:
    """``systemctl show`` blocks (one per unit, blank-line separated) by unit name without ``.service``."""
    out: dict[str, dict[str, str]] = {}
    block: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if "Id" in block:
                out[block["Id"].removesuffix(".service")] = block
            block = {}
            continue
        key, sep, value = line.partition("=")
        if sep:
            block[key.strip()] = value.strip()
    return out


def failed_units(states: dict[str, dict[str, str]]) -> list[str]:
    """Units systemd reports failed, by their full name (``systemctl show --state=failed '*'`` adds them all)."""
    return sorted(st.get("Id", name) for name, st in states.items() if st.get("ActiveState") == "failed")


_DURATION = re.compile(r"([0-9.]+)(ns|us|µs|ms|s|m|h)")
_UNIT_MS = {"ns": 1e-6, "us": 1e-3, "µs": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}


def go_duration_ms(text: str) -> float | None:
    """A Go duration (``1.234ms``, ``2.1s``, ``1m3.2s``) in milliseconds."""
    parts = _DURATION.findall(text or "")
    if not parts:
        return None
    return sum(float(n) * _UNIT_MS[u] for n, u in parts)


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1][:200] if lines else "no output"


# -- per node -----------------------------------------------------------------------------------------------

def _worst(statuses: Iterable[Status]) -> Status:
    return ORDER[max((RANK[s] for s in statuses), default=0)]


def node_checks(node: NodeData, collected: Collected, hints: Hints, installed: dict[str, set[str]]) -> list[Check]:
    cluster = collected.cluster
    name = node.name
    out: list[Check] = []

    def add(check_id: str, status: Status, reason: str, fix: str = "", **data: Any) -> None:
        out.append(Check("node", check_id, name, status, reason, fix if status != "ok" else "", data))

    if not node.reachable or node.error:
        add("node.reachable", "fail", f"{name} ({node.address}) is unreachable: {node.error}",
            f"check that {name} is up and sshd answers on {node.address}; the rest of the report stands without it")
        return out
    container = (node.files.get(CONTAINER) or [""])[0].strip() or None
    info = system_info(node)
    add("node.reachable", "ok", f"connected in {node.connect_ms:.0f} ms; {info.os}, kernel {info.kernel}, "
        f"up {_human_seconds(info.uptime)}", connect_ms=node.connect_ms, os=info.os, kernel=info.kernel,
        uptime_seconds=info.uptime, container=container)

    # Clock: the node's `date` ran somewhere between the probe leaving and its answer arriving, so the offset is
    # taken against the middle of that window, and judged by the least it can be (a slow round trip, a loaded
    # node or deploy machine, never reads as a skewed clock).
    remote = (_floats(node.section("time")) or [0.0])[0]
    sent, got = node.sent_at, node.received_at or node.sent_at
    offset = round(remote - (sent + got) / 2, 3) if remote and sent else None
    slack = round(max(0.0, got - sent) / 2, 3)
    limit = float(cluster.spec.preflight.max_clock_skew_seconds)
    if offset is None:
        add("node.clock", "warn", "the node's clock could not be read", "check `date` on the node")
    else:
        least = max(0.0, abs(offset) - slack)
        status: Status = "fail" if least >= limit else "warn" if least >= CLOCK_WARN_SECONDS else "ok"
        add("node.clock", status, f"clock offset {offset:+.3f} s (±{slack:.3f}) from the deploy machine",
            f"sync the clocks: {hints.task('SyncTime', name)} (spec.system.ntpServers)", offset_seconds=offset,
            uncertainty_seconds=slack)

    loads, cpus = info.load, info.cpus
    if len(loads) >= 3:
        per_cpu = loads[0] / cpus
        add("node.load", "warn" if per_cpu >= LOAD_PER_CPU_WARN else "ok",
            f"load {loads[0]:.2f} {loads[1]:.2f} {loads[2]:.2f} on {cpus} CPU(s)",
            "find what loads the node: " + hints.on_node(name, "top", "-b", "-n", "1"), load=loads[:3], cpus=cpus)

    mem = info.memory
    total, avail = mem.get("MemTotal", 0), mem.get("MemAvailable", 0)
    if total:
        pct = 100.0 * avail / total
        status = ("fail" if pct < MEMORY_AVAILABLE_FAIL_PERCENT else
                  "warn" if pct < MEMORY_AVAILABLE_WARN_PERCENT else "ok")
        add("node.memory", status, f"{avail // 1024} of {total // 1024} MiB available ({pct:.0f}%)",
            "free memory or add capacity: " + hints.on_node(name, "ps", "aux", "--sort=-rss"),
            total_mb=total // 1024, available_mb=avail // 1024)
    swap = mem.get("SwapTotal", 0)
    kubelet_node = bool(set(node.roles) & {"control-plane", "worker"})
    if kubelet_node:
        add("node.swap", "fail" if swap else "ok", f"swap {'on: ' + str(swap // 1024) + ' MiB' if swap else 'off'}",
            f"kubelet refuses to run with swap on: {hints.task('PrepareNodesOS', name)} turns it off", swap_mb=swap // 1024)

    for fs in filesystems(node):
        what = node.paths.get(fs["path"], fs["path"])
        for kind, key, warn, fail in (("disk", "used_percent", DISK_WARN_PERCENT, DISK_FAIL_PERCENT),
                                      ("inodes", "inodes_used_percent", INODE_WARN_PERCENT, INODE_FAIL_PERCENT)):
            used = fs[key]
            if used is None:
                continue  # a file system without inode accounting (btrfs) reports no inodes
            status = "fail" if used >= fail else "warn" if used >= warn else "ok"
            add(f"node.{kind}", status, f"{fs['path']} ({what}, on {fs['mount']}): {used:.0f}% "
                f"{'used' if kind == 'disk' else 'of inodes used'}",
                f"free space under {fs['path']} on {name} (e.g. `crictl rmi --prune` for images, "
                f"old logs with `journalctl --vacuum-size=`), or grow {fs['mount']}", path=fs["path"],
                mount=fs["mount"], used_percent=used)

    if kubelet_node:
        out += _kernel_checks(node, cluster, hints, container)
    out += _unit_checks(node, hints, installed)
    return out


def _kernel_checks(node: NodeData, cluster: Cluster, hints: Hints, container: str | None) -> list[Check]:
    from kubexm.steps.os import same_sysctl_value, wanted_modules, wanted_sysctl

    out: list[Check] = []
    name = node.name
    fix = f"{hints.task('PrepareNodesOS', name)} loads the modules and sets the sysctls again"
    mods = wanted_modules(cluster)
    loaded = [line.split(" ", 1)[0] for line in node.files.get(MODULES, [])]
    if MODULES in node.section("unreadable").splitlines():
        reason = "kernel modules cannot be listed here (no /proc/modules)"
        if container:
            reason += f"; in a {container} container they are the hosting machine's: check them there"
        out.append(Check("node", "node.modules", name, "ok" if container else "warn", reason,
                         "" if container else "check `lsmod` on the node"))
    else:
        missing = [m for m in mods if m not in loaded]
        out.append(Check("node", "node.modules", name, "fail" if missing else "ok",
                         f"kernel modules missing: {', '.join(missing)}" if missing else
                         f"kernel modules loaded: {', '.join(mods)}", fix if missing else "", {"missing": missing}))
    wanted = wanted_sysctl(cluster)
    live = sysctl_values(list(wanted), node.files)
    writable = set(node.section("sysctl-writable").split())
    differs = [k for k, v in wanted.items() if live.get(k) is not None and not same_sysctl_value(live.get(k) or "", v)]
    # What this node cannot write (a container's read-only /proc/sys) the Sysctl step leaves alone too: in a
    # container that is the hosting machine's setting, reported but not failed.
    held = [k for k in differs if k not in writable and container]
    wrong = [f"{k}={live.get(k)!s} (want {wanted[k]})" for k in differs if k not in held]
    absent = [k for k in wanted if live.get(k) is None]
    data = {"wrong": wrong, "absent": absent, "read_only": held}
    if wrong:
        out.append(Check("node", "node.sysctl", name, "fail", "sysctl drifted: " + ", ".join(wrong), fix, data))
    elif absent and not container:
        out.append(Check("node", "node.sysctl", name, "warn", f"sysctl keys absent: {', '.join(absent)} "
                         "(br_netfilter not loaded?)", fix, data))
    else:
        notes = [f"{k}={live.get(k)} is read-only in this {container} container (the hosting machine's)" for k in held]
        notes += [f"{k} absent in this {container} container" for k in absent]
        out.append(Check("node", "node.sysctl", name, "ok", "sysctls as wanted" + (f"; {'; '.join(notes)}" if notes
                                                                                  else ""), "", data))
    return out


def _unit_checks(node: NodeData, hints: Hints, installed: dict[str, set[str]]) -> list[Check]:
    out: list[Check] = []
    name = node.name
    states = unit_states(node.section("units"))
    if node.units_wanted and not states:
        # No systemd to ask (a host booted without it, a container without an init): one line, not one per unit.
        return [Check("unit", "node.units", name, "warn", "the units could not be read: systemctl says "
                      f"\"{_last_line(node.section('units'))}\"", f"check systemd on {name}: "
                      + hints.on_node(name, "systemctl", "is-system-running"))]
    logs = "see why: {} "
    for unit in node.units_wanted:
        st = states.get(unit, {})
        load, active, sub = st.get("LoadState", "?"), st.get("ActiveState", "?"), st.get("SubState", "?")
        restarts = int(st["NRestarts"]) if st.get("NRestarts", "").isdigit() else 0
        data = {"unit": unit, "load_state": load, "active_state": active, "sub_state": sub, "restarts": restarts,
                "result": st.get("Result")}
        journal = hints.on_node(name, "journalctl", "-u", unit, "-n", "50", "--no-pager")
        if load == "not-found":
            elsewhere = sorted(installed.get(unit, set()) - {name})
            if not elsewhere:
                continue  # installed on no node: a component this cluster was set up without (reported once)
            out.append(Check("unit", f"unit.{unit}", name, "fail",
                             f"{unit} is not installed on {name} (it is on {', '.join(elsewhere)})",
                             f"install it again: {hints.kubexm('create', 'cluster', '-y')} (idempotent; "
                             f"only what is missing changes)", data))
        elif active == "active":
            status: Status = "warn" if restarts >= UNIT_RESTARTS_WARN else "ok"
            out.append(Check("unit", f"unit.{unit}", name, status,
                             f"{unit} {active} ({sub}), restarted {restarts} time(s)",
                             logs.format(journal).strip() + " (it keeps restarting)", data))
        elif active == "failed":
            out.append(Check("unit", f"unit.{unit}", name, "fail",
                             f"{unit} failed on {name} (result {st.get('Result', '?')}, {restarts} restart(s))",
                             f"{hints.repair()} restarts it; {logs.format(journal).strip()}", data))
        elif active in ("inactive", "deactivating"):
            out.append(Check("unit", f"unit.{unit}", name, "fail", f"{unit} is stopped ({active}/{sub}) on {name}",
                             f"{hints.repair()} starts it again", data))
        else:
            out.append(Check("unit", f"unit.{unit}", name, "warn", f"{unit} is {active} ({sub}) on {name}",
                             f"check again in a minute; {logs.format(journal).strip()}", data))
    managed = set(node.units_wanted)
    others = [u for u in failed_units(states) if u.removesuffix(".service") not in managed]
    out.append(Check("unit", "node.failed-units", name, "warn" if others else "ok",
                     f"failed units not managed by kubexm: {', '.join(others)}" if others else "no failed units",
                     f"inspect them: {hints.on_node(name, 'systemctl', '--failed')}" if others else "",
                     {"units": others}))
    return out


def _human_seconds(seconds: float) -> str:
    s = int(seconds)
    if s >= 86400:
        return f"{s // 86400}d{(s % 86400) // 3600}h"
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60}m"
    return f"{s // 60}m{s % 60}s"


# -- etcd ---------------------------------------------------------------------------------------------------

def quota_bytes(cluster: Cluster) -> int:
    raw = cluster.spec.etcd.extra_args.get("quota-backend-bytes")
    try:
        return int(str(raw)) if raw is not None else ETCD_DEFAULT_QUOTA_BYTES
    except ValueError:
        return ETCD_DEFAULT_QUOTA_BYTES


def etcd_checks(collected: Collected, hints: Hints) -> tuple[list[Check], dict[str, Any] | None]:
    cluster = collected.cluster
    if cluster.spec.etcd.type == "external":
        return [Check("etcd", "etcd.external", "etcd", "ok", "external etcd: not checked (its owner monitors it)")], \
            {"type": "external"}
    if cluster.spec.etcd.type != "kubexm":
        return [], {"type": cluster.spec.etcd.type, "note": "stacked etcd (static pods): see the Kubernetes section"}
    members_spec = [n for n in collected.nodes if n.etcd_member]
    if not members_spec:
        return [], None
    answered = [n for n in members_spec if n.reachable and not n.error]
    if answered and all(unit_states(n.section("units")).get("etcd", {}).get("LoadState") == "not-found"
                        for n in answered):
        # Never installed (a cluster set up without it so far): said once, as for any unit installed nowhere.
        return [Check("etcd", "etcd.installed", "etcd", "ok", "etcd is installed on no member yet "
                      "(`kubexm create cluster` installs it)")], {"type": "kubexm", "installed": False}
    out: list[Check] = []
    statuses: dict[str, dict[str, Any]] = {}
    latency: dict[str, float | None] = {}
    member_list: list[dict[str, Any]] = []
    alarms: list[dict[str, Any]] = []
    for node in members_spec:
        if not node.reachable or node.error:
            out.append(Check("etcd", "etcd.member", node.name, "fail",
                             f"etcd member {node.name}: node {node.name} is unreachable",
                             f"bring {node.name} back; the other members keep quorum while a majority answers",
                             {"member": node.name, "problem": "unreachable"}))
            continue
        status = first_json(node.section("etcd-status"), list)
        entry = status[0] if isinstance(status, list) and status else None
        if not isinstance(entry, dict) or not isinstance(entry.get("Status"), dict):
            unit = unit_states(node.section("units")).get("etcd", {})
            stopped = unit.get("ActiveState") in ("inactive", "failed")
            why = f"the etcd unit is {unit.get('ActiveState')}" if stopped else _last_line(node.section("etcd-status"))
            out.append(Check("etcd", "etcd.member", node.name, "fail",
                             f"etcd member {node.name} on node {node.name} does not answer: {why}",
                             f"{hints.repair()} starts it again" if stopped else
                             "see why: " + hints.on_node(node.name, "journalctl", "-u", "etcd", "-n", "50",
                                                         "--no-pager"),
                             {"member": node.name, "problem": "stopped" if stopped else "no-answer"}))
            continue
        statuses[node.name] = entry["Status"]
        health = first_json(node.section("etcd-health"), list)
        h = health[0] if isinstance(health, list) and health else {}
        latency[node.name] = go_duration_ms(str(h.get("took", ""))) if isinstance(h, dict) else None
        healthy = bool(h.get("health")) if isinstance(h, dict) else False
        ms = latency[node.name]
        if not healthy:
            out.append(Check("etcd", "etcd.member", node.name, "fail",
                             f"etcd member {node.name} answers but is unhealthy: {h.get('error') if h else 'no health'}",
                             "see why: " + hints.on_node(node.name, "journalctl", "-u", "etcd", "-n", "50", "--no-pager"),
                             {"member": node.name, "problem": "unhealthy"}))
        else:
            st: Status = ("fail" if ms is not None and ms >= ETCD_LATENCY_FAIL_MS else
                          "warn" if ms is not None and ms >= ETCD_LATENCY_WARN_MS else "ok")
            out.append(Check("etcd", "etcd.member", node.name, st,
                             f"etcd member {node.name} healthy, health check took {ms:.1f} ms" if ms is not None
                             else f"etcd member {node.name} healthy",
                             f"slow etcd: check disk latency under {cluster.spec.etcd.data_dir} on {node.name} "
                             "(etcd wants an SSD; fsync under 10 ms)",
                             {"member": node.name, "latency_ms": ms, "problem": "slow" if st != "ok" else None}))
        if not member_list:
            doc = first_json(node.section("etcd-members"), dict, "members")
            if isinstance(doc, dict) and isinstance(doc.get("members"), list):
                member_list = [m for m in doc["members"] if isinstance(m, dict)]
        doc = first_json(node.section("etcd-alarms"), dict, "header")
        if isinstance(doc, dict) and isinstance(doc.get("alarms"), list):
            for a in doc["alarms"]:
                if isinstance(a, dict) and a not in alarms:
                    alarms.append(a)
    ids = {str(m.get("ID")): str(m.get("name") or f"unstarted {m.get('ID')}") for m in member_list}
    want = len(members_spec) if collected.all_nodes else max(len(members_spec), len(member_list))
    answering = len(statuses)
    quorum = want // 2 + 1
    section: dict[str, Any] = {"type": "kubexm", "members": [], "leader": None, "raft_index_spread": None,
                               "db_size_bytes": None, "quota_bytes": quota_bytes(cluster), "alarms": [],
                               "versions": {}, "learners": []}
    for m in member_list:
        section["members"].append({"id": str(m.get("ID")), "name": m.get("name"), "peer_urls": m.get("peerURLs", []),
                                   "client_urls": m.get("clientURLs", []), "is_learner": bool(m.get("isLearner"))})
    if not statuses:
        out.append(Check("etcd", "etcd.quorum", "etcd", "fail", "no etcd member answers",
                         f"start the members: {hints.repair()}; then see `journalctl -u etcd` on them"))
        return out, section
    out.append(Check("etcd", "etcd.quorum", "etcd", "ok" if answering >= quorum else "fail",
                     f"{answering} of {want} members answer (quorum needs {quorum})",
                     "" if answering >= quorum else f"quorum lost: start stopped members first ({hints.repair()})",
                     {"answering": answering, "members": want}))
    leaders = {str(s.get("leader") or 0) for s in statuses.values()}  # etcd omits a zero leader: none known
    leader = ids.get(next(iter(leaders))) if len(leaders) == 1 else None
    section["leader"] = leader
    if len(leaders) != 1 or "0" in leaders:
        out.append(Check("etcd", "etcd.leader", "etcd", "fail", "the members do not agree on a leader "
                         f"({', '.join(sorted('none' if x == '0' else ids.get(x, x) for x in leaders))})",
                         "check the peer network (port 2380) between the etcd nodes"))
    else:
        out.append(Check("etcd", "etcd.leader", "etcd", "ok", f"leader {leader or next(iter(leaders))}"))
    indexes = {n: int(s.get("raftIndex") or 0) for n, s in statuses.items()}
    spread = max(indexes.values()) - min(indexes.values())
    section["raft_index_spread"] = spread
    behind = min(indexes, key=lambda n: indexes[n])
    out.append(Check("etcd", "etcd.raft", "etcd", "warn" if spread >= ETCD_RAFT_SPREAD_WARN else "ok",
                     f"raft index spread {spread}" + (f" ({behind} is behind)" if spread else ""),
                     f"a member that stays behind is slow or cut off: check {behind}'s disk and network", indexes))
    db = max(int(s.get("dbSize") or 0) for s in statuses.values())
    quota = quota_bytes(cluster)
    pct = 100.0 * db / quota
    section["db_size_bytes"] = db
    st = "fail" if pct >= ETCD_DB_FAIL_PERCENT else "warn" if pct >= ETCD_DB_WARN_PERCENT else "ok"
    out.append(Check("etcd", "etcd.db-size", "etcd", st, f"database {db / 1048576:.1f} MiB of the "
                     f"{quota / 1048576:.0f} MiB quota ({pct:.0f}%)",
                     "compact and defragment (etcdctl compact, then defrag one member at a time), or raise "
                     "spec.etcd.extraArgs.quota-backend-bytes", {"db_size_bytes": db, "quota_bytes": quota}))
    names = {"1": "NOSPACE", "2": "CORRUPT", "NOSPACE": "NOSPACE", "CORRUPT": "CORRUPT"}
    shown = [f"{names.get(str(a.get('alarm')), str(a.get('alarm')))} on {ids.get(str(a.get('memberID')), a.get('memberID'))}"
             for a in alarms]
    section["alarms"] = shown
    out.append(Check("etcd", "etcd.alarms", "etcd", "fail" if shown else "ok",
                     f"alarms: {', '.join(shown)}" if shown else "no alarms",
                     "NOSPACE: free space (compact, defrag), then `etcdctl alarm disarm`; CORRUPT: replace the "
                     f"member ({hints.kubexm('delete', 'nodes', '--nodes', 'NODE')}, then "
                     f"{hints.kubexm('add', 'nodes', '--nodes', 'NODE', '--role', 'etcd')})"))
    learners = [str(m.get("name") or m.get("ID")) for m in member_list if m.get("isLearner")]
    section["learners"] = learners
    out.append(Check("etcd", "etcd.learners", "etcd", "warn" if learners else "ok",
                     f"learners not promoted: {', '.join(learners)}" if learners else "no learners",
                     "a learner that does not catch up is never promoted: check its disk and peer network"))
    versions = {n: str(s.get("version")) for n, s in statuses.items()}
    section["versions"] = versions
    distinct = sorted(set(versions.values()))
    out.append(Check("etcd", "etcd.version-skew", "etcd", "warn" if len(distinct) > 1 else "ok",
                     f"versions differ: {', '.join(f'{n} {v}' for n, v in sorted(versions.items()))}"
                     if len(distinct) > 1 else f"all members run {distinct[0]}",
                     f"finish the upgrade: {hints.kubexm('upgrade', 'cluster', '-y')}"))
    listed = {str(m.get("name")) for m in member_list}
    for node in members_spec:
        if member_list and node.name not in listed and node.name not in {c.target for c in out if c.status == "fail"}:
            out.append(Check("etcd", "etcd.member", node.name, "fail",
                             f"{node.name} is in roleGroups.etcd but not an etcd member",
                             f"add it: {hints.kubexm('add', 'nodes', '--nodes', node.name, '--role', 'etcd')}",
                             {"member": node.name, "problem": "not-member"}))
    section["latency_ms"] = latency
    return out, section


# -- certificates -------------------------------------------------------------------------------------------

def cert_checks(collected: Collected, hints: Hints) -> tuple[list[Check], list[dict[str, Any]]]:
    from kubexm.pki.inventory import RENEWABLE

    out: list[Check] = []
    rows: list[dict[str, Any]] = []
    for node in collected.nodes:
        if not node.reachable or node.error or not node.placed:
            continue
        read = cert_read(node)
        if not read.files and not read.present:
            continue  # nothing kubexm places is on this node (not installed yet): no finding to make
        from kubexm.steps.certs import findings_for  # with the local PKI: loaded once a node holds something

        findings = findings_for(node.name, node.placed, read, collected.run, CERT_WARN_DAYS)
        if not findings:
            continue
        rows += [f.as_json() for f in findings]
        expired = [f for f in findings if f.status == "expired"]
        expiring = [f for f in findings if f.status == "expiring"]
        bad = [f for f in findings if f.status in ("unreadable", "missing")]
        dated = [f for f in findings if f.days_left is not None]
        soonest = min(dated, key=lambda f: f.days_left or 0) if dated else None
        renew = sorted({f.name for f in [*expired, *expiring]})
        data = {"count": len(findings), "min_days_left": soonest.days_left if soonest else None,
                "renew": [n for n in renew if n in RENEWABLE]}
        if expired or expiring:
            what = ", ".join(f"{f.name} ({f.days_left} d)" for f in [*expired, *expiring])
            out.append(Check("certificates", "certs.expiry", node.name, "fail" if expired else "warn",
                             f"{'expired' if expired else f'expiring within {CERT_WARN_DAYS} days'}: {what}",
                             _renew_fix(hints, renew), data))
        elif soonest is not None:
            out.append(Check("certificates", "certs.expiry", node.name, "ok",
                             f"{len(findings)} certificates; the first to expire is {soonest.name} in "
                             f"{soonest.days_left} days", "", data))
        if bad:
            out.append(Check("certificates", "certs.readable", node.name, "warn",
                             "; ".join(p for f in bad for p in f.problems)[:300],
                             f"see {hints.kubexm('certs', 'check')}"))
    return out, rows


def _renew_fix(hints: Hints, names: list[str]) -> str:
    from kubexm.pki.inventory import RENEWABLE

    leaves = [n for n in names if n in RENEWABLE]
    cas = [n for n in names if n not in RENEWABLE]
    parts = [hints.kubexm("certs", "renew", *leaves, "-y", head=2 + len(leaves))] if leaves else []
    if cas:
        parts.append(f"{', '.join(cas)} cannot be re-issued by `certs renew` (a CA or key pair): replace it before it "
                     "expires")
    return "; ".join(parts)


# -- Kubernetes ---------------------------------------------------------------------------------------------

def kube_checks(collected: Collected, hints: Hints) -> tuple[list[Check], dict[str, Any]]:
    node = next((n for n in collected.nodes if n.name == collected.kube_node), None)
    if node is None:
        return [], {"reachable": False, "via": None, "message": "no control-plane node in this report"}
    head = node.section("kube").strip().splitlines()
    if not node.reachable or node.error:
        msg = f"no API server answers: no control-plane node could be reached ({node.name} is unreachable)"
        return [Check("kubernetes", "kube.api", "kubernetes", "fail", msg, "bring a control-plane node back")], \
            {"reachable": False, "via": node.name, "message": msg}
    if head[:1] == ["absent"]:
        msg = (f"no API server answers: Kubernetes is not installed ({node.name} has no /etc/kubernetes/admin.conf); "
               "the rest of the report stands")
        return [], {"reachable": False, "via": node.name, "message": msg}
    if "kube-nodes" not in node.sections:
        why = head[1] if len(head) > 1 else "no answer"
        msg = f"no API server answers on {node.name} (kubectl: {why[:160]})"
        return [Check("kubernetes", "kube.api", "kubernetes", "fail", msg,
                      "check kube-apiserver and etcd: " + hints.on_node(node.name, "crictl", "ps", "-a",
                                                                         "--name", "kube-apiserver"))], \
            {"reachable": False, "via": node.name, "message": msg}
    out = [Check("kubernetes", "kube.api", "kubernetes", "ok", f"API server ready (asked on {node.name})")]
    nodes_doc = _whole_json(node.section("kube-nodes")) or {}
    pods_doc = _whole_json(node.section("kube-pods")) or {}
    section: dict[str, Any] = {"reachable": True, "via": node.name, "message": "API server ready", "nodes": [],
                               "problem_pods": []}
    for item in nodes_doc.get("items", []) if isinstance(nodes_doc, dict) else []:
        name = str(item.get("metadata", {}).get("name"))
        conds = {c.get("type"): c for c in item.get("status", {}).get("conditions", []) if isinstance(c, dict)}
        ready = conds.get("Ready", {}).get("status") == "True"
        pressure = [t for t in ("MemoryPressure", "DiskPressure", "PIDPressure", "NetworkUnavailable")
                    if conds.get(t, {}).get("status") == "True"]
        section["nodes"].append({"name": name, "ready": ready, "pressure": pressure})
        if not ready:
            why = conds.get("Ready", {}).get("message") or conds.get("Ready", {}).get("reason") or "not ready"
            out.append(Check("kubernetes", "kube.node", name, "fail", f"node {name} NotReady: {why}"[:200],
                             "see kubelet's log: " + hints.on_node(name, "journalctl", "-u", "kubelet", "-n", "50",
                                                                   "--no-pager")))
        elif pressure:
            out.append(Check("kubernetes", "kube.node", name, "warn", f"node {name}: {', '.join(pressure)}",
                             "free the resource under pressure on the node (see the node section)"))
        else:
            out.append(Check("kubernetes", "kube.node", name, "ok", f"node {name} Ready"))
    pods = [p for p in pods_doc.get("items", [])] if isinstance(pods_doc, dict) else []
    components = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "etcd")
    for comp in components:
        mine = [p for p in pods if str(p.get("metadata", {}).get("name", "")).startswith(comp + "-")]
        if comp == "etcd" and collected.cluster.spec.etcd.type != "kubeadm":
            continue
        if not mine:
            out.append(Check("kubernetes", "kube.control-plane", comp, "fail", f"no {comp} pod in kube-system",
                             "its static pod manifest is in /etc/kubernetes/manifests on the control-plane nodes"))
            continue
        bad = [p["metadata"]["name"] for p in mine if not _pod_ready(p)]
        out.append(Check("kubernetes", "kube.control-plane", comp, "fail" if bad else "ok",
                         f"{comp}: not ready: {', '.join(bad)}" if bad else f"{comp}: {len(mine)} pod(s) ready",
                         f"{hints.kubexm('restart', 'component', comp, '-y', head=3)}"))
    dns = [p for p in pods if (p.get("metadata", {}).get("labels") or {}).get("k8s-app") == "kube-dns"]
    ready_dns = [p for p in dns if _pod_ready(p)]
    out.append(Check("kubernetes", "kube.coredns", "kubernetes", "ok" if ready_dns else "fail",
                     f"CoreDNS {len(ready_dns)} of {len(dns)} pod(s) ready",
                     "see `kubectl -n kube-system describe pods -l k8s-app=kube-dns` on a control-plane node"))
    pending = [p["metadata"]["name"] for p in pods if p.get("status", {}).get("phase") == "Pending"]
    looping = []
    for p in pods:
        for cs in p.get("status", {}).get("containerStatuses", []) or []:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            if waiting.get("reason") == "CrashLoopBackOff" or (int(cs.get("restartCount") or 0) >= POD_RESTARTS_WARN
                                                              and not cs.get("ready")):
                looping.append(p["metadata"]["name"])
                break
    section["problem_pods"] = sorted(set(pending + looping))
    out.append(Check("kubernetes", "kube.pods", "kube-system", "warn" if pending or looping else "ok",
                     (f"pending: {', '.join(pending) or '-'}; crash-looping: {', '.join(looping) or '-'}")
                     if pending or looping else "no pending or crash-looping kube-system pods",
                     "`kubectl -n kube-system describe pod NAME` and `kubectl logs --previous` on a control-plane node"))
    return out, section


def _whole_json(text: str) -> dict[str, Any]:
    """kubectl -o json: one indented document."""
    import json

    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _pod_ready(pod: dict[str, Any]) -> bool:
    conds = pod.get("status", {}).get("conditions", []) or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


# -- the report ---------------------------------------------------------------------------------------------

def evaluate(collected: Collected, command: str = "") -> Report:
    cluster = collected.cluster
    hints = Hints(cluster, selector_of(command, cluster))
    installed: dict[str, set[str]] = {}
    for node in collected.nodes:
        for unit, st in unit_states(node.section("units")).items():
            if st.get("LoadState") == "loaded":
                installed.setdefault(unit, set()).add(node.name)
    checks: list[Check] = []
    nodes_doc: list[dict[str, Any]] = []
    for node in collected.nodes:
        mine = node_checks(node, collected, hints, installed)
        checks += mine
        nodes_doc.append(_node_doc(node, mine))
    wanted_units = sorted({u for n in collected.nodes for u in n.units_wanted})
    reachable = [n for n in collected.nodes if n.reachable and not n.error]
    for unit in wanted_units:
        if reachable and unit not in installed:
            checks.append(Check("unit", f"unit.{unit}", "cluster", "ok",
                                f"{unit} is installed on no node: this cluster was set up without it so far "
                                f"(`kubexm create cluster` installs it)"))
    etcd, etcd_doc = etcd_checks(collected, hints)
    certs, cert_rows = cert_checks(collected, hints)
    kube, kube_doc = kube_checks(collected, hints)
    checks += etcd + certs + kube
    when = dt.datetime.fromtimestamp(collected.started, dt.UTC).isoformat(timespec="seconds")
    return Report(cluster.name, when, collected.seconds, checks, nodes_doc, etcd_doc, kube_doc, cert_rows,
                  collected.all_nodes)


def _node_doc(node: NodeData, checks: list[Check]) -> dict[str, Any]:
    first = next((c for c in checks if c.id == "node.reachable"), None)
    info = first.data if first else {}
    units = unit_states(node.section("units"))
    return {
        "name": node.name, "address": node.address, "roles": node.roles,
        "reachable": node.reachable and not node.error, "error": node.error,
        "connect_ms": node.connect_ms, "os": info.get("os"), "kernel": info.get("kernel"),
        "uptime_seconds": info.get("uptime_seconds"), "container": info.get("container"),
        "status": _worst(c.status for c in checks),
        "units": [{"unit": u, "load_state": units.get(u, {}).get("LoadState"),
                   "active_state": units.get(u, {}).get("ActiveState"),
                   "restarts": int(units[u]["NRestarts"]) if units.get(u, {}).get("NRestarts", "").isdigit() else None}
                  for u in node.units_wanted],
        "filesystems": filesystems(node),
    }


def take_report(cluster: Cluster, options: Any, *, sudo: bool = True, command: str = "",
                factory: Any = None) -> Report:
    """Collect (one parallel round of connections) and judge: the whole of `kubexm health cluster`."""
    import asyncio

    from kubexm.diagnostics.health import collect

    collected = asyncio.run(collect(cluster, options, sudo=sudo, command=command, factory=factory))
    return evaluate(collected, command)

"""Preflight: read-only checks that a host can take its roles, gathered in one round trip per host.

Each check ends as pass, warn or fail with a reason. Results are collected in
``run.shared["preflight"]`` and reported as one host x check table by ``PreflightReport``.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Literal

from kubexm import __version__
from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.selectors import DEPLOY
from kubexm.engine.step import Step
from kubexm.errors import ConnectionFault, KubexmError, StepFailed
from kubexm.hosts.facts import Facts
from kubexm.hosts.shell import Cmd, script, seq, shell
from kubexm.spec.models import Cluster

Result = Literal["pass", "warn", "fail"]


@dataclass(frozen=True)
class Finding:
    host: str
    check: str
    result: Result
    reason: str


SUPPORTED_OS: dict[str, tuple[str, ...]] = {
    "debian": ("11", "12", "13"),
    "ubuntu": ("20.04", "22.04", "24.04"),
    "rhel": ("8", "9"),
    "centos": ("8", "9"),
    "rocky": ("8", "9"),
    "almalinux": ("8", "9"),
    "ol": ("8", "9"),
}

# Commands later modules rely on, with the package that provides them on Debian/RHEL:
# tar and sha256sum unpack and verify assets, systemctl runs every service, ip/mount
# inspect the network and filesystems, iptables or nft is what kube-proxy and CNIs drive.
REQUIRED_COMMANDS: dict[str, str] = {
    "sh": "dash/bash",
    "tar": "tar",
    "sha256sum": "coreutils",
    "systemctl": "systemd",
    "ip": "iproute2",
    "mount": "mount/util-linux",
}
ANY_OF_COMMANDS: dict[str, tuple[str, ...]] = {"iptables or nft": ("iptables", "nft")}

# Ports that must be free on a host for each role, and the ones peers must be able to reach.
ROLE_PORTS: dict[str, tuple[int, ...]] = {
    "etcd": (2379, 2380),
    "control-plane": (6443, 10257, 10259),
    "worker": (10250,),
}
# The process kubexm installs on each port (names as the kernel shows them, cut at 15 characters).
PORT_OWNERS = {2379: "etcd", 2380: "etcd", 6443: "kube-apiserver", 10250: "kubelet", 10257: "kube-controller",
               10259: "kube-scheduler"}
REACH_PORTS: dict[str, tuple[int, ...]] = {"etcd": (2379, 2380), "control-plane": (6443,), "worker": (10250,)}
MIN_KERNEL = (4, 19)  # kubeadm's system verification warns below this for current Kubernetes releases
_RFC1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def findings(run: RunContext) -> list[Finding]:
    store: list[Finding] = run.shared.setdefault("preflight", [])
    return store


def _ports_for(roles: list[str], table: dict[str, tuple[int, ...]]) -> list[int]:
    return sorted({p for r in roles for p in table.get(r, ())})


def probe_script(peers: list[tuple[str, str, int]]) -> Cmd:
    """One read-only command printing KEY=VALUE lines: commands found, listening ports, peer reachability.

    Reachability is tested with bash's /dev/tcp: "refused" proves the peer answers at the IP level
    (nothing listens yet before the cluster exists), a timeout means it is unreachable.
    """
    parts = [
        script("export LC_ALL=C", readonly=True),
        *(shell("command -v {cmd} >/dev/null 2>&1 && echo {found} || echo {missing}", cmd=cmd, found=f"cmd_{cmd}=1",
                missing=f"cmd_{cmd}=0", readonly=True)
          for cmd in [*REQUIRED_COMMANDS, *(c for group in ANY_OF_COMMANDS.values() for c in group)]),
        # port/process pairs, e.g. "2379/etcd": a port held by the component kubexm itself installed is fine.
        script(r"""printf 'listen='; ss -ltnpH 2>/dev/null | awk '{split($4,a,":"); p=a[length(a)]; n="?"; """
               r"""if (match($0, /\(\("[^"]+"/)) n=substr($0, RSTART+3, RLENGTH-4); print p "/" n}' """
               r"""| sort -u | tr '\n' ' '; echo""", readonly=True),
        script('getent hosts "$(hostname)" >/dev/null 2>&1 && echo dns_self=1 || echo dns_self=0', readonly=True),
        script("echo have_bash=$(command -v bash >/dev/null 2>&1 && echo 1 || echo 0)", readonly=True),
    ]
    if peers:
        parts += [peer_probe(name, addr, port) for name, addr, port in peers]
        parts.append(script("wait", readonly=True))
    parts.append(script("echo now=$(date +%s.%N)", readonly=True))
    return seq(*parts)


def peer_probe(name: str, addr: str, port: int) -> Cmd:
    """Tries a TCP connection to a peer in the background; prints ``reach_<name>_<port>=open|refused|timeout|...``.

    Read-only, and verified as such: the script bash runs is a literal (``: <"/dev/tcp/$1/$2"`` opens a socket
    and closes it, sending nothing); the address and port reach it only as its positional parameters.
    """
    return shell(
        "{{ ( out=$(timeout 3 bash -c ': <\"/dev/tcp/$1/$2\"' kubexm-probe {addr} {port} 2>&1); rc=$?; "
        "if [ $rc -eq 0 ]; then r=open; "
        "elif [ $rc -eq 124 ]; then r=timeout; elif printf '%s' \"$out\" | grep -qi refused; then r=refused; "
        "else r=unreachable; fi; printf '%s=%s\\n' {key} \"$r\" ) & }}",
        addr=addr, port=port, key=f"reach_{name}_{port}", readonly=True)


def _kv(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            out[k.strip()] = v.strip()
    return out


def _with_hint(exc: KubexmError) -> str:
    return exc.message + (f" ({exc.hint})" if exc.hint else "")


def _kernel(version: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", version)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


def evaluate(cluster: Cluster, name: str, facts: Facts, probe: dict[str, str], skew: float,
             peers: list[tuple[str, str, int]]) -> list[Finding]:
    """Turn facts and probe output of one host into findings (pure: unit-testable with recorded data)."""
    roles = cluster.roles_of(name)
    limits = cluster.spec.preflight
    out: list[Finding] = []

    def add(check: str, result: Result, reason: str) -> None:
        out.append(Finding(name, check, result, reason))

    versions = SUPPORTED_OS.get(facts.os_id)
    if versions is None:
        family = "rhel" if facts.os_family == "rhel" else None
        versions = SUPPORTED_OS.get(family or "")
    major = facts.os_version.split(".")[0]
    if versions and (facts.os_version in versions or major in versions):
        add("os", "pass", facts.os_pretty or f"{facts.os_id} {facts.os_version}")
    else:
        supported = "; ".join(f"{k} {'/'.join(v)}" for k, v in SUPPORTED_OS.items())
        add("os", "fail", f"{facts.os_pretty or facts.os_id} is not supported (supported: {supported})")

    if facts.arch in ("amd64", "arm64"):
        add("arch", "pass", facts.arch)
    else:
        add("arch", "fail", f"{facts.machine} is not supported; kubexm deploys amd64 and arm64 hosts")

    if _kernel(facts.kernel) >= MIN_KERNEL:
        add("kernel", "pass", facts.kernel)
    else:
        add("kernel", "warn", f"{facts.kernel} is older than {MIN_KERNEL[0]}.{MIN_KERNEL[1]}; "
                              "recent Kubernetes releases expect a newer kernel")

    if facts.systemd_running:
        add("init", "pass", "systemd")
    else:
        add("init", "fail", f"init is '{facts.init or 'unknown'}', not systemd; etcd, containerd and kubelet "
                            "run as systemd units")

    cp = "control-plane" in roles
    min_cpu = limits.min_cpu_control_plane if cp else limits.min_cpu_worker
    min_mem = limits.min_memory_mb_control_plane if cp else limits.min_memory_mb_worker
    role_word = "control-plane" if cp else "worker/etcd"
    if facts.cpus >= min_cpu:
        add("cpu", "pass", f"{facts.cpus} CPUs (a {role_word} needs {min_cpu})")
    else:
        add("cpu", "fail", f"{facts.cpus} CPUs, a {role_word} host needs at least {min_cpu}")
    if facts.memory_mb >= min_mem:
        add("memory", "pass", f"{facts.memory_mb} MiB (a {role_word} needs {min_mem})")
    else:
        add("memory", "fail", f"{facts.memory_mb} MiB, a {role_word} host needs at least {min_mem} MiB")

    if facts.swap_mb == 0:
        add("swap", "pass", "off")
    elif facts.is_container:
        add("swap", "warn", f"{facts.swap_mb} MiB swap visible; a container cannot turn it off (kubelet must "
                            "be told to tolerate swap)")
    else:
        add("swap", "warn", f"{facts.swap_mb} MiB swap on; the OS module turns it off now and in fstab")

    if facts.is_container:
        add("container", "warn", f"runs in a {facts.container} container: kernel modules, most sysctls and swap "
                                 "cannot be changed here; those steps will be not applicable")
    else:
        add("container", "pass", "not a container")

    missing = [f"{c} ({pkg})" for c, pkg in REQUIRED_COMMANDS.items() if probe.get(f"cmd_{c}") != "1"]
    missing += [label for label, cmds in ANY_OF_COMMANDS.items() if not any(probe.get(f"cmd_{c}") == "1" for c in cmds)]
    if missing:
        add("commands", "fail", "missing: " + ", ".join(missing) + "; install them first")
    else:
        add("commands", "pass", "all required commands present")

    hostname = facts.hostname
    if not _RFC1123.match(hostname):
        add("hostname", "warn", f"'{hostname}' is not a valid DNS name; it will be set to '{name}'")
    elif hostname != name:
        add("hostname", "pass", f"'{hostname}'; will be set to '{name}'")
    else:
        add("hostname", "pass", hostname)
    if probe.get("dns_self") == "1":
        add("dns", "pass", "own hostname resolves")
    else:
        add("dns", "warn", f"'{hostname}' does not resolve on the host; the OS module adds every host to /etc/hosts")

    if abs(skew) <= limits.max_clock_skew_seconds:
        add("clock", "pass", f"{skew:+.2f}s from the deploy machine")
    else:
        add("clock", "fail", f"clock is {skew:+.1f}s off the deploy machine (limit "
                             f"{limits.max_clock_skew_seconds:g}s); TLS and etcd need synchronised clocks — "
                             "fix NTP or set spec.system.ntpServers")

    owners: dict[int, str] = {}
    for token in probe.get("listen", "").split():
        port_text, _, proc = token.partition("/")
        if port_text.isdigit():
            owners.setdefault(int(port_text), proc or "?")
    wanted = _ports_for(roles, ROLE_PORTS)
    owner_of = dict(PORT_OWNERS)
    from kubexm.balancer.plan import endpoint_plan

    plan = endpoint_plan(cluster)
    if name in plan.balancers and plan.kind == "haproxy-keepalived" and plan.listen_port not in wanted:
        wanted.append(plan.listen_port)
        owner_of[plan.listen_port] = "haproxy"
    ours = [p for p in wanted if p in owners and owners[p] == owner_of.get(p)]
    busy = [f"{p} ({owners[p]})" for p in wanted if p in owners and p not in ours]
    if busy:
        add("ports", "fail", f"already in use: {', '.join(busy)}; stop what listens there")
    elif ours:
        add("ports", "pass", "held by kubexm's own components: " + ", ".join(f"{p} ({owners[p]})" for p in ours))
    else:
        add("ports", "pass", f"free: {', '.join(map(str, wanted)) or 'none needed'}")

    if not peers:
        add("network", "pass", "no other hosts to reach")
    elif probe.get("have_bash") != "1":
        add("network", "warn", "bash is missing, peer reachability was not tested")
    else:
        bad = []
        for peer, addr, port in peers:
            state = probe.get(f"reach_{peer}_{port}", "unknown")
            if state not in ("open", "refused"):
                bad.append(f"{peer} {addr}:{port} ({state})")
        if bad:
            add("network", "fail", "cannot reach " + ", ".join(bad) + "; open the firewall between hosts")
        else:
            add("network", "pass", f"reaches {len({p for p, _, _ in peers})} peers on their role ports")
    return out


@dataclass(frozen=True)
class CheckHost(Step):
    """Gather facts and probe one host; never changes anything."""

    mutates = False

    def describe(self) -> str:
        return "check OS, resources, commands, ports, clock and peer reachability"

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        peers = []
        for other in cluster.spec.hosts:
            if other.name == host.name:
                continue
            for port in _ports_for(cluster.roles_of(other.name), REACH_PORTS):
                peers.append((re.sub(r"\W", "_", other.name), other.internal_ip, port))
        found = findings(host.run_ctx)
        # An unreachable host is a finding, not a crash: the table must still show every host.
        for attempt in (1, 2):
            try:
                facts = await host.facts()
                t0 = time.time()
                probe_cmd = probe_script(peers)
                res = await host.run(probe_cmd, sudo=False, check=False, display="preflight probe")
                t1 = time.time()
                break
            except ConnectionFault as exc:
                if attempt == 1:
                    await host.run_ctx.pool.reset(host.name)
                    continue
                found.append(Finding(host.name, "ssh", "fail", _with_hint(exc)))
                return
            except KubexmError as exc:
                found.append(Finding(host.name, "ssh", "fail", _with_hint(exc)))
                return
        probe = _kv(res.stdout)
        try:
            skew = float(probe.get("now", "")) - (t0 + t1) / 2
        except ValueError:
            skew = 0.0
        found.append(Finding(host.name, "ssh", "pass", "connected"))
        found.extend(evaluate(cluster, host.name, facts, probe, skew, peers))


@dataclass(frozen=True)
class LintClusterSpec(Step):
    """Cross-field rules of the cluster file (already enforced at load; kept as a visible row)."""

    mutates = False

    def describe(self) -> str:
        return "lint the cluster spec"

    async def run(self, host: HostContext) -> None:
        from kubexm.spec.validate import validate_cluster

        problems = validate_cluster(host.cluster)
        found = findings(host.run_ctx)
        if problems:
            found.extend(Finding(DEPLOY, "spec", "fail", p) for p in problems)
        else:
            found.append(Finding(DEPLOY, "spec", "pass", "cluster file is consistent"))


@dataclass(frozen=True)
class CheckDeployMachine(Step):
    """Limits of the machine kubexm runs on that a large fleet reaches: open files and the neighbour table."""

    mutates = False

    def describe(self) -> str:
        return "check this machine's limits for the fleet"

    async def run(self, host: HostContext) -> None:
        from kubexm.hosts.limits import neighbour_warning, raise_open_files

        hosts = host.cluster.spec.hosts
        found = findings(host.run_ctx)
        warnings = [w for w in (raise_open_files(len(hosts)), neighbour_warning(h.address for h in hosts)) if w]
        found.extend(Finding(DEPLOY, "limits", "warn", w) for w in warnings)
        if not warnings:
            found.append(Finding(DEPLOY, "limits", "pass", f"open files and neighbour table fit {len(hosts)} hosts"))


@dataclass(frozen=True)
class PreflightReport(Step):
    """Emit the host x check table and stop the run when a check failed (unless --skip-preflight)."""

    mutates = False

    def describe(self) -> str:
        return "report preflight results"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        rows = findings(run)
        order = {name: i for i, name in enumerate([DEPLOY, *(h.name for h in run.cluster.spec.hosts)])}
        rows.sort(key=lambda f: order.get(f.host, 99))
        failed = [f for f in rows if f.result == "fail"]
        run.emit_report("Preflight", ["host", "check", "result", "reason"],
                        [[f.host, f.check, f.result, f.reason] for f in rows])
        if not failed:
            return
        summary = f"{len(failed)} preflight check(s) failed on {len({f.host for f in failed})} host(s): " + \
            ", ".join(f"{f.host}/{f.check}" for f in failed[:6]) + ("…" if len(failed) > 6 else "")
        if run.options.skip_preflight:
            host.emit("message", status="warn", message=summary + " — continuing because of --skip-preflight")
            return
        if run.options.dry_run:
            run.shared["preflight_failed"] = [(f.host, f.check, f.reason) for f in failed]
            return
        raise StepFailed(summary, hint="fix them, or re-run with --skip-preflight to go on anyway")


@dataclass(frozen=True)
class Greeting(Step):
    """Say what is about to happen: kubexm version, cluster, hosts and roles, versions."""

    mutates = False

    def describe(self) -> str:
        return "greet: version, cluster, hosts and roles"

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        spec = cluster.spec
        rows = [[h.name, h.address, ", ".join(cluster.roles_of(h.name)) or "-"] for h in spec.hosts]
        host.run_ctx.emit_report(
            f"⎈ kubexm {__version__} — cluster {cluster.name}: Kubernetes {spec.kubernetes.version}, "
            f"etcd {spec.etcd.version} ({spec.etcd.type}), {spec.container_runtime.type}, {spec.network.plugin}",
            ["host", "address", "roles"], rows)

"""``kubexm health cluster``: one read-only command per node, all nodes at once, judged into one report.

Every node gets the same kind of probe (``node_probe``), built with :mod:`kubexm.hosts.shell` and declared
read-only, so it is verified against the read-only allow-list: system state, disk and inode use of the paths
kubexm's components write to, clock, swap, kernel modules and sysctls, the units kubexm manages, the
certificates kubexm placed (the `certs check` inventory), and on etcd members the member's own view of etcd
(endpoint status and health, member list, alarms). One control-plane node also asks the API server, through
the admin kubeconfig, for nodes and kube-system pods; only when that node cannot answer does a second
control-plane node get one more command.

Nothing here takes the cluster lock or writes run history: the report only reads, and on-call must be able to
take it while another run holds the lock. Judging the collected data is :mod:`kubexm.diagnostics.health_checks`.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import time
from dataclasses import dataclass, field
from typing import Any

from kubexm.balancer.plan import endpoint_plan
from kubexm.engine.context import RunContext, RunOptions
from kubexm.errors import AuthenticationError, ConnectionFault, HostKeyError, HostUnreachable
from kubexm.hosts.pool import ConnectionFactory
from kubexm.hosts.shell import Cmd, seq, sh, shell
from kubexm.pki.inventory import NodeRead, Placed, inventory_read_command, node_inventory, parse_read
from kubexm.spec.models import Cluster

SECTION = "#kx-section "
KUBELET_ROOT = "/var/lib/kubelet"
RUNTIME_ROOTS = {"containerd": "/var/lib/containerd", "docker": "/var/lib/docker", "crio": "/var/lib/containers/storage"}
# The systemd units kubexm installs for each runtime (docker: dockerd plus cri-dockerd, the CRI kubelet uses).
RUNTIME_UNITS = {"containerd": ("containerd",), "docker": ("docker", "cri-docker"), "crio": ("crio",)}
UNIT_PROPERTIES = "Id,LoadState,ActiveState,SubState,NRestarts,Result"
# The small files every probe reads (missing ones are skipped): kernel release, uptime, load, what container
# systemd found itself in (absent on a machine of its own), memory, online CPUs, the OS (os-release(5): /etc's,
# or its fallback under /usr/lib), and the loaded kernel modules.
OSRELEASE, UPTIME, LOADAVG, CONTAINER = "/proc/sys/kernel/osrelease", "/proc/uptime", "/proc/loadavg", "/run/systemd/container"
MEMINFO, CPUS_ONLINE, MODULES = "/proc/meminfo", "/sys/devices/system/cpu/online", "/proc/modules"
OS_RELEASE = ("/etc/os-release", "/usr/lib/os-release")
SYSTEM_FILES = (OSRELEASE, UPTIME, LOADAVG, CONTAINER, MEMINFO, CPUS_ONLINE, *OS_RELEASE, MODULES)
# Seconds a node's probe may take (--command-timeout replaces it). A healthy node answers in well under a
# second; etcdctl gives up after its own 10 s. A kept connection to a node that vanished is found out here.
PROBE_TIMEOUT = 30.0


@dataclass
class NodeData:
    """What one node's probe returned, parsed; ``error`` set when the node could not be reached."""

    name: str
    address: str
    roles: list[str]
    reachable: bool = False
    connect_ms: float | None = None
    error: str | None = None
    sent_at: float = 0.0  # the deploy machine's clock when the probe was sent
    received_at: float = 0.0  # ... and when its answer was in
    sections: dict[str, str] = field(default_factory=dict)
    files: dict[str, list[str]] = field(default_factory=dict)  # the probe's small files by path (readable ones)
    units_wanted: list[str] = field(default_factory=list)
    paths: dict[str, str] = field(default_factory=dict)  # what a probed path is ("etcd data", ...) by path
    placed: list[Placed] = field(default_factory=list)
    etcd_member: bool = False
    kube_probe: bool = False  # this node's probe asked the API server

    def section(self, name: str) -> str:
        return self.sections.get(name, "")


@dataclass
class Collected:
    cluster: Cluster
    nodes: list[NodeData]
    started: float
    seconds: float
    run: RunContext
    kube_node: str | None = None  # the control-plane node whose kubectl answered (or was asked last)
    all_nodes: bool = True  # False when --nodes limited the report


def units_for(cluster: Cluster, node: str) -> list[str]:
    """The systemd units kubexm installs on ``node`` for its roles, in a stable order."""
    roles = set(cluster.roles_of(node))
    spec = cluster.spec
    units: list[str] = []
    if "etcd" in roles and spec.etcd.type == "kubexm":
        units.append("etcd")
    units += RUNTIME_UNITS[spec.container_runtime.type]  # every node gets the runtime (InstallContainerd: all hosts)
    if roles & {"control-plane", "worker"}:
        units.append("kubelet")
    plan = endpoint_plan(cluster)
    if plan.kind == "haproxy-keepalived" and node in plan.balancers:
        units += ["haproxy", "keepalived"]
    if "registry" in roles and spec.registry.type == "docker-registry":
        from kubexm.steps.registry import UNIT

        units.append(UNIT)
    return units


def paths_for(cluster: Cluster, node: str) -> dict[str, str]:
    """Paths whose disk and inode use is judged, with what each holds: /, the etcd data dir, the runtime's and
    kubelet's roots (only those that apply to the node's roles; a path that does not exist is skipped)."""
    from kubexm.steps.etcd_node import data_dir

    roles = set(cluster.roles_of(node))
    spec = cluster.spec
    out = {"/": "root filesystem"}
    if ("etcd" in roles and spec.etcd.type == "kubexm") or ("control-plane" in roles and spec.etcd.type == "kubeadm"):
        out[data_dir(cluster)] = "etcd data dir"
    runtime = spec.container_runtime
    out.setdefault(posixpath.normpath(runtime.data_root or RUNTIME_ROOTS[runtime.type]), f"{runtime.type} root")
    if roles & {"control-plane", "worker"}:
        out.setdefault(KUBELET_ROOT, "kubelet root")
    return out


def kube_command() -> Cmd:
    """On a control-plane node: whether the admin kubeconfig is there, whether an API server answers through
    it, and then the nodes and kube-system pods as JSON."""
    from kubexm.kube.commands import kubectl_get
    from kubexm.kube.paths import ADMIN_CONF

    return shell(
        "if test -f {conf}; then echo present; {readyz} 2>&1 && echo '#kx-section kube-nodes' && {nodes} && "
        "echo '#kx-section kube-pods' && {pods}; else echo absent; fi",
        conf=ADMIN_CONF, readyz=kubectl_get("--raw=/readyz", "--request-timeout=5s"),
        nodes=kubectl_get("nodes", "-o", "json", "--request-timeout=15s"),
        pods=kubectl_get("pods", "-n", "kube-system", "-o", "json", "--request-timeout=15s"), readonly=True)


def sysctl_values(keys: list[str], files: dict[str, list[str]]) -> dict[str, str | None]:
    """Each key's live value from the probe's file read (None: its /proc/sys file is absent)."""
    from kubexm.steps.os import proc_path

    return {k: (files[proc_path(k)] or [""])[0].strip() if proc_path(k) in files else None for k in keys}


def grep_files(text: str) -> dict[str, list[str]]:
    """``grep -H ''`` output (``path:line`` for every line of every readable file) as the lines of each file."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        path, sep, rest = line.partition(":")
        if sep and path.startswith("/"):
            out.setdefault(path, []).append(rest)
    return out


def writable_sysctl_probe(keys: list[str]) -> Cmd:
    """Prints each key whose /proc/sys file this node can write (read-only in a container, for instance), as the
    Sysctl step judges it before it writes."""
    from kubexm.steps.os import proc_path

    return seq(*(shell("test -w {path} && printf '%s\\n' {key}", path=proc_path(k), key=k, readonly=True)
                 for k in keys), sh("true", readonly=True))


def _etcd(*args: str) -> Cmd:
    from kubexm.steps.etcd_node import etcdctl

    return etcdctl(*args, "-w", "json", readonly=True)


def node_probe(cluster: Cluster, node: str, *, kube: bool,
               built: dict[tuple[object, ...], Cmd] | None = None) -> tuple[Cmd, NodeData]:
    """The one read-only command for ``node`` and the (empty) record its output is parsed into. ``built``:
    commands made so far in this round, by what they depend on; nodes of the same roles share one (a fleet
    has a few kinds of node, and building and verifying the command is most of the local work per node)."""
    host = cluster.host(node)
    roles = cluster.roles_of(node)
    data = NodeData(node, host.address, roles, units_wanted=units_for(cluster, node), paths=paths_for(cluster, node),
                    placed=node_inventory(cluster, node))
    data.etcd_member = "etcd" in roles and cluster.spec.etcd.type == "kubexm"
    data.kube_probe = kube
    key = (tuple(roles), tuple(data.units_wanted), tuple(data.paths), tuple((p.path, p.kind) for p in data.placed),
           data.etcd_member, kube)
    command = built.get(key) if built is not None else None
    if command is None:
        command = _probe_command(cluster, data)
        if built is not None:
            built[key] = command
    return command, data


def _probe_command(cluster: Cluster, data: NodeData) -> Cmd:
    from kubexm.steps.os import proc_path, wanted_sysctl

    roles, kube = data.roles, data.kube_probe
    none = sh("true", readonly=True)
    kubelet = bool(set(roles) & {"control-plane", "worker"})
    etcd = data.etcd_member
    # As few programs as possible: a probe runs on every node at once, often many per CPU of this machine, and
    # each program started costs a node ~1 ms of CPU (systemctl ~2). One grep reads every small file (/proc,
    # os-release, modules, each sysctl), df runs once for all paths, and one systemctl call shows the managed
    # units and every failed one; loops and tests are shell builtins. What is left to judge is parsed here.
    wanted = list(wanted_sysctl(cluster)) if kubelet else []
    return shell(
        "export LC_ALL=C\n"
        "echo '#kx-section time'; date +%s.%N\n"
        "echo '#kx-section files'; grep -H -s '' -- {files}\n"
        # An empty module list and none at all (a container without /proc/modules) read the same through grep.
        "echo '#kx-section unreadable'; test -r {modules} || printf '%s\\n' {modules}\n"
        "echo '#kx-section df-paths'; set --; for p in {paths}; do if test -e \"$p\"; then set -- \"$@\" \"$p\"; "
        "printf '%s\\n' \"$p\"; fi; done\n"
        "echo '#kx-section df'; df -k --output=source,size,used,avail,itotal,iused,iavail,target -- \"$@\"\n"
        "echo '#kx-section sysctl-writable'; {writable}\n"
        # The managed units by name, then every failed unit ('*' is systemctl's own pattern, which it expands
        # over the loaded units and filters by --state; named units are shown whatever their state).
        "echo '#kx-section units'; systemctl show --property={props} --state=failed -- {units} {every} 2>&1\n"
        "echo '#kx-section certs'; {certs}\n"
        "echo '#kx-section etcd-status'; {status} 2>&1\n"
        "echo '#kx-section etcd-health'; {health} 2>&1\n"
        "echo '#kx-section etcd-members'; {members} 2>&1\n"
        "echo '#kx-section etcd-alarms'; {alarms} 2>&1\n"
        "echo '#kx-section kube'; {kube}\n"
        "true",
        files=[*SYSTEM_FILES, *(proc_path(k) for k in wanted)], modules=MODULES, paths=list(data.paths),
        writable=writable_sysctl_probe(wanted) if kubelet else none,
        props=UNIT_PROPERTIES, units=data.units_wanted, every="*",
        certs=inventory_read_command(data.placed) if data.placed else none,
        status=_etcd("endpoint", "status") if etcd else none, health=_etcd("endpoint", "health") if etcd else none,
        members=_etcd("member", "list") if etcd else none, alarms=_etcd("alarm", "list") if etcd else none,
        kube=kube_command() if kube else none, readonly=True)


def parse_sections(stdout: str) -> dict[str, str]:
    out: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(SECTION):
            current = out.setdefault(line[len(SECTION):].strip(), [])
        elif current is not None:
            current.append(line)
    return {k: "\n".join(v) for k, v in out.items()}


def cert_read(data: NodeData) -> NodeRead:
    return parse_read(data.section("certs"))


def first_json(text: str, want: type = object, key: str | None = None) -> Any:
    """The first line of ``text`` that is JSON of type ``want`` (holding ``key``, for a dict): etcdctl -w json
    prints its answer on one line, and with stderr on the same stream its log lines (JSON objects too) and
    errors come before or after it."""
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith(("[", "{")):
            continue
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        if isinstance(doc, want) and (key is None or (isinstance(doc, dict) and key in doc)):
            return doc
    return None


_UNREACHABLE = (ConnectionFault, AuthenticationError, HostKeyError)


async def _probe(run: RunContext, data: NodeData, command: Cmd, sudo: bool) -> None:
    host = run.host(data.name)
    for attempt in (1, 2):
        start = time.monotonic()
        try:
            await run.pool.get(data.name)
            if data.connect_ms is None:
                data.connect_ms = round((time.monotonic() - start) * 1000, 1)
            data.sent_at = time.time()
            res = await host.run(command, sudo=sudo, check=False, display="health probe",
                                 timeout=run.options.connect.command_timeout or PROBE_TIMEOUT)
            data.received_at = time.time()
        except _UNREACHABLE as exc:
            # A dropped kept connection is redialled once; a host that cannot be dialled is not asked again.
            if attempt == 1 and isinstance(exc, ConnectionFault) and not isinstance(exc, HostUnreachable):
                await run.pool.reset(data.name)
                continue
            data.error = exc.message
            return
        data.reachable = True
        data.sections = parse_sections(res.stdout)
        data.files = grep_files(data.section("files"))
        if "time" not in data.sections:
            data.error = (f"the probe printed nothing (exit {res.exit_status}): "
                          f"{(res.stderr.strip().splitlines() or ['no error output'])[-1][:200]}")
        return


def kube_answered(data: NodeData) -> bool:
    return "kube-nodes" in data.sections


async def collect(cluster: Cluster, options: RunOptions, *, sudo: bool = True, command: str = "",
                  factory: ConnectionFactory | None = None) -> Collected:
    """Probe every selected node at once; ask the API server on the first control-plane node, and on the next
    one only when that one could not answer."""
    from kubexm.engine.executor import match_hosts

    names = match_hosts(cluster, options.nodes) if options.nodes else [h.name for h in cluster.spec.hosts]
    from kubexm.api import run_context

    run = run_context(cluster, options, command=command, factory=factory)
    cps = [h.name for h in cluster.hosts_with_role("control-plane") if h.name in names]
    nodes: list[NodeData] = []
    probes = []
    built: dict[tuple[object, ...], Cmd] = {}
    for name in names:
        cmd, data = node_probe(cluster, name, kube=bool(cps) and name == cps[0], built=built)
        nodes.append(data)
        probes.append(_probe(run, data, cmd, sudo))
    started = time.time()
    t0 = time.monotonic()
    try:
        await asyncio.gather(*probes)
        kube_node = cps[0] if cps else None
        by_name = {n.name: n for n in nodes}
        if cps and not kube_answered(by_name[cps[0]]):
            for other in cps[1:]:
                data = by_name[other]
                if not data.reachable or data.error:
                    continue
                res = await run.host(other).run(kube_command(), sudo=sudo, check=False, display="kubectl probe",
                                                timeout=run.options.connect.command_timeout or PROBE_TIMEOUT)
                extra = parse_sections(SECTION + "kube\n" + res.stdout)
                data.sections.update(extra)
                data.kube_probe = True
                kube_node = other
                if kube_answered(data):
                    break
    finally:
        await run.close()
    return Collected(cluster, nodes, started, time.monotonic() - t0, run, kube_node,
                     all_nodes=len(names) == len(cluster.spec.hosts))

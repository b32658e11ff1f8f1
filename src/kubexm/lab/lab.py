"""A lab: N nodes on one bridge, each an nspawn-booted Debian with its own overlay root and netns.

Everything a lab creates is recorded in its state file (pids, mounts, links), so ``down``
removes exactly that and nothing else; names are derived from the lab name so a lab whose
state file was lost can still be swept.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from kubexm import paths
from kubexm.errors import KubexmError, UsageError
from kubexm.hosts.known_hosts import KnownHosts
from kubexm.lab import base, system

DEFAULT_SUBNET = "10.213.0.0/24"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,11}$")


def lab_root() -> Path:
    """``$KUBEXM_LAB_HOME``, else ``$KUBEXM_HOME/lab``: where labs keep state, keys and node layers."""
    env = os.environ.get("KUBEXM_LAB_HOME")
    root = Path(env) if env else paths.home() / "lab"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass
class LabNode:
    name: str
    address: str
    machine: str
    netns: str
    veth: str
    pid: int | None = None
    started: float | None = None
    partitioned: bool = False

    @property
    def running(self) -> bool:
        return system.alive(self.pid)


@dataclass
class LabState:
    name: str
    subnet: str
    bridge: str
    nodes: list[LabNode] = field(default_factory=list)


def _short(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()[:5]


class Lab:
    def __init__(self, name: str = "lab") -> None:
        if not _NAME.match(name):
            raise UsageError(f"lab name '{name}' is not valid",
                             hint="use 1-12 lowercase letters, digits or '-', starting with a letter")
        self.name = name
        self.dir = lab_root() / name
        self.state_file = self.dir / "state.json"
        self.key = self.dir / "id_ed25519"
        self.cluster_file = self.dir / "lab.yaml"
        self.bridge = f"kxb-{name}"[:15]

    # -- state ----------------------------------------------------------------------------
    def load(self) -> LabState | None:
        try:
            raw = json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return None
        return LabState(raw["name"], raw["subnet"], raw["bridge"], [LabNode(**n) for n in raw["nodes"]])

    def save(self, state: LabState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(state), indent=2))
        tmp.replace(self.state_file)

    def node_dir(self, node: str) -> Path:
        return self.dir / "nodes" / node

    def merged(self, node: str) -> Path:
        return self.node_dir(node) / "root"

    # -- checks ---------------------------------------------------------------------------
    @staticmethod
    def require_host() -> None:
        if os.geteuid() != 0:
            raise KubexmError("the lab needs root (it creates network namespaces, mounts and containers)",
                              hint="run it as root, e.g. with sudo")
        for tool, package in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                              ("ip", "iproute2"), ("ssh-keygen", "openssh-client"), ("ssh", "openssh-client")):
            if shutil.which(tool) is None:
                raise KubexmError(f"{tool} is not installed", hint=f"apt-get install {package}")

    def _plan_nodes(self, count: int, subnet: ipaddress.IPv4Network) -> list[LabNode]:
        hosts = list(subnet.hosts())
        if count < 1 or count + 11 > len(hosts):
            raise UsageError(f"{count} nodes do not fit in {subnet}", hint="use 1-200 nodes and a /24")
        short = _short(self.name)
        return [LabNode(name=f"node{i}", address=str(hosts[9 + i]), machine=f"{self.name}-node{i}",
                        netns=f"kx-{self.name}-node{i}", veth=f"kx{short}n{i}") for i in range(1, count + 1)]

    def _check_subnet(self, subnet: ipaddress.IPv4Network) -> None:
        for dev, net in system.used_networks():
            if dev == self.bridge:
                continue
            if net.overlaps(subnet) and net.prefixlen > 0:
                raise UsageError(f"subnet {subnet} overlaps {net} already used on {dev}",
                                 hint="pick a free one with --subnet, e.g. 10.214.0.0/24")

    # -- lifecycle ------------------------------------------------------------------------
    def up(self, nodes: int = 3, subnet: str = DEFAULT_SUBNET, timeout: float = 180.0) -> tuple[LabState, bool]:
        """Bring the lab up (building the base first if needed). Returns (state, whether anything changed)."""
        self.require_host()
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as exc:
            raise UsageError(f"--subnet {subnet}: {exc}", hint="e.g. --subnet 10.213.0.0/24") from None
        if not isinstance(net, ipaddress.IPv4Network):
            raise UsageError(f"--subnet {subnet}: the lab needs an IPv4 network")
        state = self.load()
        if state is not None:
            if state.subnet != str(net) or len(state.nodes) != nodes:
                raise UsageError(
                    f"lab '{self.name}' already exists with {len(state.nodes)} nodes on {state.subnet}",
                    hint=f"`kubexm lab down --name {self.name}` first, or use another --name")
            if all(n.running for n in state.nodes) and system.link_exists(state.bridge):
                self.write_cluster_file(state)  # same content unless kubexm's lab recipe changed
                return state, False
        else:
            self._check_subnet(net)
            self.dir.mkdir(parents=True, exist_ok=True)
            state = LabState(self.name, str(net), self.bridge, self._plan_nodes(nodes, net))
            self.save(state)
            self._forget_host_keys(state)  # new nodes, new host keys: do not let an older lab's keys clash
        lower = base.ensure_base(self.dir / "base-build.log")
        if not self.key.exists():
            system.sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"kubexm-lab-{self.name}", "-f", str(self.key))
        gateway = str(next(net.hosts()))
        system.ensure_bridge(self.bridge, gateway, net.prefixlen)
        for node in state.nodes:
            if node.running:
                continue
            system.ensure_node_network(node.netns, node.veth, self.bridge, node.address, net.prefixlen, gateway)
            self._boot(node, lower)
            self.save(state)
        self._wait_ready(state, timeout)
        self.write_cluster_file(state)
        return state, True

    def _prepare_root(self, node: LabNode) -> None:
        root = self.merged(node.name)
        (root / "etc/hostname").write_text(node.name + "\n")
        (root / "etc/machine-id").write_text(hashlib.md5(node.machine.encode()).hexdigest() + "\n")
        hosts = "127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n" + f"127.0.1.1 {node.name}\n"
        (root / "etc/hosts").write_text(hosts)
        if not list((root / "etc/ssh").glob("ssh_host_*_key")):
            system.sh("ssh-keygen", "-A", "-f", str(root))
        ssh_dir = root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(self.key.with_suffix(".pub").read_text())
        os.chmod(ssh_dir / "authorized_keys", 0o600)

    def _boot(self, node: LabNode, lower: Path) -> None:
        d = self.node_dir(node.name)
        system.mount_overlay(lower, d / "upper", d / "work", self.merged(node.name))
        self._prepare_root(node)
        with open(d / "console.log", "ab") as log:
            proc = subprocess.Popen(
                ["systemd-nspawn", "-b", "-D", str(self.merged(node.name)), "-M", node.machine,
                 "--register=no", "--keep-unit", f"--network-namespace-path=/run/netns/{node.netns}",
                 # Addresses and routes of the node's own network namespace, as on a VM: keepalived and
                 # kube-vip add the VIP. The namespace is the node's alone, so this reaches nothing else.
                 "--capability=CAP_NET_ADMIN"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        node.pid, node.started, node.partitioned = proc.pid, time.time(), False

    def ssh_argv(self, node: LabNode, *command: str) -> list[str]:
        return ["ssh", "-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={self.dir / 'known_hosts'}", "-o", "ConnectTimeout=5",
                "-o", "LogLevel=ERROR", f"root@{node.address}", *command]

    def _wait_ready(self, state: LabState, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = {n.name: n for n in state.nodes}
        while pending and time.monotonic() < deadline:
            for name, node in list(pending.items()):
                if not node.running:
                    raise KubexmError(f"lab node {name} exited while booting: {self._console_tail(name)}",
                                      hint=f"see {self.node_dir(name) / 'console.log'}")
                if not _ssh_banner(node.address):
                    continue
                res = subprocess.run(self.ssh_argv(node, "systemctl", "is-system-running"), capture_output=True,
                                     text=True, timeout=20, check=False)
                if res.stdout.strip() in ("running", "degraded"):
                    del pending[name]
            time.sleep(0.5)
        if pending:
            names = ", ".join(sorted(pending))
            raise KubexmError(f"lab node(s) {names} did not finish booting in {timeout:.0f}s: "
                              f"{self._console_tail(sorted(pending)[0])}",
                              hint=f"see {self.dir}/nodes/*/console.log; `kubexm lab down --name {self.name}` cleans up")

    def _console_tail(self, node: str) -> str:
        try:
            lines = (self.node_dir(node) / "console.log").read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no console log)"
        return " | ".join(line.strip() for line in lines[-3:])

    def write_cluster_file(self, state: LabState) -> Path:
        names = [n.name for n in state.nodes]
        etcd = names[:3] if len(names) >= 3 else names[:1]
        control = names[:3] if len(names) >= 5 else names[:1]
        workers = [n for n in names if n not in control] or names
        hosts = "".join(f"    - name: {n.name}\n      address: {n.address}\n      user: root\n"
                        f"      privateKeyPath: {self.key}\n" for n in state.nodes)
        endpoint = "  controlPlaneEndpoint:\n    loadBalancer: internal\n" if len(control) > 1 else ""
        from kubexm.lab.assets import deb_local_source, etcd_local_source

        assets, etcd_version = etcd_local_source()
        deb_local_source(base.base_dir())
        endpoint += (f"  etcd:\n    version: {etcd_version}   # Debian's etcd, repacked by the lab\n"
                     "  containerRuntime:\n    # Node roots are overlayfs mounts, and overlayfs does not nest:\n"
                     "    snapshotter: native\n"
                     f"  assets:\n    localSource: {assets}\n")
        text = (f"# Written by `kubexm lab up` for lab '{self.name}' ({state.subnet}).\n"
                f"apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: {self.name}\nspec:\n"
                f"  hosts:\n{hosts}  roleGroups:\n    etcd: [{', '.join(etcd)}]\n"
                f"    control-plane: [{', '.join(control)}]\n    worker: [{', '.join(workers)}]\n{endpoint}")
        self.cluster_file.write_text(text)
        return self.cluster_file

    # -- single-node faults ---------------------------------------------------------------
    def node(self, state: LabState, name: str) -> LabNode:
        for n in state.nodes:
            if name in (n.name, n.machine, n.address):
                return n
        raise UsageError(f"lab '{self.name}' has no node '{name}'",
                         hint="nodes: " + ", ".join(n.name for n in state.nodes))

    def require_state(self) -> LabState:
        state = self.load()
        if state is None:
            raise UsageError(f"no lab named '{self.name}'", hint="`kubexm lab up` creates one")
        return state

    def kill(self, name: str) -> LabNode:
        """Hard-stop a node (SIGKILL of its whole process tree), as a power cut would."""
        self.require_host()
        state = self.require_state()
        node = self.node(state, name)
        system.kill_tree(node.pid)
        node.pid = None
        self.save(state)
        return node

    def start(self, name: str, timeout: float = 120.0) -> LabNode:
        self.require_host()
        state = self.require_state()
        node = self.node(state, name)
        if not node.running:
            net = ipaddress.ip_network(state.subnet)
            system.ensure_node_network(node.netns, node.veth, state.bridge, node.address, net.prefixlen, "")
            system.unmount(self.merged(node.name))  # a killed node's mounts may linger; start from clean
            self._boot(node, base.ensure_base(self.dir / "base-build.log"))
            self.save(state)
            self._wait_ready(LabState(state.name, state.subnet, state.bridge, [node]), timeout)
        return node

    def partition(self, name: str, cut: bool = True) -> LabNode:
        """Cut (or restore) a node's link to the bridge; the node keeps running."""
        self.require_host()
        state = self.require_state()
        node = self.node(state, name)
        system.sh("ip", "link", "set", node.veth, "down" if cut else "up")
        node.partitioned = cut
        self.save(state)
        return node

    # -- teardown -------------------------------------------------------------------------
    def down(self) -> list[str]:
        """Stop every node and remove everything the lab created. Returns what was removed."""
        self.require_host()
        state = self.load()
        removed: list[str] = []
        nodes = state.nodes if state else []
        for node in nodes:  # SIGTERM all first: nodes shut down in parallel
            if node.running and node.pid:
                os.kill(node.pid, 15)
        for node in nodes:
            if node.pid and system.alive(node.pid):
                system.stop_process(node.pid)
                removed.append(f"process {node.pid} ({node.machine})")
        for node in nodes:
            root = self.merged(node.name)
            if system.is_mounted(root):
                system.unmount(root)
                removed.append(f"mount {root}")
        for node in nodes:
            if system.netns_exists(node.netns):
                system.remove_netns(node.netns)
                removed.append(f"netns {node.netns}")
            if system.link_exists(node.veth):
                system.remove_link(node.veth)
                removed.append(f"link {node.veth}")
        # Sweep by name too, in case the state file was lost half-way.
        for ns in Path("/run/netns").glob(f"kx-{self.name}-node*") if Path("/run/netns").is_dir() else []:
            system.remove_netns(ns.name)
            removed.append(f"netns {ns.name}")
        with open("/proc/self/mounts") as fh:
            leftovers = [line.split()[1] for line in fh if line.split()[1].startswith(str(self.dir) + "/")]
        for mount in sorted(leftovers, key=len, reverse=True):
            system.sh("umount", "-l", mount, check=False)
            removed.append(f"mount {mount}")
        if system.link_exists(self.bridge):
            system.remove_link(self.bridge)
            removed.append(f"bridge {self.bridge}")
        if state is not None:
            self._forget_host_keys(state)
        if self.dir.exists():
            shutil.rmtree(self.dir)
        return removed

    @staticmethod
    def _forget_host_keys(state: LabState) -> None:
        """A lab's nodes are rebuilt with fresh host keys; kubexm's known-hosts must not pin the old ones."""
        known = KnownHosts(paths.known_hosts_file())
        for node in state.nodes:
            known.forget(node.address, 22)


def _ssh_banner(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=1) as s:
            s.settimeout(2)
            return s.recv(8).startswith(b"SSH-")
    except OSError:
        return False


def list_labs() -> list[str]:
    root = lab_root()
    return sorted(p.name for p in root.iterdir() if (p / "state.json").is_file())

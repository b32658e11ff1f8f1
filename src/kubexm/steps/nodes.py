"""Day-2 steps on nodes: cordon, drain, remove from the cluster, reset, rolling restart, teardown.

A step targets the node it is about; kubectl runs on a control-plane node that stays in the cluster
(never the node being removed), so the commands are the same a person would type there. Upgrades are in
``kubexm.steps.upgrade``.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from typing import Any

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.hosts.shell import shell
from kubexm.kube import commands
from kubexm.kube.kubeadm import ADMIN_CONF, KUBELET_CONF, cri_socket
from kubexm.steps.common import kubexm_command
from kubexm.steps.kubernetes import CONTROL_PLANE_COMPONENTS, apiserver_ready

# Components `kubexm restart component` knows: static pods on control planes, or systemd units.
STATIC_PODS = CONTROL_PLANE_COMPONENTS
UNITS = ("kubelet", "containerd", "docker", "cri-docker", "crio", "etcd", "haproxy", "keepalived")


def leaving(host: HostContext) -> set[str]:
    """Nodes this run removes (from --nodes): kubectl must not run on them."""
    return set(host.run_ctx.options.extra.get("removing", []))


def operator_host(host: HostContext) -> HostContext:
    """A control-plane node that stays: where kubectl runs for day-2 operations."""
    gone = leaving(host)
    for cp in host.cluster.hosts_with_role("control-plane"):
        if cp.name not in gone:
            return host.run_ctx.host(cp.name)
    raise StepFailed("no control-plane node would remain", hint="keep at least one control-plane node")


async def node_object(host: HostContext, node: str) -> dict[str, Any] | None:
    res = await operator_host(host).run(commands.get_node(node), check=False)
    if not res.ok or not res.stdout.strip():
        return None
    try:
        loaded = json.loads(res.stdout)
    except ValueError:
        return None
    return loaded if isinstance(loaded, dict) else None


async def node_version(host: HostContext) -> str | None:
    node = await node_object(host, host.name)
    if not node:
        return None
    info = (node.get("status") or {}).get("nodeInfo", {}) if isinstance(node.get("status"), dict) else {}
    version = info.get("kubeletVersion") if isinstance(info, dict) else None
    return str(version) if version else None


@dataclass(frozen=True)
class RefuseLastControlPlane(Step):
    """Deleting every control-plane node would destroy the cluster; `delete cluster` is the command for that."""

    mutates = False

    def describe(self) -> str:
        return "make sure a control-plane node remains"

    async def run(self, host: HostContext) -> None:
        cps = [h.name for h in host.cluster.hosts_with_role("control-plane")]
        if cps and all(n in leaving(host) for n in cps):
            raise StepFailed(f"deleting {', '.join(cps)} would remove the last control-plane node",
                             hint="keep one, or tear the whole cluster down with "
                                  f"`{kubexm_command(host, 'delete', 'cluster')}`")


@dataclass(frozen=True)
class Cordon(Step):
    """Mark the node unschedulable (or schedulable again with ``uncordon``)."""

    uncordon: bool = False

    def describe(self) -> str:
        return "uncordon the node" if self.uncordon else "cordon the node"

    async def check(self, host: HostContext) -> bool:
        node = await node_object(host, host.name)
        if node is None:
            return True  # nothing to cordon: the node is not (or no longer) in the cluster
        spec = node.get("spec") or {}
        unschedulable = bool(spec.get("unschedulable")) if isinstance(spec, dict) else False
        return unschedulable != self.uncordon

    async def run(self, host: HostContext) -> None:
        cmd = commands.uncordon(host.name) if self.uncordon else commands.cordon(host.name)
        await operator_host(host).run(cmd)


@dataclass(frozen=True)
class Drain(Step):
    """Evict the node's pods (daemon sets stay), honouring --grace-period, --timeout and --force.

    In an upgrade (``upgrade=True``) a node already on the target version is not drained again.
    """

    upgrade: bool = False

    def describe(self) -> str:
        return "drain the node"

    async def check(self, host: HostContext) -> bool:
        if self.upgrade:
            return await node_version(host) == host.cluster.spec.kubernetes.version
        return await node_object(host, host.name) is None

    async def run(self, host: HostContext) -> None:
        extra = host.run_ctx.options.extra
        cmd = commands.drain(host.name, int(extra.get("grace_period", -1)), int(extra.get("drain_timeout", 300)),
                             bool(extra.get("force_drain", False)))
        await operator_host(host).run(cmd, timeout=float(extra.get("drain_timeout", 300)) + 60)


@dataclass(frozen=True)
class DeleteNodeObject(Step):
    def describe(self) -> str:
        return "delete the Node object"

    async def check(self, host: HostContext) -> bool:
        return await node_object(host, host.name) is None

    async def run(self, host: HostContext) -> None:
        await operator_host(host).run(commands.delete_node(host.name))


@dataclass(frozen=True)
class KubeadmReset(Step):
    """`kubeadm reset` and the cleanup it leaves to the operator; skipped with --skip-cleanup."""

    def describe(self) -> str:
        return "kubeadm reset and clean up the node"

    async def check(self, host: HostContext) -> bool:
        if host.run_ctx.options.extra.get("skip_cleanup"):
            return True
        res = await host.run(shell("test -e {kubelet} || test -e {admin} || test -d /etc/kubernetes/manifests",
                                   kubelet=KUBELET_CONF, admin=ADMIN_CONF, readonly=True), check=False)
        return not res.ok

    async def run(self, host: HostContext) -> None:
        await host.run(commands.reset(cri_socket(host.cluster)), timeout=600, display="kubeadm reset")


@dataclass(frozen=True)
class RestartComponent(Step):
    """Restart one component on this node, then wait for it to be healthy before the next node."""

    component: str

    def describe(self) -> str:
        return f"restart {self.component}"

    async def run(self, host: HostContext) -> None:
        if self.component in STATIC_PODS:
            await host.run(commands.restart_static_pod(self.component), timeout=180)
            if self.component == "kube-apiserver":
                deadline = time.monotonic() + 180
                while not await apiserver_ready(host):
                    if time.monotonic() > deadline:
                        raise StepFailed(f"kube-apiserver on {host.name} did not come back within 180s",
                                         hint="the rolling restart stopped here; other nodes were not touched")
                    await asyncio.sleep(3)
        else:
            unit = f"{self.component}.service"
            await host.run(commands.restart_unit(unit))
            deadline = time.monotonic() + 120
            while not (await host.run(commands.unit_active(unit), check=False)).ok:
                if time.monotonic() > deadline:
                    raise StepFailed(f"{unit} on {host.name} is not active 120s after the restart",
                                     hint=f"journalctl -u {unit} on {host.name}; the other nodes were not touched")
                await asyncio.sleep(2)
        await self._wait_node_ready(host)

    async def _wait_node_ready(self, host: HostContext) -> None:
        if self.component not in ("kubelet", "containerd", "docker", "cri-docker", "crio"):
            return
        deadline = time.monotonic() + 180
        while True:
            node = await node_object(host, host.name)
            conds = ((node or {}).get("status") or {}).get("conditions", []) if node else []
            if any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds if isinstance(c, dict)):
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"node {host.name} is not Ready 180s after restarting {self.component}",
                                 hint="the rolling restart stopped here; other nodes were not touched")
            await asyncio.sleep(3)


@dataclass(frozen=True)
class TeardownNode(Step):
    """`delete cluster`: reset Kubernetes, stop kubexm's etcd and balancers, remove their files; backups stay."""

    def describe(self) -> str:
        return "reset the node (backups under /var/backups/kubexm are kept)"

    async def check(self, host: HostContext) -> bool:
        res = await host.run(shell("test -e /etc/kubernetes || test -e /etc/etcd.env || test -e /etc/kubexm",
                                   readonly=True), check=False)
        return not res.ok

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        teardown = shell(
            "{{ command -v kubeadm >/dev/null && {reset} || true; }} && "
            "{{ systemctl disable --now kubelet 2>/dev/null || true; }} && "
            "{{ systemctl disable --now etcd haproxy keepalived 2>/dev/null || true; }} && "
            "rm -rf -- /etc/kubernetes /etc/etcd.env /etc/etcd.bootstrap.env /etc/systemd/system/etcd.service "
            "{data_dir} /etc/kubexm /etc/haproxy/haproxy.cfg /etc/keepalived/keepalived.conf && "
            "systemctl daemon-reload",
            reset=commands.reset(cri_socket(cluster)), data_dir=cluster.spec.etcd.data_dir)
        await host.run(teardown, timeout=600, display="reset the node")

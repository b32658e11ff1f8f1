"""Upgrade steps: version skew, the per-node plan, kubeadm upgrade apply/node, kubelet on the new version.

The seed's rule, enforced here: one minor version at a time, never down.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.kube import commands
from kubexm.spec.models import Cluster
from kubexm.steps.kubernetes import CONTROL_PLANE_COMPONENTS
from kubexm.steps.nodes import node_version


def parse_version(text: str) -> tuple[int, int, int]:
    major, minor, patch = (int(p) for p in text.lstrip("v").split("+")[0].split("-")[0].split(".")[:3])
    return major, minor, patch


def skew_problem(current: str, target: str) -> str | None:
    """Kubernetes' upgrade rules: no downgrade, one minor at a time."""
    cur, new = parse_version(current), parse_version(target)
    if new < cur:
        return f"{target} is older than the running {current}; kubeadm does not downgrade"
    if new[1] > cur[1] + 1:
        return (f"{current} to {target} skips a minor version; upgrade one minor at a time "
                f"(v{cur[0]}.{cur[1] + 1}.x first)")
    return None


@dataclass(frozen=True)
class CheckUpgradeSkew(Step):
    """Reads the running version from the API server and refuses skipped minors and downgrades."""

    mutates = False

    def describe(self) -> str:
        return "check the version skew of the upgrade"

    async def run(self, host: HostContext) -> None:
        res = await host.run(commands.kubectl("version", "-o", "json", readonly=True), check=False)
        try:
            current = str(json.loads(res.stdout)["serverVersion"]["gitVersion"])
        except (ValueError, KeyError, TypeError):
            raise StepFailed("cannot read the running Kubernetes version from the API server",
                             hint="the control plane must be healthy before an upgrade") from None
        target = host.cluster.spec.kubernetes.version
        problem = skew_problem(current, target)
        if problem:
            raise StepFailed(problem, hint="pass a --to-version one minor above the running one")
        host.run_ctx.shared["upgrade-from"] = current
        host.emit("message", message=f"upgrading {current} -> {target}")


@dataclass(frozen=True)
class KubeadmUpgrade(Step):
    """`kubeadm upgrade apply` on the first control plane, `kubeadm upgrade node` everywhere else."""

    apply: bool = False

    def describe(self) -> str:
        return "kubeadm upgrade apply" if self.apply else "kubeadm upgrade node"

    async def check(self, host: HostContext) -> bool:
        return await node_version(host) == host.cluster.spec.kubernetes.version

    async def run(self, host: HostContext) -> None:
        cmd = commands.upgrade_apply(host.cluster.spec.kubernetes.version) if self.apply else commands.upgrade_node()
        await host.run(cmd, timeout=1200, display=self.describe())


@dataclass(frozen=True)
class RestartKubelet(Step):
    """Restart kubelet on the new binary, then wait until the node reports the target version."""

    timeout: float = 180

    def describe(self) -> str:
        return "restart kubelet and wait for the node's new version"

    async def check(self, host: HostContext) -> bool:
        return await node_version(host) == host.cluster.spec.kubernetes.version

    async def run(self, host: HostContext) -> None:
        await host.run(commands.restart_kubelet())
        deadline = time.monotonic() + self.timeout
        want = host.cluster.spec.kubernetes.version
        while (have := await node_version(host)) != want:
            if time.monotonic() > deadline:
                raise StepFailed(f"{host.name} reports kubelet {have} after {int(self.timeout)}s, wanted {want}",
                                 hint=f"see `journalctl -u kubelet` on {host.name}")
            await asyncio.sleep(3)


PLAN_COLUMNS = ["#", "nodes", "component", "from", "to", "how"]


def upgrade_plan(cluster: Cluster, node_concurrency: int, current: str | None = None, control_plane: bool = True,
                 workers: bool = True) -> list[list[str]]:
    """The ordered plan `upgrade cluster --plan` prints: one row per component and step, control planes one by
    one, then worker batches. ``current``: the version running now (None: read from the API server later)."""
    cps = [h.name for h in cluster.hosts_with_role("control-plane")]
    workers_ = [h.name for h in cluster.hosts_with_role("worker") if h.name not in cps]
    to = cluster.spec.kubernetes.version
    was = current or "running version"
    kubeadms = (f"kubeadm's for {current}" if current else "kubeadm's current", f"kubeadm's for {to}")
    rows: list[list[str]] = []
    step = 0
    if control_plane:
        for i, name in enumerate(cps):
            step += 1
            n = str(step)
            verb = f"kubeadm upgrade apply {to}" if i == 0 else "kubeadm upgrade node"
            rows.append([n, name, "kubeadm", was, to, "install the binary"])
            rows += [[n, name, c, was, to, verb] for c in CONTROL_PLANE_COMPONENTS]
            if cluster.spec.etcd.type == "kubeadm":
                rows.append([n, name, "etcd (stacked)", *kubeadms, verb])
            if i == 0:
                if not (cluster.spec.network.plugin == "cilium" and cluster.spec.network.cilium.kube_proxy_replacement):
                    rows.append([n, "(cluster)", "kube-proxy", was, to, verb])
                rows.append([n, "(cluster)", "CoreDNS", *kubeadms, verb])
            rows += [[n, name, c, was, to, "drain, install, restart kubelet, uncordon"] for c in ("kubelet", "kubectl")]
    if workers:
        size = max(1, node_concurrency)
        for i in range(0, len(workers_), size):
            step += 1
            n, batch = str(step), ", ".join(workers_[i:i + size])
            rows.append([n, batch, "kubeadm", was, to, "drain, install the binary, kubeadm upgrade node"])
            rows += [[n, batch, c, was, to, "install, restart kubelet, uncordon"] for c in ("kubelet", "kubectl")]
    return rows


def plan_upgrade(host: HostContext) -> list[Step]:
    """The steps of the PlanUpgrade task: none. The plan is computed and reported here, before anything runs,
    so `--plan` (an offline run, where no step runs) prints it too; a skipped minor or a downgrade from the
    version the cluster file records (``from_version``) is refused before the first node is touched."""
    extra = host.run_ctx.options.extra
    cluster = host.cluster
    current = extra.get("from_version")
    target = cluster.spec.kubernetes.version
    if current:
        problem = skew_problem(str(current), target)
        if problem:
            raise StepFailed(problem, hint="pass a --to-version one minor above the running one")
    rows = upgrade_plan(cluster, int(extra.get("node_concurrency", 1)), str(current) if current else None,
                        not extra.get("workers_only"), not extra.get("control_plane_only"))
    host.run_ctx.emit_report(f"Upgrade plan: {current or 'running version'} -> {target}", PLAN_COLUMNS, rows)
    return []

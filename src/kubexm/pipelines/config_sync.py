"""`kubexm config sync` / `config diff`: the spec's settings applied to a running cluster, one node at a time.

Reuses the idempotent steps of `create cluster` (kernel modules, sysctl, the runtime's config and restart, the
kubelet unit and configuration, etcd's env file and unit) per node, with a health gate after each node; then addon values and
node labels from the first control-plane node. `config diff` is the same pipeline as a connected dry run:
each step that would change records a unified diff of its files against the node's copies (secrets masked)
in ``run.shared["config-diff"]``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubexm.engine import SERIAL, HostContext, Module, Pipeline, Step, Task, all_hosts, first, role
from kubexm.errors import NotApplicable, StepFailed
from kubexm.governance.impact import Masker, text_change
from kubexm.kube import commands
from kubexm.kube.kubeadm import ADMIN_CONF, dump_go_yaml, kubelet_configuration
from kubexm.modules.runtime import InstallContainerd, InstallCrio, InstallDocker
from kubexm.spec.fields import parse_taint
from kubexm.spec.models import Cluster
from kubexm.steps.addons import ApplyAddon, addon_path, all_addons
from kubexm.steps.binaries import BIN
from kubexm.steps.common import PutFile, Systemd, Template
from kubexm.steps.etcd import EtcdService, env_file, env_values, unit_file
from kubexm.steps.kubernetes import KUBELET_DROPIN, KUBELET_UNIT, KubeletUnit
from kubexm.steps.os import (
    MODULES_FILE,
    SYSCTL_FILE,
    KernelModules,
    Sysctl,
    live_sysctl_probe,
    modules_text,
    parse_live_sysctl,
    same_sysctl_value,
    sysctl_text,
    wanted_modules,
    wanted_sysctl,
)
from kubexm.steps.rollback import NodeHealthy
from kubexm.steps.runtime import ConfigFiles

DIFF_KEY = "config-diff"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
_RUNTIME_TASKS = {"containerd": InstallContainerd, "docker": InstallDocker, "crio": InstallCrio}
# Where each runtime's daemon is once its packages are installed (Debian and RHEL families alike).
_RUNTIME_BINARIES = {"containerd": "/usr/bin/containerd", "docker": "/usr/bin/dockerd", "crio": "/usr/bin/crio"}


# -- what a step wants on a node, as file contents ------------------------------------------------------
def wanted_files(step: Step, host: HostContext) -> dict[str, bytes]:
    """{remote path: content} a file-placing step keeps on ``host``: what `config diff` compares with the node's
    copies. Empty for steps that place no file (units, probes)."""
    cluster = host.cluster
    if isinstance(step, Synced):
        return wanted_files(step.inner, host)
    if isinstance(step, ConfigFiles):
        return {path: text.encode() for path, (text, _) in step.files(cluster).items()}
    if isinstance(step, Template):
        return {step.dest: step.content(host)}
    if isinstance(step, PutFile):
        return {step.dest: step.source if isinstance(step.source, bytes) else Path(step.source).read_bytes()}
    if isinstance(step, Sysctl):
        return {SYSCTL_FILE: sysctl_text(wanted_sysctl(cluster)).encode()}
    if isinstance(step, KernelModules):
        return {MODULES_FILE: modules_text(wanted_modules(cluster)).encode()}
    if isinstance(step, ApplyAddon):
        release = step.release(host)
        return {addon_path(step.addon, ".yaml"): release.manifest.encode()} if release.manifest is not None else {}
    return {}


async def describe_change(step: Step, host: HostContext) -> list[dict[str, str]]:
    """What ``step`` would change on ``host``, read-only: a unified diff per file that differs, plus the
    settings no file shows (sysctl values live in the kernel, node labels in the API)."""
    masker = Masker.for_clusters(host.cluster)
    inner = step.inner if isinstance(step, Synced) else step
    out: list[dict[str, str]] = []
    for path, data in wanted_files(inner, host).items():
        have = await host.read_text(path)
        want = data.decode(errors="replace")
        if have != want:
            diff, note = text_change(masker, path, have, want, exists=have is not None, label="spec")
            out.append({"path": path, "diff": diff, "note": note} if note else {"path": path, "diff": diff})
    if isinstance(inner, KubeletConfig):
        current = await inner.current(host)
        if current is not None:
            # Both sides in one formatting, so only what the spec changes shows (not kubeadm's layout).
            have, want = dump_go_yaml([current]), dump_go_yaml([inner.merged(current, host.cluster)])
            if have != want:
                diff, note = text_change(masker, KUBELET_CONFIG, have, want, exists=True, label="spec")
                out.append({"path": KUBELET_CONFIG, "diff": diff, "note": note})
    if isinstance(inner, Sysctl):
        values = wanted_sysctl(host.cluster)
        live = parse_live_sysctl((await host.run(live_sysctl_probe(list(values)), check=False)).stdout)
        # Keys this node cannot write (a container's, or absent from its kernel) are not the sync's to change.
        writable = await inner._writable(host, values)
        for key, value in sorted(values.items()):
            now = live.get(key)
            if key in writable and now is not None and not same_sysctl_value(now, value):
                out.append({"path": f"sysctl {key}", "diff": f"-{key} = {now}\n+{key} = {value}\n"})
    if isinstance(inner, NodeLabels):
        for node, (labelled, wanted) in sorted((await inner.differences(host)).items()):
            lines = [f"-{k}={v}" for k, v in sorted(labelled.items()) if wanted.get(k) != v]
            lines += [f"+{k}={v}" for k, v in sorted(wanted.items()) if labelled.get(k) != v]
            out.append({"path": f"node/{node} labels", "diff": "\n".join(lines) + "\n"})
    if isinstance(inner, NodeTaints):
        for node, (tainted, wanted_taints) in sorted((await inner.differences(host)).items()):
            lines = [f"-{t}" for t in tainted if t not in wanted_taints] + [f"+{t}" for t in wanted_taints if t not in tainted]
            out.append({"path": f"node/{node} taints", "diff": "\n".join(lines) + "\n"})
    if not out:
        out.append({"path": "", "diff": "", "note": inner.describe()})
    return out


# -- steps ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Synced(Step):
    """An existing step, applied only where its component is installed (``present``: a path on the node), and
    in a dry run recording what it would change (see describe_change)."""

    inner: Step
    present: str | None = None
    what: str = ""

    @property
    def name(self) -> str:
        return self.inner.name

    def describe(self) -> str:
        return self.inner.describe()

    async def _applies(self, host: HostContext) -> None:
        if self.present and not await host.exists(self.present):
            raise NotApplicable(f"no {self.what or self.present} on {host.name}: nothing to sync there")

    async def check(self, host: HostContext) -> bool:
        await self._applies(host)
        done = await self.inner.check(host)
        if not done and isinstance(self.inner, KernelModules) and (await host.facts()).is_container:
            # A container cannot load modules (its host's kernel does): what it can keep is the list for boot.
            want = modules_text(wanted_modules(host.cluster))
            if await host.read_text(MODULES_FILE) == want:
                raise NotApplicable(f"{MODULES_FILE} is as the spec says; a container cannot load kernel modules")
        if not done and host.run_ctx.options.dry_run:
            diffs = host.run_ctx.shared.setdefault(DIFF_KEY, {}).setdefault(host.name, [])
            for change in await describe_change(self.inner, host):
                diffs.append({"step": self.inner.name, **change})
        return done

    async def run(self, host: HostContext) -> None:
        await self._applies(host)
        await self.inner.run(host)


@dataclass(frozen=True)
class NodeLabels(Step):
    """spec.hosts[].labels (and the worker role label) on the Node objects, from a control-plane node. Labels
    the spec does not name are left alone: kubexm cannot tell them from labels others set."""

    nodes: tuple[str, ...] = field(default=())

    def describe(self) -> str:
        return "label nodes as the cluster file says"

    def wanted(self, cluster: Cluster) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for host in cluster.spec.hosts:
            roles = cluster.roles_of(host.name)
            if not {"control-plane", "worker"} & set(roles):
                continue
            labels = {str(k): str(v) for k, v in host.labels.items()}
            if host.name in cluster.spec.role_groups.worker:
                labels.setdefault("node-role.kubernetes.io/worker", "")
            if labels:
                out[host.name] = labels
        return out

    async def differences(self, host: HostContext) -> dict[str, tuple[dict[str, str], dict[str, str]]]:
        res = await host.run(commands.kubectl_get("nodes", "-o", "json"), check=False)
        if not res.ok:
            raise StepFailed("cannot read the Node objects from the API server",
                             hint=f"the control plane on {host.name} must answer `kubectl get nodes`")
        try:
            have = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in json.loads(res.stdout)["items"]}
        except (ValueError, KeyError, TypeError):
            raise StepFailed("the API server's node list is unreadable", hint="run the command again") from None
        out = {}
        for node, labels in self.wanted(host.cluster).items():
            if node not in have:
                continue  # not joined (yet): `add nodes` labels it
            now = {k: str(have[node].get(k)) for k in labels if k in have[node]}
            if now != labels:
                out[node] = (now, labels)
        return out

    async def check(self, host: HostContext) -> bool:
        return not await self.differences(host)

    async def run(self, host: HostContext) -> None:
        for node, (_, labels) in (await self.differences(host)).items():
            await host.run(commands.label_node(node, labels))


@dataclass(frozen=True)
class NodeTaints(Step):
    """spec.hosts[].taints on the Node objects, from a control-plane node: a taint the spec names is added, or
    its value and effect replaced. Taints the spec does not name are left alone (the control plane's own, and
    those others set)."""

    def describe(self) -> str:
        return "taint nodes as the cluster file says"

    @staticmethod
    def wanted(cluster: Cluster) -> dict[str, list[str]]:
        return {h.name: list(h.taints) for h in cluster.spec.hosts
                if h.taints and {"control-plane", "worker"} & set(cluster.roles_of(h.name))}

    async def differences(self, host: HostContext) -> dict[str, tuple[list[str], list[str]]]:
        """{node: (its taints of the keys the spec names, the spec's taints for it)} where they differ."""
        wanted = self.wanted(host.cluster)
        if not wanted:
            return {}
        res = await host.run(commands.kubectl_get("nodes", "-o", "json"), check=False)
        if not res.ok:
            raise StepFailed("cannot read the Node objects from the API server",
                             hint=f"the control plane on {host.name} must answer `kubectl get nodes`")
        try:
            have = {n["metadata"]["name"]: n.get("spec", {}).get("taints", []) for n in json.loads(res.stdout)["items"]}
        except (ValueError, KeyError, TypeError, AttributeError):
            raise StepFailed("the API server's node list is unreadable", hint="run the command again") from None
        out = {}
        for node, taints in wanted.items():
            if node not in have:
                continue  # not joined (yet): kubeadm sets them when it joins
            keys = {parse_taint(t)["key"] for t in taints}
            now = sorted(_taint_text(t) for t in have[node] if t.get("key") in keys)
            if now != sorted(taints):
                out[node] = (now, sorted(taints))
        return out

    async def check(self, host: HostContext) -> bool:
        return not await self.differences(host)

    async def run(self, host: HostContext) -> None:
        for node, (_, taints) in (await self.differences(host)).items():
            await host.run(commands.taint_node(node, taints))


def _taint_text(taint: dict[str, str]) -> str:
    value = taint.get("value")
    return f"{taint.get('key')}{'=' + value if value else ''}:{taint.get('effect')}"


@dataclass(frozen=True)
class KubeletConfig(Step):
    """kubexm's KubeletConfiguration fields (cgroup driver, cluster DNS, max pods, eviction, reserved resources,
    feature gates) in the node's /var/lib/kubelet/config.yaml; every other field kubeadm wrote stays as it is."""

    def describe(self) -> str:
        return f"kubelet configuration in {KUBELET_CONFIG}"

    @staticmethod
    def merged(current: dict[str, Any], cluster: Cluster) -> dict[str, Any]:
        # A field kubexm sets is kubexm's as a whole (evictionHard replaces kubelet's defaults as a whole too).
        return {**current, **kubelet_configuration(cluster)}

    async def current(self, host: HostContext) -> dict[str, Any] | None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        text = await host.read_text(KUBELET_CONFIG)
        if text is None:
            return None
        try:
            data = YAML(typ="safe").load(text)
        except YAMLError:
            raise StepFailed(f"{KUBELET_CONFIG} on {host.name} is not YAML",
                             hint="restore it with `kubeadm upgrade node phase kubelet-config` on the node") from None
        return data if isinstance(data, dict) else None

    async def check(self, host: HostContext) -> bool:
        current = await self.current(host)
        if current is None:
            raise NotApplicable(f"no {KUBELET_CONFIG} on {host.name}: kubelet has not joined yet")
        return self.merged(current, host.cluster) == current

    async def run(self, host: HostContext) -> None:
        current = await self.current(host)
        if current is None:
            raise NotApplicable(f"no {KUBELET_CONFIG} on {host.name}: kubelet has not joined yet")
        data = dump_go_yaml([self.merged(current, host.cluster)]).encode()
        if await host.upload(data, KUBELET_CONFIG, mode=0o644):
            host.vars.setdefault("changed_files", set()).add(KUBELET_CONFIG)


def _etcd_restart() -> EtcdService:
    # A running cluster keeps its quorum while one member restarts: wait for it to be ready, unlike a new
    # cluster's first start (EtcdService's default).
    return EtcdService(no_block=False)


def node_steps(host: HostContext) -> list[Step]:
    """The settings of one node, in the order `create cluster` applies them, then the health gate."""
    cluster = host.cluster
    steps: list[Step] = [Synced(KernelModules()), Synced(Sysctl())]
    runtime = cluster.spec.container_runtime.type
    for step in _RUNTIME_TASKS[runtime].steps_for(host):
        if isinstance(step, ConfigFiles | Systemd):
            # Only where the runtime is installed: `config sync` changes settings, `create`/`add` installs.
            steps.append(Synced(step, present=_RUNTIME_BINARIES[runtime], what=runtime))
    roles = set(host.roles)
    if roles & {"control-plane", "worker"} and cluster.spec.kubernetes.deploy_mode == "kubeadm":
        steps += [Synced(KubeletUnit(), present=f"{BIN}/kubelet", what="kubelet"),
                  Synced(KubeletConfig(), present=f"{BIN}/kubelet", what="kubelet"),
                  Synced(Systemd("kubelet", restart_on=(KUBELET_UNIT, KUBELET_DROPIN, KUBELET_CONFIG)),
                         present=f"{BIN}/kubelet", what="kubelet")]
    if "etcd" in roles and cluster.spec.etcd.type == "kubexm":
        values = env_values(host)
        steps += [Synced(env_file(values), present=f"{BIN}/etcd", what="etcd"),
                  Synced(unit_file(values), present=f"{BIN}/etcd", what="etcd"),
                  Synced(_etcd_restart(), present=f"{BIN}/etcd", what="etcd")]
    return [*steps, NodeHealthy()]


def _addon_steps(host: HostContext) -> list[Step]:
    return [Synced(ApplyAddon(r.name), present=ADMIN_CONF, what="Kubernetes API") for r in all_addons(host.cluster)]


def _kubeadm(cluster: Cluster) -> bool:
    return cluster.spec.kubernetes.deploy_mode == "kubeadm"


TAGS = frozenset({"config"})
SyncNodeSettings = Task(
    "SyncNodeSettings", steps=node_steps, hosts=all_hosts(), tags=TAGS | {"os", "runtime", "kubelet", "etcd"},
    strategy=SERIAL,
    description="kernel modules, sysctl, runtime config, kubelet unit, etcd flags; one node at a time, health gated",
)
SyncAddonValues = Task(
    "SyncAddonValues", steps=_addon_steps, hosts=first(role("control-plane")), tags=TAGS | {"addons"},
    when=_kubeadm, description="addon manifests and chart values from the first control-plane node",
)
SyncNodeLabels = Task(
    "SyncNodeLabels", steps=[Synced(NodeLabels(), present=ADMIN_CONF, what="Kubernetes API"),
                             Synced(NodeTaints(), present=ADMIN_CONF, what="Kubernetes API")],
    hosts=first(role("control-plane")), tags=TAGS | {"labels", "taints"}, when=_kubeadm,
    description="spec.hosts[].labels and taints on the Node objects (kubectl on the first control-plane node)",
)

ConfigSyncModule = Module("ConfigSyncModule", [SyncNodeSettings, SyncAddonValues, SyncNodeLabels], tags=TAGS,
                          description="apply the cluster file's settings to a running cluster")
CONFIG_SYNC = Pipeline("ConfigSyncPipeline", [ConfigSyncModule],
                       description="apply changed settings node by node with a health check between nodes")


def diff_rows(shared: dict[str, object]) -> dict[str, list[dict[str, str]]]:
    """{node: [{step, path, diff}]} a `config diff` run recorded, nodes in the order they were checked."""
    found = shared.get(DIFF_KEY)
    return found if isinstance(found, dict) else {}


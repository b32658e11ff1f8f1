"""Kubernetes on hosts: binaries and kubelet, kubexm's PKI in kubeadm's layout, init, join, health, kubeconfig.

kubeadm does the bootstrapping; kubexm decides everything it is told (configuration files, certificates,
tokens) and checks the result. Tokens exist only in 0600 files and expire within the hour.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import posixpath
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kubexm.engine.context import FileWant, HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, NotApplicable, StepFailed
from kubexm.hosts.shell import sh, shell
from kubexm.kube import commands
from kubexm.kube.kubeadm import (
    ADMIN_CONF,
    INIT_CONFIG,
    JOIN_CONFIG,
    KUBELET_CONF,
    PKI_DIR,
    TOKEN_CONFIG,
    ca_cert_hash,
    cri_socket,
    init_config,
    join_config,
    new_token,
    quote_strings,
    token_config,
)
from kubexm.pki.layout import etcd_specs, kubeconfig_specs, kubernetes_specs
from kubexm.spec.models import Cluster
from kubexm.steps.common import kubexm_command
from kubexm.steps.etcd import cluster_pki, data_dir
from kubexm.steps.runtime import ConfigFiles
from kubexm.templates import render

KUBELET_UNIT = "/etc/systemd/system/kubelet.service"
KUBELET_DROPIN = "/etc/systemd/system/kubelet.service.d/10-kubeadm.conf"
RUNTIME_UNITS = {"containerd": "containerd.service", "docker": "cri-docker.service", "crio": "crio.service"}


def first_control_plane(cluster: Cluster) -> str:
    return cluster.hosts_with_role("control-plane")[0].name


def endpoint(cluster: Cluster) -> str:
    """host:port of the API every node and kubeconfig uses (decided by the HA endpoint plan)."""
    from kubexm.balancer.plan import control_plane_endpoint

    return control_plane_endpoint(cluster)


@dataclass(frozen=True)
class KubeletUnit(ConfigFiles):
    """kubelet's systemd unit and kubeadm's drop-in; kubelet is enabled, kubeadm starts it."""

    def describe(self) -> str:
        return "write the kubelet unit and its kubeadm drop-in"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        unit = render("kubelet/kubelet.service.j2", runtime_unit=RUNTIME_UNITS[cluster.spec.container_runtime.type])
        # 0600: CIS Kubernetes Benchmark 4.1.1 (`kubexm scan cis`); only systemd (root) reads them.
        return {KUBELET_UNIT: (unit, 0o600), KUBELET_DROPIN: (render("kubelet/10-kubeadm.conf.j2"), 0o600)}

    async def check(self, host: HostContext) -> bool:
        return await super().check(host) and \
            (await host.run(sh("systemctl", "is-enabled", "-q", "kubelet", readonly=True), check=False)).ok

    async def run(self, host: HostContext) -> None:
        await super().run(host)
        await host.run(sh("systemctl", "daemon-reload") & sh("systemctl", "enable", "kubelet"))


def control_plane_files(cluster: Cluster) -> list[tuple[str, str, int]]:
    """(file in kubexm's PKI, path on a control-plane node, mode): kubeadm reuses what it finds there."""
    out = []
    for spec in kubernetes_specs(cluster):
        out += [(f"{spec.path}.crt", f"{PKI_DIR}/{spec.path}.crt", 0o644),
                (f"{spec.path}.key", f"{PKI_DIR}/{spec.path}.key", 0o600)]
    out += [("sa.key", f"{PKI_DIR}/sa.key", 0o600), ("sa.pub", f"{PKI_DIR}/sa.pub", 0o644),
            ("etcd/ca.crt", f"{PKI_DIR}/etcd/ca.crt", 0o644)]
    if cluster.spec.etcd.type == "kubeadm":
        # Stacked etcd: kubeadm issues the member certificates from this CA on each control-plane node.
        out.append(("etcd/ca.key", f"{PKI_DIR}/etcd/ca.key", 0o600))
    elif cluster.spec.etcd.type == "kubexm":
        out += [("apiserver-etcd-client.crt", f"{PKI_DIR}/apiserver-etcd-client.crt", 0o644),
                ("apiserver-etcd-client.key", f"{PKI_DIR}/apiserver-etcd-client.key", 0o600)]
    return out


@dataclass(frozen=True)
class EnsureKubernetesPKI(Step):
    """The cluster CA, apiserver, front-proxy and service-account keys on the deploy machine (CAs reused)."""

    def describe(self) -> str:
        return "generate Kubernetes certificates (reuse the CAs)"

    def _specs(self, cluster: Cluster) -> list[Any]:
        specs = list(kubernetes_specs(cluster))
        if cluster.spec.etcd.type != "external":
            specs += [s for s in etcd_specs(cluster) if s.path in ("etcd/ca", "apiserver-etcd-client")]
        return specs

    async def check(self, host: HostContext) -> bool:
        pki = cluster_pki(host.cluster)
        try:
            return not pki.pending(self._specs(host.cluster)) and pki.key("sa").is_file()
        except OSError:  # a leaf without its CA, say: ensure() decides (and says what is wrong)
            return False

    async def run(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        changes = pki.ensure(self._specs(host.cluster))
        sa = pki.ensure_service_account_key()
        host.emit("message", message="; ".join(f"{c.path}: {c.reason}" for c in [*changes, *([sa] if sa else [])]))


@dataclass(frozen=True)
class PlaceKubernetesCerts(Step):
    """Certificates and keys in /etc/kubernetes/pki, so `kubeadm init/join --control-plane` uses kubexm's."""

    def describe(self) -> str:
        return f"place control-plane certificates in {PKI_DIR}"

    def _files(self, host: HostContext) -> list[tuple[bytes, str, int]]:
        pki = cluster_pki(host.cluster)
        return [((pki.root / local).read_bytes(), remote, mode)
                for local, remote, mode in control_plane_files(host.cluster)]

    def check_files(self, host: HostContext) -> dict[str, FileWant] | None:
        try:
            files = self._files(host)
        except OSError:
            # The certificates are generated by an earlier step of this run (not at all in a dry run): they
            # would be placed, so the answer is "would change", never an error.
            return None
        return {remote: FileWant(hashlib.sha256(data).hexdigest(), mode) for data, remote, mode in files}

    async def run(self, host: HostContext) -> None:
        await host.run(sh("mkdir", "-p", f"{PKI_DIR}/etcd") & sh("chmod", "0755", PKI_DIR))
        for data, remote, mode in self._files(host):
            if await host.upload(data, remote, mode=mode):
                host.vars.setdefault("changed_files", set()).add(remote)


async def apiserver_ready(host: HostContext) -> bool:
    res = await host.run(commands.apiserver_readyz(), check=False)
    return res.ok and res.stdout.strip() == "ok"


@dataclass(frozen=True)
class KubeadmInit(Step):
    """`kubeadm init` on the first control-plane node, with a bootstrap token the later joins use."""

    retryable = False  # after a transport fault the first kubeadm init may still be running

    def describe(self) -> str:
        return "kubeadm init (first control-plane node)"

    async def check(self, host: HostContext) -> bool:
        return await apiserver_ready(host)

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        if await host.exists(ADMIN_CONF):
            raise StepFailed(f"{host.name} has {ADMIN_CONF} but the API server does not answer",
                             hint="look at `crictl ps -a` and `journalctl -u kubelet` there; kubexm does not re-run "
                                  "kubeadm init over an existing control plane "
                                  f"(`{kubexm_command(host, 'delete', 'cluster')}` resets it)")
        token = new_token()
        await host.upload(init_config(cluster, cluster.host(host.name), token, endpoint(cluster)).encode(),
                          INIT_CONFIG, mode=0o600)
        try:
            await host.run(commands.kubeadm_init(), timeout=900, display="kubeadm init")
        finally:
            # The file holds the token; kubeadm keeps its own copy of the configuration in the cluster.
            await host.run(commands.remove(INIT_CONFIG), check=False)
        host.run_ctx.shared["join-token"] = token
        await wait_apiserver(host, timeout=300)


async def wait_apiserver(host: HostContext, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await apiserver_ready(host):
        if time.monotonic() > deadline:
            raise StepFailed(f"the API server on {host.name} is not ready after {int(timeout)}s",
                             hint="check `crictl ps -a` and `journalctl -u kubelet` on that node")
        await asyncio.sleep(3)


async def join_token(host: HostContext) -> str:
    """The run's bootstrap token: the one `kubeadm init` created, or a new one on the first control plane."""
    shared = host.run_ctx.shared
    lock = shared.setdefault("join-token-lock", asyncio.Lock())
    async with lock:
        if "join-token" not in shared:
            first = host.run_ctx.host(first_control_plane(host.cluster))
            token = new_token()
            await first.upload(token_config(host.cluster, token).encode(), TOKEN_CONFIG, mode=0o600)
            try:
                await first.run(commands.token_create(), display="kubeadm token create")
            finally:
                await first.run(commands.remove(TOKEN_CONFIG), check=False)
            shared["join-token"] = token
        found: str = shared["join-token"]
        return found


MANIFESTS_DIR = "/etc/kubernetes/manifests"
# What a finished `kubeadm join` leaves on every node: the kubelet's kubeconfig (written once its TLS bootstrap
# succeeded), its configuration, and the client certificate it was issued.
WORKER_JOIN_FILES = (KUBELET_CONF, "/var/lib/kubelet/config.yaml", "/var/lib/kubelet/pki/kubelet-client-current.pem")
CONTROL_PLANE_COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def join_leaves(cluster: Cluster, control_plane: bool) -> tuple[str, ...]:
    """The paths a successful join leaves on a node. A control plane also has admin.conf and the static pod
    manifests; with stacked etcd the etcd manifest (kubeadm writes it after adding the member) and the member's
    data, which etcd creates once it joined the cluster."""
    paths = list(WORKER_JOIN_FILES)
    if control_plane:
        paths += [ADMIN_CONF, *(posixpath.join(MANIFESTS_DIR, f"{c}.yaml") for c in CONTROL_PLANE_COMPONENTS)]
        if cluster.spec.etcd.type == "kubeadm":
            paths += [posixpath.join(MANIFESTS_DIR, "etcd.yaml"), posixpath.join(data_dir(cluster), "member")]
    return tuple(paths)


@dataclass(frozen=True)
class JoinState:
    present: tuple[str, ...]
    missing: tuple[str, ...]
    kubelet_active: bool

    @property
    def done(self) -> bool:
        return not self.missing and self.kubelet_active

    @property
    def partial(self) -> bool:
        return bool(self.present and self.missing)


async def join_state(host: HostContext, control_plane: bool) -> JoinState:
    """Which of a join's traces the node has, and whether kubelet runs, in one read-only command."""
    paths = join_leaves(host.cluster, control_plane)
    probe = shell("for f in {paths}; do if test -s \"$f\" || test -d \"$f\"; then printf '%s\\n' \"$f\"; fi; done; "
                  "if systemctl is-active -q kubelet; then echo kubelet-active; fi", paths=paths, readonly=True)
    res = await host.run(probe, check=False)
    lines = set(res.stdout.splitlines())
    return JoinState(tuple(p for p in paths if p in lines), tuple(p for p in paths if p not in lines),
                     "kubelet-active" in lines)


def reset_hint(host: HostContext) -> str:
    reset = kubexm_command(host, "run", "command", "--nodes", host.name, "--",
                           "kubeadm", "reset", "--force", "--cri-socket", cri_socket(host.cluster))
    return f"reset that node, then run again: {reset}"


@dataclass(frozen=True)
class KubeadmJoin(Step):
    """`kubeadm join` (with --control-plane settings for control-plane nodes) from a 0600 config file.

    Done when the node has everything a join leaves (``join_leaves``) and kubelet runs. A node with only part
    of it is a join that failed after it started (kubelet up, TLS bootstrap or the control-plane phases not
    finished): `kubeadm join` cannot run over it (its preflight finds kubelet's port and files taken), so the
    check reports it and the run stops, naming the node to reset. kubexm does not reset it by itself: a
    control-plane node missing only, say, admin.conf may be a working member of the control plane (and of
    stacked etcd), and `kubeadm reset` there removes its etcd member and certificates; only the user can
    tell a broken join from a damaged but serving node.
    """

    control_plane: bool = False
    retryable = False  # after a transport fault the first kubeadm join may still be running

    def describe(self) -> str:
        return "kubeadm join --control-plane" if self.control_plane else "kubeadm join (worker)"

    def _half_joined(self, host: HostContext, state: JoinState) -> StepFailed:
        return StepFailed(f"{host.name} holds a kubeadm join that stopped half way: {', '.join(state.missing)} "
                          "missing", hint=reset_hint(host))

    async def check(self, host: HostContext) -> bool:
        state = await join_state(host, self.control_plane)
        if state.done or not state.present:
            return state.done
        if state.partial:
            raise self._half_joined(host, state)  # "would change", and why, in a plan
        raise StepFailed(f"{host.name} has joined, but kubelet is not running")

    async def run(self, host: HostContext) -> None:
        state = await join_state(host, self.control_plane)
        if state.partial:
            raise self._half_joined(host, state)
        if state.present:  # joined, kubelet stopped
            await host.run(sh("systemctl", "start", "kubelet"))
            return
        cluster = host.cluster
        token = await join_token(host)
        ca = (cluster_pki(cluster).root / "ca.crt").read_bytes()
        text = join_config(cluster, cluster.host(host.name), token, ca_cert_hash(ca), endpoint(cluster),
                           self.control_plane)
        await host.upload(text.encode(), JOIN_CONFIG, mode=0o600)
        try:
            await host.run(commands.kubeadm_join(), timeout=900, display=self.describe())
        finally:
            await host.run(commands.remove(JOIN_CONFIG), check=False)


@dataclass(frozen=True)
class ExpireJoinToken(Step):
    """Delete the run's bootstrap token once every node joined (it would expire within the hour anyway)."""

    def describe(self) -> str:
        return "delete the bootstrap token"

    async def check(self, host: HostContext) -> bool:
        return "join-token" not in host.run_ctx.shared

    async def run(self, host: HostContext) -> None:
        token = host.run_ctx.shared.pop("join-token")
        await host.run(commands.token_delete(token), check=False)


@dataclass(frozen=True)
class LabelNodes(Step):
    """Role labels kubeadm does not set (workers), from the cluster file's role groups."""

    def describe(self) -> str:
        return "label nodes with their roles"

    def _labels(self, cluster: Cluster) -> dict[str, dict[str, str]]:
        return {name: {"node-role.kubernetes.io/worker": ""} for name in cluster.spec.role_groups.worker}

    async def check(self, host: HostContext) -> bool:
        res = await host.run(commands.kubectl_get("nodes", "-o", "json"), check=False)
        if not res.ok:
            return False  # no API server yet (a dry run of a new cluster): the labels would be set
        try:
            have = {n["metadata"]["name"]: n["metadata"].get("labels", {}) for n in json.loads(res.stdout)["items"]}
        except (ValueError, KeyError, TypeError):
            return False
        return all(k in have.get(node, {}) for node, labels in self._labels(host.cluster).items() for k in labels)

    async def run(self, host: HostContext) -> None:
        for node, labels in self._labels(host.cluster).items():
            await host.run(commands.label_node(node, labels))


def not_ready(nodes_json: str, wanted: list[str]) -> list[str]:
    """Names of wanted nodes that are missing or whose Ready condition is not True."""
    ready = set()
    for item in json.loads(nodes_json).get("items", []):
        for cond in item.get("status", {}).get("conditions", []):
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready.add(item["metadata"]["name"])
    return [n for n in wanted if n not in ready]


def unhealthy_components(pods_json: str, control_planes: list[str]) -> list[str]:
    """component@node for each static control-plane pod that is not Ready."""
    seen: dict[str, bool] = {}
    for pod in json.loads(pods_json).get("items", []):
        labels = pod["metadata"].get("labels", {})
        component, node = labels.get("component"), pod.get("spec", {}).get("nodeName")
        ready = any(c.get("type") == "Ready" and c.get("status") == "True"
                    for c in pod.get("status", {}).get("conditions", []))
        seen[f"{component}@{node}"] = ready
    wanted = [f"{c}@{n}" for n in control_planes for c in CONTROL_PLANE_COMPONENTS]
    return [w for w in wanted if not seen.get(w)]


@dataclass(frozen=True)
class WaitClusterHealthy(Step):
    """API server ready, every control-plane component Ready on every control-plane node, nodes Ready."""

    timeout: float = 600
    require_nodes_ready: bool = True

    def describe(self) -> str:
        return "wait for the control plane and nodes to be healthy"

    mutates = False

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        cps = [h.name for h in cluster.hosts_with_role("control-plane")]
        nodes = [h.name for h in cluster.spec.hosts if set(cluster.roles_of(h.name)) & {"control-plane", "worker"}]
        deadline = time.monotonic() + self.timeout
        problems: list[str] = ["the API server is not ready"]
        while time.monotonic() < deadline:
            problems = await self._problems(host, cps, nodes)
            if not problems:
                return
            if host.run_ctx.options.dry_run:
                # Nothing starts the control plane in a dry run: waiting could only end in a failure that
                # says nothing about the plan.
                raise NotApplicable(f"dry run: would wait for the cluster ({', '.join(problems)} yet)")
            await asyncio.sleep(5)
        raise StepFailed(f"cluster not healthy after {int(self.timeout)}s: {', '.join(problems)}",
                         hint="nodes stay NotReady until the network plugin runs; see `kubectl describe node` "
                              "and `journalctl -u kubelet` on the node")

    async def _problems(self, host: HostContext, cps: list[str], nodes: list[str]) -> list[str]:
        if not await apiserver_ready(host):
            return ["the API server is not ready"]
        problems: list[str] = []
        try:
            pods = await host.run(commands.kubectl_get("pods", "-n", "kube-system", "-l", "tier=control-plane",
                                                       "-o", "json"), check=False)
            problems += [f"{c} not Ready" for c in unhealthy_components(pods.stdout or "{}", cps)]
            if self.require_nodes_ready:
                res = await host.run(commands.kubectl_get("nodes", "-o", "json"), check=False)
                problems += [f"node {n} not Ready" for n in not_ready(res.stdout or "{}", nodes)]
        except ValueError:  # half-written JSON from a restarting API server: ask again
            problems.append("the API server answered with unreadable JSON")
        return problems


def kubeconfig_path(cluster: Cluster) -> Path:
    from kubexm import paths

    return paths.home() / "clusters" / cluster.name / "admin.conf"


def merge_kubeconfig(target: Path, new: dict[str, Any], name: str) -> None:
    """Put one cluster/user/context named ``name`` into a kubeconfig, replacing entries of that name only."""
    yaml = YAML()
    doc: dict[str, Any] = {}
    if target.is_file():
        doc = yaml.load(target.read_text()) or {}
    doc.setdefault("apiVersion", "v1")
    doc.setdefault("kind", "Config")
    for key, item in (("clusters", new["clusters"][0]), ("users", new["users"][0]), ("contexts", new["contexts"][0])):
        entries = [e for e in (doc.get(key) or []) if e.get("name") != name]
        entry = dict(item)
        entry["name"] = name
        if key == "contexts":
            entry["context"] = {"cluster": name, "user": name}
        doc[key] = [*entries, quote_strings(entry)]  # kubectl reads YAML 1.1: a name like "no" stays a string
    doc.setdefault("current-context", name)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".kubexm-tmp")
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
        yaml.dump(doc, fh)
    os.replace(tmp, target)


@dataclass(frozen=True)
class WriteAdminKubeconfig(Step):
    """The admin kubeconfig on the deploy machine, and a `kubexm-NAME` context merged into ~/.kube/config."""

    def describe(self) -> str:
        return "write the admin kubeconfig and merge it as a kubexm context"

    def _text(self, cluster: Cluster) -> str:
        spec = kubeconfig_specs(cluster)["admin.conf"]
        return cluster_pki(cluster).kubeconfig(spec, cluster.name, f"https://{endpoint(cluster)}")

    async def check(self, host: HostContext) -> bool:
        path = kubeconfig_path(host.cluster)
        if not path.is_file():
            return False
        spec = kubeconfig_specs(host.cluster)["admin.conf"]
        pki = cluster_pki(host.cluster)
        try:
            # Without the CA (a dry run of a new cluster) or with the client certificate still to issue, the
            # file would be written; _text() would issue it, which a check must never do.
            if not pki.exists(spec.ca) or pki.pending([spec]):
                return False
        except (OSError, KubexmError):
            return False
        return path.read_text() == self._text(host.cluster)

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        text = self._text(cluster)
        path = kubeconfig_path(cluster)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as fh:
            fh.write(text)
        target = Path(os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or Path.home() / ".kube" / "config")
        merge_kubeconfig(target, YAML(typ="safe").load(text), f"kubexm-{cluster.name}")
        host.emit("message", message=f"admin kubeconfig: {path}; context kubexm-{cluster.name} in {target}")

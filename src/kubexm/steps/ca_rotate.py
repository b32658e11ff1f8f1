"""`certs rotate-ca`: the phased CA rotation on the nodes (see kubexm.pki.rotation for the phases and record).

Each phase rolls over the nodes one at a time, in passes by role (etcd members, control planes, workers), with
the same placement and restarts as `certs renew` (kubexm.steps.cert_renew): every file written to a temporary
name and all moved into place with one command, etcd restarted only while quorum holds and waited for, static
pods moved out and back with the node's API server /readyz checked, kubelet restarted.

Per pass, the node's CA files of the rotated CA receive the phase's bundle (etcd's --trusted-ca-file and
--peer-trusted-ca-file, kube-apiserver's --client-ca-file / --etcd-cafile / --requestheader-client-ca-file,
kubelet's clientCAFile), kubeconfigs get it as certificate-authority-data, and in phase 2 every leaf the CA
signs is replaced with the one re-issued from the new CA (and the CA key, where the node keeps one). Then the
components that read them restart. A pass that finished is recorded, so a re-run skips it.
"""

from __future__ import annotations

import base64
import posixpath
from dataclasses import dataclass
from typing import Any

from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.hosts.shell import Cmd, sh
from kubexm.pki import PKI
from kubexm.pki import rotation as rot
from kubexm.pki.certs import cert_pem, key_pem, write_private
from kubexm.pki.inventory import Placed, kubeconfig_cert, node_inventory, rewrite_kubeconfig
from kubexm.pki.layout import CA, kubeconfig_specs
from kubexm.pki.renewal import reissue
from kubexm.steps.cert_renew import (
    MANIFESTS,
    RESTART_ORDER,
    NodeWork,
    RenewNodeCerts,
    etcd_members,
    healthy_members,
    marker_of,
)
from kubexm.steps.certs import reach, read_node
from kubexm.steps.common import RESTART_PENDING_DIR
from kubexm.steps.etcd import cluster_pki

# The passes of each component, in order: etcd members first (etcd trusts before its clients present new
# certificates), then control planes, then workers.
PASSES = {"etcd": ("etcd", "control-plane"), "kubernetes": ("control-plane", "kubelet"), "front-proxy": ("control-plane",)}
ROOT = "root:root"


def restarts_for(component: str, group: str, stacked: bool) -> list[str]:
    """What must restart on a node of ``group`` to read the rotated CA's files, in restart order."""
    if component == "etcd":
        wanted = {"etcd"} if group == "etcd" else {"kube-apiserver", *({"etcd-pod"} if stacked else set())}
    elif component == "front-proxy":
        wanted = {"kube-apiserver"}
    elif group == "control-plane":
        wanted = {"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}
    else:
        wanted = {"kubelet"}
    return [r for r in RESTART_ORDER if r in wanted]


def set_kubeconfig_ca(path: str, bundle: bytes) -> Cmd:
    """certificate-authority-data replaced in place (the client identity is left as it is: its key never
    leaves the node); sed -i writes a new file and renames it over the old one. The key may be quoted (kubexm
    writes YAML 1.1-safe quoted keys); a long value a YAML writer folded onto continuation lines (more
    indented, base64 characters only) loses those lines too, so nothing of the old value is left behind."""
    data = base64.b64encode(bundle).decode()
    script = ("/^[[:space:]]*[\"']\\{0,1\\}certificate-authority-data[\"']\\{0,1\\}:/{\n"
              f"s|^\\([^:]*:\\).*$|\\1 {data}|\n"
              ":more\n$!N\n"
              "s|\\n[[:space:]][[:space:]]*[A-Za-z0-9+/=\"\\\\]*$||\n"
              "tmore\nP\nD\n}")
    return sh("sed", "-i", "-e", script, "--", path)


def component_of(run: RunContext) -> str:
    """The component this run rotates: the record's when one exists, else the one asked for."""
    record = rot.load(cluster_pki(run.cluster))
    if record is not None:
        return record.component
    return str(run.options.extra.get("ca_component", "kubernetes"))


@dataclass
class NodePass:
    """What one pass places on one node."""

    ca_files: list[Placed]
    leaves: list[Placed]
    ca_keys: list[str]
    active: bool


def node_pass(host: HostContext, component: str, group: str, files: dict[str, str], present: frozenset[str]) -> NodePass:
    ca = rot.CA_OF[component].path
    everything = node_inventory(host.cluster, host.name)
    ca_files = [p for p in everything if p.ca is None and p.local == ca and p.path in files]
    leaves = [p for p in everything if p.group == group and p.spec is not None and p.ca == ca
              and p.name in rot.LEAVES[component] and p.path in files]
    keys = [p.key_path for p in ca_files if p.key_path in present]
    active = bool(leaves) or any(p.group == group for p in ca_files)
    return NodePass(ca_files, leaves, keys, active)


@dataclass(frozen=True)
class RotateNodeCA(RenewNodeCerts):
    """One phase of the CA rotation on one node, for the files of one role (a pass)."""

    phase: str = "trust"

    def describe(self) -> str:
        return f"CA rotation, phase {rot.PHASES.index(self.phase) + 1} ({self.phase}) for the {self.group} files: " \
               f"{rot.PHASE_WHAT[self.phase]}; restart what reads them"

    async def check(self, host: HostContext) -> bool:
        record = rot.load(cluster_pki(host.cluster))
        return record is not None and record.is_done(self.phase, host.name, self.group)

    async def run(self, host: HostContext) -> None:
        await reach(host, lambda: self._rotate(host), record="certs_unfinished")

    async def _rotate(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        record = rot.load(pki)
        if record is None or record.is_done(self.phase, host.name, self.group):
            return
        component, ca = record.component, record.ca
        everything = node_inventory(host.cluster, host.name)
        probes = (*(marker_of(r) for r in RESTART_ORDER),
                  *(p.key_path for p in everything if p.ca is None and p.local == ca and p.key_path))
        read = await read_node(host, everything, probes)
        work = node_pass(host, component, self.group, read.files, read.present)
        if not work.active:
            rot.mark_done(pki, self.phase, host.name, self.group)
            return
        stacked = host.cluster.spec.etcd.type == "kubeadm"
        restarts = restarts_for(component, self.group, stacked)
        etcd_before: set[str] = set()
        if "etcd" in restarts or "etcd-pod" in restarts:
            etcd_before = await self._quorum_allows_restart(host, stacked and "etcd-pod" in restarts)
        trusted = rot.bundle(pki, ca, self.phase)
        files: list[tuple[bytes, str, int, str, bool]] = [(trusted, p.path, 0o644, ROOT, False) for p in work.ca_files]
        in_place: list[Cmd] = []
        reissued: list[Placed] = []
        for p in work.leaves:
            if p.kind == "kubeconfig":
                node_cert, _ = kubeconfig_cert(read.files[p.path])
                if self.phase == "reissue" and node_cert is not None and p.local is not None:
                    cert, key = pki.load(p.local)
                    files.append((rewrite_kubeconfig(read.files[p.path], trusted, cert_pem(cert), key_pem(key)),
                                  p.path, 0o600, ROOT, False))
                else:
                    in_place.append(set_kubeconfig_ca(p.path, trusted))
            elif self.phase == "reissue":
                reissued.append(p)
        if self.phase == "reissue":
            files += self._files(host, NodeWork(read, [(p, "re-issued from the new CA") for p in reissued], [], {}))
            files += [(pki.key(ca).read_bytes(), key, 0o600, ROOT, False) for key in work.ca_keys]
        await host.run(sh("mkdir", "-p", "--", RESTART_PENDING_DIR) & sh("touch", "--", *(marker_of(r) for r in restarts)))
        await self._place(host, files)
        for command in in_place:
            await host.run(command)
        for restart in restarts:
            await self._restart(host, restart, etcd_before, stacked)
        if self.group == "control-plane" and "kube-apiserver" not in restarts \
                and await host.exists(posixpath.join(MANIFESTS, "kube-apiserver.yaml")):
            await self._wait_ready(host)
        rot.mark_done(pki, self.phase, host.name, self.group)
        host.emit("message", message=f"{self.phase}: {len(files) + len(in_place)} file(s) placed; restarted "
                                     f"{', '.join(restarts)}")


@dataclass(frozen=True)
class RequireHealthyEtcd(Step):
    """Refuse to start when any etcd member is unhealthy: every phase restarts every member."""

    mutates = False

    def describe(self) -> str:
        return "every etcd member healthy before the CA rotation"

    async def run(self, host: HostContext) -> None:
        stacked = host.cluster.spec.etcd.type == "kubeadm"
        urls = etcd_members(host.run_ctx, stacked)
        up = await healthy_members(host, urls, stacked)
        down = [u for u in urls if u not in up]
        if down:
            raise StepFailed(f"refusing to rotate a CA: etcd is not healthy ({len(urls) - len(down)} of {len(urls)} "
                             f"members healthy; down: {', '.join(down)}), and every phase restarts every member",
                             hint="bring every member back (see `kubexm certs check` and `journalctl -u etcd`), then "
                                  "run this again")


@dataclass(frozen=True)
class BeginCARotation(Step):
    """Phase 1 starts on this machine: the new CA and the record."""

    component: str = "kubernetes"

    def describe(self) -> str:
        return f"make a new {self.component} CA beside the current one and record the rotation"

    async def check(self, host: HostContext) -> bool:
        return rot.load(cluster_pki(host.cluster)) is not None

    async def run(self, host: HostContext) -> None:
        _, change = rot.begin(cluster_pki(host.cluster), self.component)
        host.emit("message", message=f"{change.path}: created" if change else "the new CA of an earlier start is kept")


def _unfinished(run: RunContext) -> dict[str, str]:
    unfinished: dict[str, str] = run.shared.get("certs_unfinished", {})
    return unfinished


def _refuse_unfinished(run: RunContext, before: str) -> None:
    unfinished = _unfinished(run)
    if unfinished:
        nodes = "; ".join(f"{n}: {why}" for n, why in sorted(unfinished.items()))
        raise StepFailed(f"the CA rotation stays in its current phase: {', '.join(sorted(unfinished))} not done "
                         f"({nodes}); {before} needs every node",
                         hint="every other node is done; run the same `kubexm certs rotate-ca` again once these are "
                              "reachable and healthy: it resumes at this phase and node")


def leaf_specs(run: RunContext, component: str) -> list[Any]:
    """Every leaf the rotated CA signs, for every node (one spec per local PKI entry)."""
    ca = rot.CA_OF[component].path
    out: dict[str, Any] = {}
    for h in run.cluster.spec.hosts:
        for p in node_inventory(run.cluster, h.name):
            if p.spec is not None and p.ca == ca and p.name in rot.LEAVES[component]:
                out.setdefault(p.spec.path, p.spec)
    return list(out.values())


@dataclass(frozen=True)
class EnterCAPhase(Step):
    """The record moves to ``phase`` once every node finished the phase before; phase 2 also promotes the new
    CA and re-issues every leaf from it (once per rotation)."""

    phase: str = "reissue"

    def describe(self) -> str:
        return f"CA rotation: enter phase {rot.PHASES.index(self.phase) + 1} ({self.phase})"

    async def check(self, host: HostContext) -> bool:
        record = rot.load(cluster_pki(host.cluster))
        if record is None:
            return False
        return rot.PHASES.index(record.phase) >= rot.PHASES.index(self.phase) \
            and (self.phase != "reissue" or record.reissued)

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        _refuse_unfinished(run, f"phase {self.phase}")
        pki = cluster_pki(host.cluster)
        record = rot.load(pki)
        if record is None:
            raise StepFailed("no CA rotation is recorded", hint="start one with `kubexm certs rotate-ca`")
        if self.phase == "reissue":
            rot.promote(pki, record.ca)
            if not record.reissued:
                record.phase = "reissue"  # the record says so before the leaves change: a crash re-issues again
                rot.save(pki, record)
                changes = reissue(pki, leaf_specs(run, record.component))
                record.reissued = True
                host.emit("message", message=f"re-issued {len(changes)} certificate(s) from the new CA")
            if record.component == "kubernetes":
                _local_admin_trusts_both(host, pki)
        record.phase = self.phase
        rot.save(pki, record)


def _local_admin_trusts_both(host: HostContext, pki: PKI) -> None:
    """This machine's admin kubeconfig, while API servers change over to certificates of the new CA one by one:
    the re-issued admin identity and both CAs (`FinishCARotation` writes the final one)."""
    from kubexm.steps.kubernetes import kubeconfig_path

    path = kubeconfig_path(host.cluster)
    spec = kubeconfig_specs(host.cluster)["admin.conf"]
    if not path.is_file() or not pki.exists(spec.path):
        return
    cert, key = pki.load(spec.path)
    write_private(path, rewrite_kubeconfig(path.read_text(), rot.bundle(pki, CA.path, "reissue"), cert_pem(cert),
                                           key_pem(key)))


@dataclass(frozen=True)
class FinishCARotation(Step):
    """Every node trusts the new CA only: the old CA and the record are removed on this machine."""

    def describe(self) -> str:
        return "close the CA rotation (remove the old CA), or name the nodes still to do"

    async def check(self, host: HostContext) -> bool:
        return rot.load(cluster_pki(host.cluster)) is None

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        _refuse_unfinished(run, "closing the rotation")
        pki = cluster_pki(host.cluster)
        record = rot.load(pki)
        if record is None:
            return
        if record.component == "kubernetes":
            from kubexm.steps.kubernetes import WriteAdminKubeconfig, kubeconfig_path

            if kubeconfig_path(host.cluster).is_file() and not await WriteAdminKubeconfig().check(host):
                await WriteAdminKubeconfig().run(host)
        rot.finish(pki, record.ca)
        host.emit("message", message=f"the {record.component} CA is rotated; the old CA was removed")

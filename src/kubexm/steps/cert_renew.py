"""`certs renew`: re-issue leaves and kubeconfigs from the same CAs, place them atomically, restart what uses them.

Per node, in one step (so an unreachable node is skipped and named while the others go on):
read what the node holds (one read-only command), decide which files differ from the local PKI, mark the
restarts owed (``/var/lib/kubexm/restart-pending``), write each file to a temporary name in its own
directory and move them all into place with one command, then restart:

- etcd (systemd): only while the cluster keeps quorum without this member, then wait until it is healthy
  again with as many healthy members as before;
- static pods (stacked etcd, kube-apiserver, kube-controller-manager, kube-scheduler): the manifest is moved
  out of /etc/kubernetes/manifests, kubexm waits until the component's port is closed (the kubelet stopped the
  pod), and moves it back; then waits until the port listens again. Touching the manifest is not enough: the
  kubelet keys static pods by content, so an unchanged file restarts nothing, and the move needs no crictl;
- kubelet: ``systemctl restart kubelet``.

On control-plane nodes the API server's /readyz on that node must answer ``ok`` before the step ends, and
the nodes go one at a time, so the next node starts only with the previous API server ready. A restart
marker is removed only after its restart succeeded, so a run cut short restarts it next time.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import time
from dataclasses import dataclass
from typing import Any

from cryptography import x509

from kubexm.engine.context import PLANNING, HostContext, RunContext
from kubexm.engine.step import Step
from kubexm.errors import NotApplicable, StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.kube.kubeadm import ADMIN_CONF
from kubexm.pki.certs import cert_pem, key_pem
from kubexm.pki.inventory import (
    CA_NAMES,
    KUBELET_PKI,
    NODE_PKI,
    NodeRead,
    Placed,
    fingerprint,
    first_cert,
    kubeconfig_cert,
    node_inventory,
    resolve_names,
    rewrite_kubeconfig,
)
from kubexm.pki.renewal import check_ca, clear_pending, pending_names, record_pending, reissue
from kubexm.steps.certs import reach, read_node
from kubexm.steps.common import RESTART_PENDING_DIR, Systemd, restart_marker
from kubexm.steps.etcd import cluster_pki, etcdctl, url

MANIFESTS = "/etc/kubernetes/manifests"
# Static pods in the order they restart on a node, with the port that tells whether they run.
STATIC_PODS = (("etcd-pod", "etcd", 2379), ("kube-apiserver", "kube-apiserver", 6443),
               ("kube-controller-manager", "kube-controller-manager", 10257),
               ("kube-scheduler", "kube-scheduler", 10259))
RESTART_ORDER = ("etcd", "etcd-pod", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                 "docker-registry")
GROUP_RESTARTS = {"etcd": {"etcd"}, "kubelet": {"kubelet"}, "registry": {"docker-registry"},
                  "control-plane": {"etcd-pod", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet"}}
SYSTEMD_UNITS = ("etcd", "kubelet", "docker-registry")
STOP_WAIT = 60  # seconds for the kubelet to stop a static pod whose manifest left (it looks every 20s)
START_WAIT = 120
HEALTH_WAIT = 120.0


def selected_names(run: RunContext) -> list[str]:
    wanted = run.options.extra.get("renew", "all")
    return resolve_names([wanted] if isinstance(wanted, str) else list(wanted))


def to_reissue(run: RunContext) -> list[str]:
    """Selected names not yet re-issued by an unfinished renewal (those are only distributed)."""
    pending = pending_names(cluster_pki(run.cluster))
    return [n for n in selected_names(run) if n not in pending]


def marker_of(restart: str) -> str:
    if restart in SYSTEMD_UNITS:
        return restart_marker(restart)
    return restart_marker(f"kubexm-static-pod@{dict((k, c) for k, c, _ in STATIC_PODS)[restart]}")


def _parked(component: str) -> str:
    return f"/etc/kubernetes/{component}.yaml.kubexm-parked"


def restart_static_pod(component: str, port: int, wait: int = STOP_WAIT) -> Cmd:
    """Move the manifest out, wait until the port closes (the pod is gone), move it back (always), and fail
    when the pod did not stop. A manifest parked by an interrupted run is put back first."""
    manifest = posixpath.join(MANIFESTS, f"{component}.yaml")
    return shell(
        "if test -e {parked} && ! test -e {manifest}; then mv -f -- {parked} {manifest}; fi; gone=0; "
        "if mv -f -- {manifest} {parked}; then for i in $(seq {wait}); do "
        "if ss -ltn | grep -q -E {listen}; then sleep 1; else gone=1; break; fi; done; "
        "mv -f -- {parked} {manifest}; fi; test \"$gone\" = 1",
        manifest=manifest, parked=_parked(component), wait=wait, listen=f":{port}[[:space:]]")


def wait_listening(port: int, wait: int = START_WAIT) -> Cmd:
    return shell("for i in $(seq {wait}); do if ss -ltn | grep -q -E {listen}; then exit 0; fi; sleep 1; done; exit 1",
                 wait=wait, listen=f":{port}[[:space:]]", readonly=True)


def readyz(address: str, wait: int = 20) -> Cmd:
    """This node's API server (not the load-balanced endpoint) answers /readyz, polled every 2 seconds (at most
    ``wait`` tries of up to 7 seconds: within the command's timeout)."""
    probe = sh("kubectl", "--kubeconfig", ADMIN_CONF, f"--server={url(address, 6443)}", "get", "--raw=/readyz",
               "--request-timeout=5s", readonly=True).quiet()
    return shell("for i in $(seq {wait}); do if {probe}; then exit 0; fi; sleep 2; done; exit 1",
                 wait=wait, probe=probe, readonly=True)


def etcd_members(run: RunContext, stacked: bool) -> list[str]:
    role = "control-plane" if stacked else "etcd"
    return [url(h.internal_ip, 2379) for h in run.cluster.hosts_with_role(role)]


def etcd_health(urls: list[str]) -> Cmd:
    """``up URL`` / ``down URL`` per member, asked over TLS with the health-check client (curl: no etcdctl
    needed, so stacked members answer too)."""
    d = f"{NODE_PKI}/etcd"
    return shell("for u in {urls}; do if curl -fsS --max-time 5 --cacert {ca} --cert {cert} --key {key} "
                 "\"$u/health\" 2>/dev/null | grep -q -e '\"health\":\"true\"'; then echo \"up $u\"; "
                 "else echo \"down $u\"; fi; done",
                 urls=urls, ca=f"{d}/ca.crt", cert=f"{d}/healthcheck-client.crt", key=f"{d}/healthcheck-client.key",
                 readonly=True)


async def healthy_members(host: HostContext, urls: list[str], stacked: bool) -> set[str]:
    """The members answering healthy. kubexm's own etcd asks etcdctl (installed with every member); stacked
    members have no etcdctl on the host, so curl asks their /health."""
    if stacked:
        res = await host.run(etcd_health(urls), check=False, timeout=host.timeout_for("check"))
        return {line[3:] for line in res.stdout.splitlines() if line.startswith("up ")}
    res = await host.run(etcdctl("endpoint", "health", "-w", "json", endpoints=",".join(urls), readonly=True),
                         check=False, timeout=host.timeout_for("check"))
    try:
        answers = json.loads(res.stdout or "[]")
    except ValueError:
        return set()  # no answer at all: nothing is known to be healthy, so nothing restarts
    return {str(a.get("endpoint")) for a in answers if isinstance(a, dict) and a.get("health")}


@dataclass
class NodeWork:
    read: NodeRead
    changes: list[tuple[Placed, str]]  # (file, why)
    markers: list[str]  # restarts owed from an earlier run (their component names)
    ca_files: dict[str, str]  # local CA path -> where this node keeps its copy

    @property
    def restarts(self) -> list[str]:
        owed = {p.restart for p, _ in self.changes if p.restart} | set(self.markers)
        return [r for r in RESTART_ORDER if r in owed]


def _local_cert(run: RunContext, path: str) -> x509.Certificate | None:
    crt = cluster_pki(run.cluster).crt(path)
    return first_cert(crt.read_text(errors="replace")) if crt.is_file() else None


def plan_node(run: RunContext, placed: list[Placed], read: NodeRead) -> list[tuple[Placed, str]]:
    """The selected files on this node that a renewal replaces, with why."""
    names, fresh = set(selected_names(run)), set(to_reissue(run))
    out = []
    for p in placed:
        if p.name not in names or not p.renewable or p.path not in read.files or p.local is None:
            continue
        text = read.files[p.path]
        if p.kind == "kubeconfig":
            node_cert, uses = kubeconfig_cert(text)
            if node_cert is None and uses:
                continue  # the kubeconfig points at a file (kubelet-client-current.pem): renewed as kubelet-client
        else:
            node_cert = first_cert(text)
        if p.name in fresh:
            out.append((p, "re-issued from the same CA"))
            continue
        local = _local_cert(run, p.local)
        if local is None or node_cert is None or fingerprint(local) != fingerprint(node_cert):
            out.append((p, "differs from the local PKI"))
    return out


def _probe_paths() -> list[str]:
    return [marker_of(r) for r in RESTART_ORDER]


async def node_work(host: HostContext, group: str) -> NodeWork:
    everything = node_inventory(host.cluster, host.name)
    placed = [p for p in everything if p.group == group]
    read = await read_node(host, everything, tuple(_probe_paths()))  # all of it: the CAs too, to compare
    markers = [r for r in RESTART_ORDER if marker_of(r) in read.present and r in GROUP_RESTARTS[group]]
    ca_files = {p.local: p.path for p in everything if p.ca is None and p.local}
    return NodeWork(read, plan_node(host.run_ctx, placed, read), markers, ca_files)


def _unfinished(host: HostContext, why: str) -> NotApplicable:
    host.run_ctx.shared.setdefault("certs_unfinished", {})[host.name] = why
    return NotApplicable(why)


@dataclass(frozen=True)
class RenewNodeCerts(Step):
    """Place this node's renewed certificates and kubeconfigs of one phase and restart what uses them."""

    group: str = "control-plane"

    def describe(self) -> str:
        what = {"etcd": "etcd member certificates, then restart etcd keeping quorum",
                "control-plane": "control-plane certificates and kubeconfigs, then restart static pods and kubelet, "
                                 "API server /readyz checked",
                "kubelet": "kubelet certificates and kubeconfig, then restart kubelet",
                "registry": "the registry's serving certificate, then restart the registry"}[self.group]
        return f"renew {what}"

    async def check(self, host: HostContext) -> bool:
        work = await reach(host, lambda: node_work(host, self.group), record="certs_unfinished")
        return not work.changes and not work.markers

    async def run(self, host: HostContext) -> None:
        await reach(host, lambda: self._renew(host), record="certs_unfinished")

    async def _renew(self, host: HostContext) -> None:
        run = host.run_ctx
        work = await node_work(host, self.group)
        if not work.changes and not work.markers:
            return
        self._same_cas(host, work)
        restarts = work.restarts
        stacked = run.cluster.spec.etcd.type == "kubeadm"
        etcd_before: set[str] = set()
        if "etcd" in restarts or "etcd-pod" in restarts:
            etcd_before = await self._quorum_allows_restart(host, stacked and "etcd-pod" in restarts)
        files = self._files(host, work)
        if restarts:
            await host.run(sh("mkdir", "-p", "--", RESTART_PENDING_DIR) & sh("touch", "--", *(marker_of(r) for r in restarts)))
        await self._place(host, files)
        for restart in restarts:
            await self._restart(host, restart, etcd_before, stacked)
        if self.group == "control-plane" and restarts and await host.exists(posixpath.join(MANIFESTS, "kube-apiserver.yaml")):
            await self._wait_ready(host)
        host.emit("message", message=f"renewed {', '.join(sorted({p.name for p, _ in work.changes})) or 'nothing'}; "
                                     f"restarted {', '.join(restarts) or 'nothing'}")

    def _same_cas(self, host: HostContext, work: NodeWork) -> None:
        """Refuse to place leaves of a CA the node does not trust (a node set up from another PKI)."""
        for ca in sorted({p.ca for p, _ in work.changes if p.ca}):
            node_file = work.ca_files.get(ca)
            text = work.read.files.get(node_file or "")
            local = _local_cert(host.run_ctx, ca)
            node_ca = first_cert(text) if text else None
            if node_ca is not None and local is not None and fingerprint(node_ca) != fingerprint(local):
                label = next((k for k, v in CA_NAMES.items() if v == ca), ca)
                raise StepFailed(f"{host.name} trusts a different {label} CA ({node_file}) than the local PKI: leaves "
                                 "renewed from the local CA would break it",
                                 hint="point kubexm at this cluster's PKI (the cluster directory it was created from), "
                                      "or rotate the node's CA first")

    async def _quorum_allows_restart(self, host: HostContext, stacked: bool) -> set[str]:
        urls = etcd_members(host.run_ctx, stacked)
        me = url(host.spec.internal_ip if host.spec else host.address, 2379)
        up = await healthy_members(host, urls, stacked)
        quorum = len(urls) // 2 + 1
        if len(up - {me}) < quorum:
            down = [u for u in urls if u not in up]
            raise _unfinished(host, f"not restarted: etcd would lose quorum while this member restarts "
                                    f"({len(up)} of {len(urls)} healthy, down: {', '.join(down) or 'none'}); bring "
                                    "the other members back, then re-run")
        return up

    def _files(self, host: HostContext, work: NodeWork) -> list[tuple[bytes, str, int, str, bool]]:
        """(content, path, mode, owner, is the new target of kubelet-client-current.pem)."""
        pki = cluster_pki(host.cluster)
        out: list[tuple[bytes, str, int, str, bool]] = []
        root = "root:root"
        for p, _ in work.changes:
            assert p.local is not None and p.ca is not None  # renewable files always have both
            if not pki.exists(p.local):
                raise StepFailed(f"{pki.crt(p.local)} is missing: the renewed certificate for {p.name} was not "
                                 "issued", hint="run `kubexm certs renew` again (it re-issues before placing)")
            cert, key = pki.load(p.local)
            ca, _ = pki.load(p.ca)
            if p.kind == "cert":
                out += [(cert_pem(cert), p.path, 0o644, root, False),
                        (key_pem(key), p.key_path, p.key_mode, p.key_owner, False)]
            elif p.kind == "kubeconfig":
                out.append((rewrite_kubeconfig(work.read.files[p.path], cert_pem(ca), cert_pem(cert), key_pem(key)),
                            p.path, 0o600, root, False))
            else:  # kubelet-client-current.pem: a new dated file and the link switched to it, as the kubelet does
                stamp = cert.not_valid_before_utc.strftime("%Y-%m-%d-%H-%M-%S")
                out.append((cert_pem(cert) + key_pem(key), f"{KUBELET_PKI}/kubelet-client-{stamp}.pem", 0o600, root,
                            True))
        return out

    async def _place(self, host: HostContext, files: list[tuple[bytes, str, int, str, bool]]) -> None:
        """Every file to a temporary name in its own directory first, then all moved into place in one command:
        a reader sees the old set or the new one, never a certificate beside a key of the other."""
        moves: list[Cmd] = []
        for data, remote, mode, owner, link_target in files:
            if link_target:  # written under its own new name, then the link is switched atomically
                await host.upload(data, remote, mode=mode, owner=owner)
                link = posixpath.join(KUBELET_PKI, "kubelet-client-current.pem")
                tmp_link = posixpath.join(KUBELET_PKI, ".kubelet-client-current.pem.kubexm-renew")
                moves += [sh("ln", "-sfn", "--", remote, tmp_link), sh("mv", "-fT", "--", tmp_link, link)]
                continue
            tmp = posixpath.join(posixpath.dirname(remote), f".{posixpath.basename(remote)}.kubexm-renew")
            await host.upload(data, tmp, mode=mode, owner=owner)  # mv keeps mode and owner
            moves.append(sh("mv", "-f", "--", tmp, remote))
        if moves:
            command = moves[0]
            for m in moves[1:]:
                command = command & m
            await host.run(command)

    async def _restart(self, host: HostContext, restart: str, etcd_before: set[str], stacked: bool) -> None:
        if restart in SYSTEMD_UNITS:
            await Systemd(restart).run(host)  # restarts because the marker is there; removes it once active
            if restart == "etcd":
                await self._wait_etcd(host, etcd_before, stacked=False)
            return
        component, port = next((c, p) for k, c, p in STATIC_PODS if k == restart)
        manifest = posixpath.join(MANIFESTS, f"{component}.yaml")
        if not await host.exists(manifest) and not await host.exists(_parked(component)):
            await host.run(sh("rm", "-f", "--", marker_of(restart)))
            return  # this node does not run it (Kubernetes not installed here)
        if not (await host.run(sh("command", "-v", "ss", readonly=True).quiet(), check=False)).ok:
            # Without ss the pod's port cannot be watched: moving the manifest would be a blind restart.
            raise StepFailed(f"{host.name} has no `ss` (iproute2), which kubexm uses to see {component} stop and "
                             "start again; nothing was restarted", hint="install iproute2 there, then re-run")
        res = await host.run(restart_static_pod(component, port), check=False, timeout=STOP_WAIT + 30)
        if not res.ok:
            raise StepFailed(f"{component} on {host.name} did not stop within {STOP_WAIT}s after its manifest was "
                             "moved out; the manifest is back and the restart stays pending",
                             hint=f"check `journalctl -u kubelet` on {host.name}, then re-run `kubexm certs renew`")
        if not (await host.run(wait_listening(port), check=False, timeout=START_WAIT + 30)).ok:
            raise StepFailed(f"{component} on {host.name} is not listening on port {port} {START_WAIT}s after its "
                             "restart", hint=f"check `journalctl -u kubelet` and the pod's log on {host.name}")
        if restart == "etcd-pod":
            await self._wait_etcd(host, etcd_before, stacked=True)
        elif restart == "kube-apiserver":
            await self._wait_ready(host)
        await host.run(sh("rm", "-f", "--", marker_of(restart)))

    async def _wait_etcd(self, host: HostContext, before: set[str], stacked: bool) -> None:
        urls = etcd_members(host.run_ctx, stacked)
        me = url(host.spec.internal_ip if host.spec else host.address, 2379)
        deadline = time.monotonic() + HEALTH_WAIT
        up: set[str] = set()
        while time.monotonic() < deadline:
            up = await healthy_members(host, urls, stacked)
            if me in up and len(up) >= len(before):
                return
            await asyncio.sleep(2)
        raise StepFailed(f"etcd on {host.name} is not healthy {HEALTH_WAIT:.0f}s after its restart "
                         f"({len(up)} of {len(urls)} members healthy)",
                         hint=f"the other members keep quorum; check `journalctl -u etcd` on {host.name}")

    async def _wait_ready(self, host: HostContext) -> None:
        if not (await host.run(readyz(host.address), check=False, timeout=START_WAIT + 30)).ok:
            raise StepFailed(f"the API server on {host.name} does not answer /readyz after the restart; the next "
                             "control-plane node is not touched",
                             hint=f"check `journalctl -u kubelet` and the kube-apiserver log on {host.name}")


def _specs_to_issue(run: RunContext, names: list[str]) -> list[Any]:
    """The local leaves behind ``names`` that some node holds (read by the plan task) or that exist locally:
    `--all` on a cluster with etcd only issues no Kubernetes certificate."""
    pki = cluster_pki(run.cluster)
    reads: dict[str, NodeRead] = run.shared.get("cert_reads", {})
    out: dict[str, Any] = {}
    for h in run.cluster.spec.hosts:
        read = reads.get(h.name)
        for p in node_inventory(run.cluster, h.name):
            if p.name not in names or p.spec is None:
                continue
            on_node = read is not None and p.path in read.files
            if on_node or pki.crt(p.spec.path).is_file():
                out.setdefault(p.spec.path, p.spec)
    return list(out.values())


@dataclass(frozen=True)
class ReissueLeaves(Step):
    """Re-issue the selected leaves from the same CAs on this machine (once per renewal; see pki.renewal)."""

    def describe(self) -> str:
        return "re-issue the selected certificates from the same CAs (same keys, same SANs plus new ones)"

    def _specs(self, host: HostContext) -> list[Any]:
        run = host.run_ctx
        pki = cluster_pki(host.cluster)
        specs = _specs_to_issue(run, to_reissue(run))
        # A leaf first needed now (a node that was unreachable when the renewal began holds it): issued once.
        fresh = {s.path for s in specs}
        specs += [s for s in _specs_to_issue(run, selected_names(run)) if s.path not in fresh and not pki.exists(s.path)]
        for ca in sorted({s.ca for s in specs}):
            check_ca(pki, ca)  # an expired CA or a missing key stops the plan too, with the fix
        return specs

    async def check(self, host: HostContext) -> bool:
        return not self._specs(host)

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        pki = cluster_pki(host.cluster)
        changes = reissue(pki, self._specs(host))
        record_pending(pki, {*pending_names(pki), *selected_names(run)})
        host.emit("message", message=f"re-issued {len(changes)} certificate(s): "
                                     + ", ".join(c.path for c in changes))


@dataclass(frozen=True)
class RenewalPlan(Step):
    """Per node, what `certs renew` replaces and what it restarts (the whole answer of `--plan`)."""

    mutates = False

    def describe(self) -> str:
        return "show what would be renewed on each node"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        reads: dict[str, NodeRead] = run.shared.get("cert_reads", {})
        unreachable: dict[str, str] = run.shared.get("certs_unreachable", {})
        rows: list[list[str]] = []
        plan: dict[str, list[dict[str, str]]] = {}
        for h in run.cluster.spec.hosts:
            placed = node_inventory(run.cluster, h.name)
            if not placed:
                continue
            if h.name in unreachable:
                rows.append([h.name, "-", "-", "unreachable", unreachable[h.name]])
                continue
            read = reads.get(h.name)
            if read is None:
                continue
            changes = {p.path: why for p, why in plan_node(run, placed, read)}
            for p in placed:
                if p.name not in selected_names(run) or p.path not in read.files:
                    continue
                action = "renew" if p.path in changes else "skip"
                why = changes.get(p.path, "already the local PKI's current certificate")
                if p.kind == "kubeconfig" and kubeconfig_cert(read.files[p.path])[1]:
                    action, why = "skip", "uses kubelet-client-current.pem (renewed as kubelet-client)"
                restart = p.restart or "-"
                rows.append([h.name, p.name, p.path, f"{action} (restart {restart})" if action == "renew" else action,
                             why])
                plan.setdefault(h.name, []).append({"name": p.name, "path": p.path, "action": action, "why": why,
                                                    "restart": p.restart})
        run.shared["renew_plan"] = plan
        run.emit_report("Certificate renewal, per node", ["host", "name", "path", "action", "why"], rows)
        if run.options.dry_run and unreachable:
            # A real run would renew the others and name these; a plan that cannot see them is incomplete.
            raise StepFailed(f"the plan is incomplete: {', '.join(sorted(unreachable))} could not be read",
                             hint="a real run renews every reachable node and names these; re-run it once they are "
                                  "back to finish them")


@dataclass(frozen=True)
class FinishRenewal(Step):
    """Close the renewal when every node has its files; otherwise name the nodes a re-run will finish."""

    def describe(self) -> str:
        return "close the renewal (or name the nodes still to renew)"

    async def check(self, host: HostContext) -> bool:
        return not pending_names(cluster_pki(host.cluster)) and not host.run_ctx.shared.get("certs_unfinished")

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        unfinished: dict[str, str] = run.shared.get("certs_unfinished", {})
        if unfinished:
            nodes = "; ".join(f"{n}: {why}" for n, why in sorted(unfinished.items()))
            raise StepFailed(f"certificates not renewed on {', '.join(sorted(unfinished))} ({nodes})",
                             hint="every other node is done; run the same `kubexm certs renew` again once these are "
                                  "reachable and healthy: it re-issues nothing and finishes only them")
        if "admin.conf" in selected_names(run) and not PLANNING.get():
            from kubexm.steps.kubernetes import WriteAdminKubeconfig, kubeconfig_path

            if kubeconfig_path(host.cluster).is_file() and not await WriteAdminKubeconfig().check(host):
                await WriteAdminKubeconfig().run(host)
        clear_pending(cluster_pki(host.cluster))

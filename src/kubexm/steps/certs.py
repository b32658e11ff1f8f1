"""`certs check`: every certificate and kubeconfig read back from the nodes, judged against the local PKI.

Each node is read with one read-only command (certificate blocks and kubeconfigs without their keys);
everything else (chains, SANs, expiry, same-as-local) is decided here with ``cryptography``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography import x509

from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.selectors import DEPLOY
from kubexm.engine.step import Step
from kubexm.errors import AuthenticationError, ConnectionFault, HostKeyError, NotApplicable
from kubexm.pki.certs import inspect
from kubexm.pki.inventory import (
    NODE_PKI,
    REGISTRY_CA,
    Finding,
    NodeRead,
    Placed,
    chains_to,
    fingerprint,
    first_cert,
    inventory_read_command,
    judge,
    kubeconfig_cert,
    node_inventory,
    parse_read,
)
from kubexm.pki.layout import CAS, etcd_specs
from kubexm.steps.common import Systemd
from kubexm.steps.etcd import MEMBER_CERTS, cluster_pki, wait_healthy

T = TypeVar("T")
_UNREACHABLE = (ConnectionFault, AuthenticationError, HostKeyError)


async def reach(host: HostContext, work: Callable[[], Awaitable[T]], record: str = "certs_unreachable") -> T:
    """``work`` with the engine's reconnect policy; a host that stays unreachable raises NotApplicable and is
    recorded in ``shared[record]``, so the other hosts of a rolling task carry on and the run names it."""
    opts = host.run_ctx.options
    attempt = 0
    while True:
        try:
            return await work()
        except _UNREACHABLE as exc:
            transient = isinstance(exc, ConnectionFault)
            attempt += 1
            if not transient or attempt > opts.retries:
                host.run_ctx.shared.setdefault(record, {})[host.name] = f"unreachable: {exc.message}"
                raise NotApplicable(f"unreachable: {exc.message}") from None
            await host.run_ctx.pool.reset(host.name)
            await asyncio.sleep(opts.retry_backoff * 2 ** (attempt - 1))


async def read_node(host: HostContext, placed: list[Placed], probes: tuple[str, ...] = ()) -> NodeRead:
    res = await host.run(inventory_read_command(placed, probes), check=False, timeout=host.timeout_for("check"))
    return parse_read(res.stdout)


def local_material(run: RunContext) -> tuple[dict[str, x509.Certificate], dict[str, x509.Certificate]]:
    """(local CAs by PKI path, every local leaf by PKI path), loaded once per run."""
    cached = run.shared.get("certs_local")
    if cached is None:
        pki = cluster_pki(run.cluster)
        cas: dict[str, x509.Certificate] = {}
        certs: dict[str, x509.Certificate] = {}
        if pki.root.is_dir():
            for crt in sorted(pki.root.rglob("*.crt")):
                rel = str(crt.relative_to(pki.root))[:-4]
                cert = first_cert(crt.read_text(errors="replace"))
                if cert is not None:
                    certs[rel] = cert
        for path in (*(s.path for s in CAS), REGISTRY_CA):
            if path in certs:
                cas[path] = certs[path]
        cached = run.shared["certs_local"] = (cas, certs)
    return cached


def findings_for(host: str, placed: list[Placed], read: NodeRead, run: RunContext, warn_days: int) -> list[Finding]:
    cas, certs = local_material(run)
    out: list[Finding] = []
    for p in placed:
        if p.kind == "keypair":
            pub = p.path[:-4] + ".pub"
            have = [f for f in (p.path, pub) if f in read.present]
            if not have:
                continue
            f = Finding(host, p.name, p.path, p.kind)
            if len(have) < 2:
                missing = pub if p.path in have else p.path
                f.status = "missing"
                f.problems.append(f"{missing} is missing: service-account tokens cannot be "
                                  f"{'verified' if missing == pub else 'signed'}")
            out.append(f)
            continue
        text = read.files.get(p.path)
        if text is None:
            continue  # not placed on this node (a role it lacks, or not installed yet)
        if p.kind == "kubeconfig":
            cert, uses = kubeconfig_cert(text)
            if cert is None and uses:
                f = Finding(host, p.name, p.path, p.kind, status="ok")
                f.subject_cn = f"(client certificate in {uses})"
                out.append(f)
                continue
            out.append(judge(host, p, cert, cas, certs, warn_days,
                             "" if cert else f"{p.path} has no readable client certificate"))
        else:
            out.append(judge(host, p, first_cert(text), cas, certs, warn_days))
    return out


def worst_status(statuses: list[str]) -> str:
    if "expired" in statuses:
        return "expired"
    return "expiring" if "expiring" in statuses else "ok"


@dataclass(frozen=True)
class CollectCerts(Step):
    """Read every certificate and kubeconfig kubexm placed on this node (one read-only command)."""

    mutates = False

    def describe(self) -> str:
        return f"read the certificates and kubeconfigs under {NODE_PKI}, /etc/kubernetes and /var/lib/kubelet/pki"

    async def run(self, host: HostContext) -> None:
        placed = node_inventory(host.cluster, host.name)
        if not placed:
            raise NotApplicable("no role of this node carries certificates")
        read = await reach(host, lambda: read_node(host, placed))
        host.run_ctx.shared.setdefault("cert_reads", {})[host.name] = read


def _local_rows(run: RunContext, warn_days: int) -> list[Finding]:
    cas, certs = local_material(run)
    out = []
    for path, cert in certs.items():
        info = inspect(cert, path)
        f = Finding(DEPLOY, path, f"{path}.crt", "local")
        f.subject_cn = info.subject.split("CN=", 1)[-1].split(",", 1)[0]
        f.issuer = info.issuer.split("CN=", 1)[-1].split(",", 1)[0]
        f.chains_to = chains_to(cert, cas)
        f.sans, f.not_after, f.days_left = sorted(info.sans), info.not_after, info.days_left
        f.status, f.fingerprint = info.status(warn_days), fingerprint(cert)
        out.append(f)
    return out


def report_document(run: RunContext, warn_days: int) -> dict[str, Any]:
    """`certs check -o json`: the documented, stable shape (see the `certs check` help)."""
    reads: dict[str, NodeRead] = run.shared.get("cert_reads", {})
    unreachable: dict[str, str] = run.shared.get("certs_unreachable", {})
    rows: list[Finding] = []
    hosts: dict[str, dict[str, Any]] = {}
    for h in run.cluster.spec.hosts:
        placed = node_inventory(run.cluster, h.name)
        if not placed:
            continue
        if h.name in unreachable:
            hosts[h.name] = {"reachable": False, "error": unreachable[h.name]}
        elif h.name in reads:
            hosts[h.name] = {"reachable": True, "error": None}
            rows += findings_for(h.name, placed, reads[h.name], run, warn_days)
    rows += _local_rows(run, warn_days)
    return {"cluster": run.cluster.name, "warn_days": warn_days,
            "status": worst_status([r.status for r in rows]), "hosts": hosts,
            "certificates": [r.as_json() for r in rows]}


@dataclass(frozen=True)
class CertsReport(Step):
    """One table of every certificate on every node and on this machine: CA, SANs, days left, problems."""

    warn_days: int = 30
    mutates = False

    def describe(self) -> str:
        return "report certificate expiry, chains and differences from the local PKI"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        warn_days = int(run.options.extra.get("warn_days", self.warn_days))
        doc = report_document(run, warn_days)
        run.shared["certs_report"] = doc
        run.shared["certs_worst"] = doc["status"]
        rows = []
        for c in doc["certificates"]:
            local = {True: "differs", False: "same", None: "-"}[c["differs_from_local"]]
            sans = ", ".join(c["sans"])
            rows.append([c["host"], c["name"], c["path"], c["subject_cn"], c["issuer"], c["chains_to"] or "-",
                         sans or "-", c["not_after"][:10] if c["not_after"] else "-",
                         "-" if c["days_left"] is None else str(c["days_left"]), c["status"], local,
                         "; ".join(c["problems"])])
        for name, state in doc["hosts"].items():
            if not state["reachable"]:
                rows.append([name, "-", "-", "-", "-", "-", "-", "-", "-", "unreachable", "-", state["error"]])
        pki = cluster_pki(run.cluster)
        run.emit_report(f"Certificates (warning under {warn_days} days; 'local' compares with {pki.root})",
                        ["host", "name", "path", "CN", "issuer", "chains to", "SANs", "expires", "days left", "status",
                         "local", "problems"], rows)


# -- kept for callers of earlier versions (the etcd-only roll and its tests) ----------------------------------

@dataclass(frozen=True)
class RenewEtcdLeaves(Step):
    """New etcd server, peer and client certificates from the same CA (kept keys)."""

    def describe(self) -> str:
        return "issue new etcd leaf certificates from the existing CA"

    async def run(self, host: HostContext) -> None:
        specs = [s for s in etcd_specs(host.cluster) if not s.is_ca]
        changes = cluster_pki(host.cluster).renew(specs)
        host.emit("message", message=f"renewed {len(changes)} certificate(s)")


@dataclass(frozen=True)
class RestartEtcdIfChanged(Systemd):
    """Restart this member when its certificates changed, then wait until the whole cluster is healthy
    again before the next member goes (the task runs one member at a time)."""

    unit: str = "etcd"
    restart_on: tuple[str, ...] = MEMBER_CERTS

    def describe(self) -> str:
        return "restart etcd with the new certificates and wait for cluster health"

    async def run(self, host: HostContext) -> None:
        await super().run(host)
        await wait_healthy(host, 120, f"etcd on {host.name} did not rejoin a healthy cluster after the restart",
                           "the remaining members keep quorum; check `journalctl -u etcd` on this member")

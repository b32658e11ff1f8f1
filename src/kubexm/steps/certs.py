"""Certificate inspection on every node and the deploy machine, and etcd certificate renewal."""

from __future__ import annotations

import re
from dataclasses import dataclass

from kubexm.engine.context import HostContext
from kubexm.engine.selectors import DEPLOY
from kubexm.engine.step import Step
from kubexm.hosts.shell import shell
from kubexm.pki.certs import CertInfo, inspect, load_cert
from kubexm.pki.layout import etcd_specs
from kubexm.steps.common import Systemd
from kubexm.steps.etcd import MEMBER_CERTS, cluster_pki, wait_healthy

NODE_PKI = "/etc/kubernetes/pki"
_PEM = re.compile(rb"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


@dataclass(frozen=True)
class CollectCerts(Step):
    """Read every certificate under /etc/kubernetes/pki (one command; parsing happens locally)."""

    mutates = False

    def describe(self) -> str:
        return f"read the certificates under {NODE_PKI}"

    async def run(self, host: HostContext) -> None:
        # One file name per line, read whole: a name with a space stays one file.
        res = await host.run(shell("find {root} -name '*.crt' 2>/dev/null | sort | while IFS= read -r f; do "
                                   "echo \"### $f\"; cat \"$f\"; done", root=NODE_PKI, readonly=True), check=False)
        found: list[CertInfo] = []
        for block in res.stdout.split("### ")[1:]:
            path, _, body = block.partition("\n")
            pem = _PEM.search(body.encode())
            if pem:
                rel = path.strip().removeprefix(NODE_PKI + "/")
                found.append(inspect(load_cert(pem.group(0), f"{host.name}:{path}"), rel))
        host.run_ctx.shared.setdefault("certs", {})[host.name] = found


def _cn(dn: str) -> str:
    m = re.search(r"CN=([^,]+)", dn)
    return m.group(1) if m else dn


@dataclass(frozen=True)
class CertsReport(Step):
    """One table of every certificate, where it lives, its CA, expiry and days left."""

    warn_days: int = 30
    mutates = False

    def describe(self) -> str:
        return "report certificate expiry"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        collected: dict[str, list[CertInfo]] = dict(run.shared.get("certs", {}))
        pki = cluster_pki(run.cluster)
        collected[DEPLOY] = [CertInfo(f"{i.path}.crt", i.subject, i.issuer, i.serial, i.not_after, i.sans, i.is_ca)
                             for i in pki.inspect_all()]
        warn_days = int(run.options.extra.get("warn_days", self.warn_days))
        rows, worst = [], "ok"
        order = [DEPLOY, *(h.name for h in run.cluster.spec.hosts)]
        for name in order:
            for info in collected.get(name, []):
                status = info.status(warn_days)
                if status == "expired" or (status == "expiring" and worst == "ok"):
                    worst = status
                rows.append([name, info.path, _cn(info.issuer), info.not_after.strftime("%Y-%m-%d"),
                             str(info.days_left), status])
        run.shared["certs_worst"] = worst
        run.emit_report(f"Certificates (warning under {warn_days} days; node paths under {NODE_PKI}, "
                        f"deploy-machine paths under {pki.root})",
                        ["host", "certificate", "CA", "expires", "days left", "status"], rows)


@dataclass(frozen=True)
class RenewEtcdLeaves(Step):
    """New etcd server, peer and client certificates from the same CA (kept keys unless rotating)."""

    def describe(self) -> str:
        return "issue new etcd leaf certificates from the existing CA"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        wanted = run.options.extra.get("renew", "all")
        specs = [s for s in etcd_specs(run.cluster) if not s.is_ca]
        if wanted not in ("all", "etcd"):
            specs = [s for s in specs if wanted in (s.path, s.path.split("/")[-1], s.common_name)]
            if not specs:
                from kubexm.errors import UsageError

                raise UsageError(f"no etcd certificate named '{wanted}'",
                                 hint="use all, etcd, or a path such as etcd/nodes/node1/server")
        changes = cluster_pki(run.cluster).renew(specs)
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
        # A member of a running cluster is ready as soon as it rejoined, so systemd's restart may wait for it.
        await super().run(host)
        await wait_healthy(host, 120, f"etcd on {host.name} did not rejoin a healthy cluster after the restart",
                           "the remaining members keep quorum; check `journalctl -u etcd` on this member")

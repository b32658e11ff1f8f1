"""etcd on hosts: binaries from assets, certificates from kubexm's PKI, env + unit, health over TLS."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.hosts.digest import parse_sha256, sha256_command
from kubexm.pki import PKI
from kubexm.pki.layout import etcd_specs
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import InstallBinaries

BIN = "/usr/local/bin"
PKI_DIR = "/etc/kubernetes/pki/etcd"
ENV_FILE = "/etc/etcd.env"
BOOTSTRAP_FILE = "/etc/etcd.bootstrap.env"
UNIT_FILE = "/etc/systemd/system/etcd.service"
ASSET_DIR = "/var/lib/kubexm/assets"
MARKER = InstallBinaries("etcd", ("etcd", "etcdctl")).marker


def cluster_pki(cluster: Cluster) -> PKI:
    settings = cluster.spec.pki
    return PKI.for_cluster(cluster.name, key_type=settings.key_type, ca_days=settings.ca_validity_days,
                           leaf_days=settings.cert_validity_days)


def etcd_members(cluster: Cluster) -> list[tuple[str, str]]:
    return [(h.name, h.internal_ip) for h in cluster.hosts_with_role("etcd")]


def initial_cluster(cluster: Cluster) -> str:
    return ",".join(f"{name}=https://{ip}:2380" for name, ip in etcd_members(cluster))


def etcdctl(command: str, endpoints: str = "https://127.0.0.1:2379") -> str:
    """An etcdctl command line on a member, authenticated with the health-check client certificate."""
    return (f"ETCDCTL_API=3 {BIN}/etcdctl --endpoints={endpoints} --cacert={PKI_DIR}/ca.crt "
            f"--cert={PKI_DIR}/healthcheck-client.crt --key={PKI_DIR}/healthcheck-client.key "
            f"--command-timeout=10s {command}")


@dataclass(frozen=True)
class EnsureEtcdPKI(Step):
    """CA, member and client certificates for etcd on the deploy machine (CAs are reused)."""

    def describe(self) -> str:
        return "generate etcd certificates (reuse the CA)"

    async def check(self, host: HostContext) -> bool:
        return not cluster_pki(host.cluster).pending(etcd_specs(host.cluster))

    async def run(self, host: HostContext) -> None:
        changes = cluster_pki(host.cluster).ensure(etcd_specs(host.cluster))
        host.emit("message", message="; ".join(f"{c.path}: {c.reason}" for c in changes))


def member_files(cluster: Cluster, name: str) -> list[tuple[str, str, int]]:
    """(local file in the PKI, path on the member, mode) for one member."""
    return [
        ("etcd/ca.crt", f"{PKI_DIR}/ca.crt", 0o644),
        (f"etcd/nodes/{name}/server.crt", f"{PKI_DIR}/server.crt", 0o644),
        (f"etcd/nodes/{name}/server.key", f"{PKI_DIR}/server.key", 0o600),
        (f"etcd/nodes/{name}/peer.crt", f"{PKI_DIR}/peer.crt", 0o644),
        (f"etcd/nodes/{name}/peer.key", f"{PKI_DIR}/peer.key", 0o600),
        ("etcd/healthcheck-client.crt", f"{PKI_DIR}/healthcheck-client.crt", 0o644),
        ("etcd/healthcheck-client.key", f"{PKI_DIR}/healthcheck-client.key", 0o600),
    ]


@dataclass(frozen=True)
class PlaceEtcdCerts(Step):
    """The member's own server/peer pair, the CA and the health-check client, in kubeadm's layout."""

    def describe(self) -> str:
        return f"place etcd certificates in {PKI_DIR}"

    def _files(self, host: HostContext) -> list[tuple[bytes, str, int]]:
        root = cluster_pki(host.cluster).root
        out = []
        for local, remote, mode in member_files(host.cluster, host.name):
            try:
                out.append(((root / local).read_bytes(), remote, mode))
            except FileNotFoundError:
                raise StepFailed(f"{root / local} is missing", hint="run GenerateEtcdPKI first (kubexm create cluster "
                                                                     "--tags etcd)") from None
        return out

    async def check(self, host: HostContext) -> bool:
        import hashlib

        files = self._files(host)
        res = await host.run(sha256_command(r for _, r, _ in files), check=False)
        have = parse_sha256(res.stdout)
        return all(have.get(r) == hashlib.sha256(data).hexdigest() for data, r, _ in files)

    async def run(self, host: HostContext) -> None:
        await host.run(f"mkdir -p {PKI_DIR} && chmod 0755 {PKI_DIR}")
        for data, remote, mode in self._files(host):
            if await host.upload(data, remote, mode=mode):
                host.vars.setdefault("changed_files", set()).add(remote)


def env_values(host: HostContext) -> tuple[tuple[str, Any], ...]:
    cluster = host.cluster
    etcd = cluster.spec.etcd
    return (("name", host.name), ("cluster_name", cluster.name), ("address", host.address),
            ("data_dir", etcd.data_dir), ("token", f"kubexm-{cluster.name}"), ("pki", PKI_DIR), ("bin", BIN),
            ("extra_args", tuple(sorted(etcd.extra_args.items()))))


def bootstrap_text(initial: str, state: str) -> bytes:
    return (f"# Written once by kubexm when this member first started.\n"
            f"ETCD_INITIAL_CLUSTER={initial}\nETCD_INITIAL_CLUSTER_STATE={state}\n").encode()


@dataclass(frozen=True)
class EtcdBootstrap(Step):
    """How a member of a new cluster first starts (all members, state new); never rewritten later, so
    membership changes made with `kubexm add/delete nodes` stay as they are."""

    def describe(self) -> str:
        return f"write {BOOTSTRAP_FILE} for the first start"

    async def check(self, host: HostContext) -> bool:
        return await host.exists(BOOTSTRAP_FILE)

    async def run(self, host: HostContext) -> None:
        await host.upload(bootstrap_text(initial_cluster(host.cluster), "new"), BOOTSTRAP_FILE, mode=0o644)


@dataclass(frozen=True)
class EtcdService(Step):
    """Enable and start etcd (without blocking: a new member waits for its peers), restart on changes."""

    watched: tuple[str, ...] = (ENV_FILE, UNIT_FILE, f"{BIN}/etcd", f"{PKI_DIR}/server.crt", f"{PKI_DIR}/peer.crt",
                                f"{PKI_DIR}/ca.crt")

    def describe(self) -> str:
        return "enable and start etcd"

    def _changed(self, host: HostContext) -> bool:
        changed: set[str] = host.vars.get("changed_files", set())
        return any(p in changed for p in self.watched)

    async def check(self, host: HostContext) -> bool:
        res = await host.run("systemctl is-enabled etcd && systemctl is-active etcd", check=False)
        return res.ok and not self._changed(host)

    async def run(self, host: HostContext) -> None:
        verb = "restart" if self._changed(host) else "start"
        await host.run(f"systemctl daemon-reload && systemctl enable etcd && systemctl {verb} --no-block etcd")


async def cluster_health(host: HostContext) -> tuple[bool, str]:
    """Ask one member for the health of every member (over TLS with the health-check client)."""
    res = await host.run(etcdctl("endpoint health --cluster -w json"), check=False, timeout=30)
    if not res.ok:
        return False, (res.stderr or res.stdout).strip().splitlines()[-1:][0] if (res.stderr or res.stdout).strip() \
            else f"etcdctl exited {res.exit_status}"
    try:
        endpoints = json.loads(res.stdout)
    except ValueError:
        return False, res.stdout.strip()[:200]
    bad = [e.get("endpoint", "?") + ": " + str(e.get("error", "unhealthy")) for e in endpoints if not e.get("health")]
    want = len(etcd_members(host.cluster))
    if bad:
        return False, "; ".join(bad)
    if len(endpoints) < want:
        return False, f"{len(endpoints)} of {want} members answer"
    return True, f"{len(endpoints)} members healthy"


@dataclass(frozen=True)
class WaitEtcdHealthy(Step):
    """Wait until every member reports healthy over TLS (once, after all members started)."""

    timeout: float = 120.0

    def describe(self) -> str:
        return "wait until every etcd member is healthy over TLS"

    async def check(self, host: HostContext) -> bool:
        # Healthy already: nothing to wait for. In a plan, an unhealthy (or not yet installed) cluster
        # shows as "would change" instead of the plan itself waiting for a cluster it did not start.
        return (await cluster_health(host))[0]

    async def run(self, host: HostContext) -> None:
        last = await wait_healthy(host, self.timeout, "etcd did not become healthy",
                                  "see `journalctl -u etcd` on the members (kubexm run command --nodes etcd -- "
                                  "journalctl -u etcd -n 20); a member added to a running cluster joins with "
                                  "`kubexm add nodes --nodes NAME --role etcd`")
        host.emit("message", message=f"etcd: {last}")


async def wait_healthy(host: HostContext, timeout: float, what: str, hint: str) -> str:
    """Poll cluster health from ``host`` until every member is healthy; StepFailed(what, hint) on timeout."""
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        ok, last = await cluster_health(host)
        if ok:
            return last
        await asyncio.sleep(1)
    raise StepFailed(f"{what} in {timeout:.0f}s: {last}", hint=hint)


def install_steps(host: HostContext) -> list[Step]:
    from kubexm.steps.common import Template

    return [
        InstallBinaries("etcd", ("etcd", "etcdctl")),
        PlaceEtcdCerts(),
        Template("etcd/etcd.env.j2", ENV_FILE, 0o644, env_values(host)),
        EtcdBootstrap(),
        Template("etcd/etcd.service.j2", UNIT_FILE, 0o644, env_values(host)),
        EtcdService(),
    ]




@dataclass(frozen=True)
class CheckExternalEtcd(Step):
    """etcd type `external`: install nothing, but prove every given endpoint answers /health over TLS
    with the given client certificate before anything depends on it."""

    mutates = False

    def describe(self) -> str:
        return "check the external etcd endpoints over TLS"

    async def run(self, host: HostContext) -> None:
        import ssl
        import urllib.request

        etcd = host.cluster.spec.etcd
        files = {"caFile": etcd.ca_file, "certFile": etcd.cert_file, "keyFile": etcd.key_file}
        missing = [k for k, v in files.items() if not v or not Path(v).expanduser().is_file()]
        if missing:
            raise StepFailed(f"etcd type external needs readable spec.etcd.{', spec.etcd.'.join(missing)}",
                             hint="point them at the CA and a client certificate/key of the existing etcd")
        context = ssl.create_default_context(cafile=str(Path(etcd.ca_file or "").expanduser()))
        context.load_cert_chain(str(Path(etcd.cert_file or "").expanduser()), str(Path(etcd.key_file or "").expanduser()))
        problems = []
        for endpoint in etcd.endpoints:
            def fetch(url: str = endpoint.rstrip("/") + "/health") -> bytes:
                with urllib.request.urlopen(url, context=context, timeout=10) as response:
                    body: bytes = response.read()
                    return body
            try:
                body = await asyncio.to_thread(fetch)
                if json.loads(body).get("health") not in ("true", True):
                    problems.append(f"{endpoint}: reports unhealthy ({body.decode(errors='replace')[:100]})")
            except (OSError, ValueError) as exc:
                problems.append(f"{endpoint}: {getattr(exc, 'reason', exc)}")
        if problems:
            raise StepFailed("external etcd is not usable: " + "; ".join(problems),
                             hint="check spec.etcd.endpoints and the client certificate")
        host.emit("message", message=f"external etcd: {len(etcd.endpoints)} endpoint(s) healthy")

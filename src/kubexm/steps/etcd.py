"""etcd on hosts: binaries from assets, certificates from kubexm's PKI, env + unit, health over TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm.engine.context import FileWant, HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.pki import PKI
from kubexm.pki.layout import etcd_specs
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.common import Systemd, Template, kubexm_command, restart_marker

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


LOCAL_ENDPOINT = "https://127.0.0.1:2379"
# Where a data directory must never point: `kubexm delete nodes` ends with `rm -rf` of it.
_SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                          "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/usr/local/bin", "/var",
                          "/var/lib", "/var/lib/kubexm", "/var/tmp", "/etc/kubernetes"})
# An etcd flag as spec.etcd.extraArgs names it (quota-backend-bytes, experimental-initial-corrupt-check).
_FLAG = re.compile(r"^[A-Za-z0-9]+(?:[-_][A-Za-z0-9]+)*$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def url(address: str, port: int) -> str:
    """An https URL of an address: IPv6 literals in brackets, as etcd and its certificates expect."""
    # A host name is not an IP literal: ":" never occurs in one, so only IPv6 literals get brackets.
    if ":" in address and ipaddress.ip_address(address).version == 6:
        return f"https://[{address}]:{port}"
    return f"https://{address}:{port}"


def data_dir(cluster: Cluster) -> str:
    """spec.etcd.dataDir, checked before it reaches `mv` or `rm -rf`: absolute, no `..`, no control
    character, not a system directory. Any other character (a space, `;`) is carried as one quoted word."""
    value = cluster.spec.etcd.data_dir
    if _CONTROL.search(value):
        raise StepFailed(f"spec.etcd.dataDir {value!r} holds a line break or control character",
                         hint="use a plain absolute path, e.g. /var/lib/etcd")
    if not value.startswith("/") or ".." in value.split("/"):
        raise StepFailed(f"spec.etcd.dataDir {value!r} must be an absolute path without '..'",
                         hint="e.g. /var/lib/etcd")
    normal = "/" + posixpath.normpath(value).lstrip("/")  # also "//x" (normpath keeps two leading slashes)
    if normal in _SYSTEM_DIRS:
        raise StepFailed(f"spec.etcd.dataDir {value!r} is a system directory; etcd's data would replace it "
                         "and removing a member deletes it", hint="use a directory of its own, e.g. /var/lib/etcd")
    return normal


def etcd_members(cluster: Cluster) -> list[tuple[str, str]]:
    return [(h.name, h.internal_ip) for h in cluster.hosts_with_role("etcd")]


def initial_cluster(cluster: Cluster) -> str:
    return ",".join(f"{name}={url(ip, 2380)}" for name, ip in etcd_members(cluster))


def etcdctl(*args: str, endpoints: str = LOCAL_ENDPOINT, readonly: bool = False) -> Cmd:
    """etcdctl on a member, authenticated with the health-check client certificate; each argument one word.
    ``readonly``: the sub-command only reads (endpoint health, member list), verified by the command builder."""
    command = sh(f"{BIN}/etcdctl", f"--endpoints={endpoints}", f"--cacert={PKI_DIR}/ca.crt",
                 f"--cert={PKI_DIR}/healthcheck-client.crt", f"--key={PKI_DIR}/healthcheck-client.key",
                 "--command-timeout=10s", *args, readonly=readonly)
    return with_api_v3(command)


def with_api_v3(command: Cmd) -> Cmd:
    # etcdctl before 3.4 speaks the v2 API unless told otherwise.
    return shell("ETCDCTL_API=3 {command}", command=command, readonly=command.readonly)


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


def member_files(name: str) -> list[tuple[str, str, int]]:
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


# Where a member's certificates live on it (the same paths on every member).
MEMBER_CERTS = tuple(remote for _, remote, _ in member_files("-"))


@dataclass(frozen=True)
class PlaceEtcdCerts(Step):
    """The member's own server/peer pair, the CA and the health-check client, in kubeadm's layout."""

    def describe(self) -> str:
        return f"place etcd certificates in {PKI_DIR}"

    def _files(self, host: HostContext) -> list[tuple[bytes, str, int]]:
        root = cluster_pki(host.cluster).root
        out = []
        for local, remote, mode in member_files(host.name):
            try:
                out.append(((root / local).read_bytes(), remote, mode))
            except FileNotFoundError:
                raise StepFailed(f"{root / local} is missing", hint="generate the etcd certificates first: "
                                 f"`{kubexm_command(host, 'create', 'cluster', '--tags', 'etcd')}`") from None
        return out

    def check_files(self, host: HostContext) -> dict[str, FileWant] | None:
        import hashlib

        try:
            files = self._files(host)
        except StepFailed:
            return None  # generated by an earlier step of this run (not at all in a dry run): "would change"
        # Mode and owner count too: a key made world-readable by hand is put right by the next run.
        return {r: FileWant(hashlib.sha256(data).hexdigest(), mode) for data, r, mode in files}

    async def run(self, host: HostContext) -> None:
        await host.run(sh("mkdir", "-p", "--", PKI_DIR) & sh("chmod", "0755", "--", PKI_DIR))
        for data, remote, mode in self._files(host):
            if await host.upload(data, remote, mode=mode):
                host.vars.setdefault("changed_files", set()).add(remote)


def extra_env(cluster: Cluster) -> tuple[tuple[str, str], ...]:
    """spec.etcd.extraArgs as (ETCD_* variable, value): each key must be a flag name, each value one line."""
    out = []
    for key, value in sorted(cluster.spec.etcd.extra_args.items()):
        flag = key.removeprefix("--")
        if not _FLAG.match(flag):
            raise StepFailed(f"spec.etcd.extraArgs: {key!r} is not an etcd flag name",
                             hint="letters, digits and '-', as etcd --help spells it, e.g. quota-backend-bytes")
        if _CONTROL.search(str(value)):
            raise StepFailed(f"spec.etcd.extraArgs.{key}: the value holds a line break or control character",
                             hint="an etcd flag value is one line")
        out.append(("ETCD_" + flag.upper().replace("-", "_"), str(value)))
    return tuple(out)


def env_values(host: HostContext) -> tuple[tuple[str, Any], ...]:
    """What the env file and unit are rendered from; every value is checked here, so a value a config line
    cannot hold stops the run with a one-line error naming the field (rendering would refuse it too)."""
    cluster = host.cluster
    return (("name", host.name), ("cluster_name", cluster.name), ("data_dir", data_dir(cluster)),
            ("client_url", url(host.address, 2379)), ("peer_url", url(host.address, 2380)),
            ("token", f"kubexm-{cluster.name}"), ("pki", PKI_DIR), ("bin", BIN), ("extra_env", extra_env(cluster)))


def bootstrap_text(initial: str, state: str) -> bytes:
    from kubexm.templates import env_file_value

    return (f"# Written once by kubexm when this member first started.\n"
            f"ETCD_INITIAL_CLUSTER={env_file_value(initial)}\n"
            f"ETCD_INITIAL_CLUSTER_STATE={env_file_value(state)}\n").encode()


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
class EtcdService(Systemd):
    """Enable and start etcd, restart it on changes; without blocking (a new member waits for its peers).

    systemd's start/restart waits for the unit to be ready, and a member of a new cluster is ready only once
    a quorum of its peers runs: members started one by one would each wait for the next. So the start is
    queued (``no_block``) and WaitEtcdHealthy, once every member is healthy, clears the pending-restart
    markers; a run that fails before that restarts the member again next time.
    """

    unit: str = "etcd"
    restart_on: tuple[str, ...] = (ENV_FILE, UNIT_FILE, f"{BIN}/etcd", f"{PKI_DIR}/server.crt",
                                   f"{PKI_DIR}/peer.crt", f"{PKI_DIR}/ca.crt")
    no_block: bool = True

    def describe(self) -> str:
        return "enable and start etcd"


async def restarts_pending(host: HostContext) -> list[str]:
    """The members whose etcd restart is owed (marker present), asked from each member; unreachable ones
    count as pending."""
    marker = restart_marker("etcd")
    pending = []
    for name, _ in etcd_members(host.cluster):
        try:
            if await host.run_ctx.host(name).exists(marker):
                pending.append(name)
        except KubexmError:
            pending.append(name)
    return pending


async def clear_restarts(host: HostContext) -> None:
    for name in await restarts_pending(host):
        try:
            await host.run_ctx.host(name).run(sh("rm", "-f", "--", restart_marker("etcd")), check=False)
        except KubexmError:
            continue  # still pending: that member restarts once more on the next run, which is harmless


async def cluster_health(host: HostContext) -> tuple[bool, str]:
    """Ask one member for the health of every member (over TLS with the health-check client)."""
    res = await host.run(etcdctl("endpoint", "health", "--cluster", "-w", "json", readonly=True),
                         check=False, timeout=30)
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
        # A restart still marked pending is confirmed by this step (see EtcdService).
        return (await cluster_health(host))[0] and not await restarts_pending(host)

    async def run(self, host: HostContext) -> None:
        log = kubexm_command(host, "run", "command", "--nodes", "etcd", "--", "journalctl", "-u", "etcd", "-n", "20")
        add = kubexm_command(host, "add", "nodes", "--nodes", "NAME", "--role", "etcd")
        last = await wait_healthy(host, self.timeout, "etcd did not become healthy",
                                  f"see etcd's log on the members: `{log}`; a member added to a running cluster "
                                  f"joins with `{add}`")
        await clear_restarts(host)
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


# 0600: CIS 1.1.7 (the env file names every certificate and key path etcd uses). Shared by create and config sync.
def env_file(values: tuple[tuple[str, Any], ...]) -> Template:
    return Template("etcd/etcd.env.j2", ENV_FILE, 0o600, values)


def unit_file(values: tuple[tuple[str, Any], ...]) -> Template:
    return Template("etcd/etcd.service.j2", UNIT_FILE, 0o600, values)


def install_steps(host: HostContext) -> list[Step]:
    values = env_values(host)
    return [
        InstallBinaries("etcd", ("etcd", "etcdctl")),
        PlaceEtcdCerts(),
        env_file(values),
        EtcdBootstrap(),
        unit_file(values),
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

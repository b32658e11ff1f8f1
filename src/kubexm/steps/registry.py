"""A private image registry on the hosts of role ``registry``: Debian's docker-registry (the CNCF distribution
registry) with TLS from kubexm's PKI, htpasswd users, storage in spec.registry.dataDir, and the package's own
unit pointed at kubexm's config by a drop-in."""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import posixpath
import time
from dataclasses import dataclass
from typing import ClassVar

from kubexm.engine.context import HostContext, file_attrs
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.pki.certs import CertSpec
from kubexm.spec.fields import split_host_port
from kubexm.spec.models import Cluster, RegistryAuth

PACKAGE = "docker-registry"
UNIT = "docker-registry"
SERVICE_USER = "docker-registry"
OWNER = f"root:{SERVICE_USER}"  # files the service (not root) reads: group-readable, never world-readable
CONF_DIR = "/etc/kubexm/registry"
CONFIG_FILE = f"{CONF_DIR}/config.yml"
HTPASSWD_FILE = f"{CONF_DIR}/htpasswd"
TLS_DIR = f"{CONF_DIR}/tls"
CA_FILE = f"{TLS_DIR}/ca.crt"
CERT_FILE = f"{TLS_DIR}/server.crt"
KEY_FILE = f"{TLS_DIR}/server.key"
DROPIN_DIR = "/etc/systemd/system/docker-registry.service.d"
DROPIN = f"{DROPIN_DIR}/kubexm.conf"
# A file the service re-reads only when it starts: a change to any of them restarts it.
RESTART_ON = (CONFIG_FILE, HTPASSWD_FILE, CERT_FILE, KEY_FILE, DROPIN)
REGISTRY_CA = CertSpec("registry/ca", "kubexm-registry-ca", "")
# The registry checks the password of every request against its bcrypt hash, so the cost is paid per request
# (a sync makes hundreds; 10 rounds cost 0.1 s of registry CPU each here). 5 is `htpasswd -B`'s own default: the
# file is readable by root and the registry's user only, and the password itself is in the cluster file anyway.
BCRYPT_ROUNDS = 5
# Where a data directory must never point: `registry down --purge` removes it.
_SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                          "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/var", "/var/lib",
                          "/var/lib/kubexm", "/var/tmp", "/etc/kubernetes", "/var/lib/docker", "/var/lib/containerd",
                          "/etc/kubexm", CONF_DIR})


def registry_hosts(cluster: Cluster) -> list[str]:
    return [h.name for h in cluster.hosts_with_role("registry")]


def check_enabled(cluster: Cluster) -> None:
    """What `registry up` needs from the cluster file, checked before anything connects or is recorded."""
    if cluster.spec.registry.type != "docker-registry":
        raise KubexmError("spec.registry.type is 'none': no registry to manage",
                          hint="set spec.registry.type: docker-registry and list hosts in spec.roleGroups.registry")
    if not registry_hosts(cluster):
        raise KubexmError("no host has the role registry", hint="list the registry hosts in spec.roleGroups.registry")
    registry_users(cluster)
    data_dir(cluster)


def host_port(host: str, port: int) -> str:
    """``host:port`` as registries and containerd spell an endpoint (IPv6 literals in brackets)."""
    try:
        if ipaddress.ip_address(host).version == 6:
            return f"[{host}]:{port}"
    except ValueError:
        pass
    return f"{host}:{port}"


def endpoints(cluster: Cluster) -> list[str]:
    """Every ``host:port`` clients may use for this registry: each registry host by name and address, and
    spec.registry.privateRegistry's host (a DNS name pointing at them)."""
    port = cluster.spec.registry.port
    out = []
    for h in cluster.hosts_with_role("registry"):
        out += [host_port(a, port) for a in (h.name, h.address, h.internal_ip)]
    private = cluster.spec.registry.private_registry
    if private:
        host = private.partition("/")[0]
        out.append(host)
        if split_host_port(host)[1] is None:
            out.append(host_port(host.strip("[]"), port))
    return list(dict.fromkeys(out))


def main_endpoint(cluster: Cluster) -> str:
    """The endpoint to name to a user: spec.registry.privateRegistry's host, else the first registry host's
    address."""
    private = cluster.spec.registry.private_registry
    if private:
        return private.partition("/")[0]
    hosts = cluster.hosts_with_role("registry")
    if not hosts:
        raise KubexmError("no host has the role registry", hint="list the registry hosts in spec.roleGroups.registry")
    return host_port(hosts[0].address, cluster.spec.registry.port)


def registry_users(cluster: Cluster) -> list[RegistryAuth]:
    """The htpasswd users: spec.registry.auths entries for one of the registry's endpoints (the entry the
    nodes' container runtime uses to pull from it too)."""
    mine = set(endpoints(cluster))
    users: dict[str, RegistryAuth] = {}
    for auth in cluster.spec.registry.auths:
        if auth.registry in mine:
            users.setdefault(auth.username, auth)
    if not users:
        first = main_endpoint(cluster)
        raise KubexmError(f"spec.registry.auths has no entry for the registry ({first}); its users come from there",
                          hint=f"add an auths entry with registry: {first}, a username and a password")
    return list(users.values())


def data_dir(cluster: Cluster) -> str:
    value = cluster.spec.registry.data_dir
    normal = "/" + posixpath.normpath(value).lstrip("/")
    if normal in _SYSTEM_DIRS:
        raise KubexmError(f"spec.registry.dataDir {value!r} is a system directory; registry down --purge would "
                          "delete it", hint="use a directory of its own, e.g. /var/lib/docker-registry")
    return normal


def server_cert_spec(cluster: Cluster, host: str) -> CertSpec:
    """The registry host's serving certificate: its name and addresses, loopback (the health check), and the
    private registry's name."""
    h = cluster.host(host)
    dns, ips = [h.name, "localhost"], ["127.0.0.1", "::1"]
    names = [h.address, h.internal_ip]
    private = cluster.spec.registry.private_registry
    if private:
        names.append(split_host_port(private.partition("/")[0])[0])
    for name in names:
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return CertSpec(f"registry/nodes/{host}/server", h.name, REGISTRY_CA.path, (), tuple(dict.fromkeys(dns)),
                    tuple(dict.fromkeys(ips)), ("server",))


def cert_specs(cluster: Cluster) -> list[CertSpec]:
    return [REGISTRY_CA, *(server_cert_spec(cluster, name) for name in registry_hosts(cluster))]


def config_text(cluster: Cluster, *, cert: str = CERT_FILE, key: str = KEY_FILE, htpasswd: str = HTPASSWD_FILE,
                root: str | None = None, listen: str | None = None) -> bytes:
    """config.yml for distribution 2.x, by the YAML writer (every string quoted: Go reads YAML 1.1). The paths
    are the host's; tests run the same config from a temporary directory."""
    from kubexm.kube.kubeadm import dump_go_yaml

    doc = {
        "version": "0.1",
        "log": {"level": "info", "fields": {"service": "registry"}},
        "storage": {"filesystem": {"rootdirectory": root or data_dir(cluster)}, "cache": {"blobdescriptor": "inmemory"},
                    "maintenance": {"uploadpurging": {"enabled": True, "age": "168h", "interval": "24h",
                                                      "dryrun": False}}},
        "http": {"addr": listen or f":{cluster.spec.registry.port}", "headers": {"X-Content-Type-Options": ["nosniff"]},
                 "tls": {"certificate": cert, "key": key}},
        "auth": {"htpasswd": {"realm": "kubexm-registry", "path": htpasswd}},
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
    return ("# Managed by kubexm: edits are replaced on the next run.\n" + dump_go_yaml([doc])).encode()


def htpasswd_text(users: list[RegistryAuth]) -> bytes:
    import bcrypt

    lines = []
    for u in users:
        hashed = bcrypt.hashpw(u.password.get_secret_value().encode(), bcrypt.gensalt(BCRYPT_ROUNDS)).decode()
        lines.append(f"{u.username}:{hashed}\n")
    return "".join(lines).encode()


def htpasswd_matches(text: str, users: list[RegistryAuth]) -> bool:
    """Whether the file on the host holds exactly these users with these passwords (a bcrypt hash differs on
    every run, so the passwords are checked against it instead of comparing content)."""
    import bcrypt

    have: dict[str, str] = {}
    for line in text.splitlines():
        if line.strip():
            name, _, hashed = line.partition(":")
            have[name] = hashed
    if set(have) != {u.username for u in users}:
        return False
    try:
        return all(bcrypt.checkpw(u.password.get_secret_value().encode(), have[u.username].encode()) for u in users)
    except ValueError:  # not a bcrypt hash
        return False


@dataclass(frozen=True)
class EnsureRegistryPKI(Step):
    """The registry CA and each registry host's serving certificate on the deploy machine (the CA is reused)."""

    def describe(self) -> str:
        return "generate registry certificates (reuse the CA)"

    async def check(self, host: HostContext) -> bool:
        from kubexm.steps.etcd import cluster_pki

        return not cluster_pki(host.cluster).pending(cert_specs(host.cluster))

    async def run(self, host: HostContext) -> None:
        from kubexm.steps.etcd import cluster_pki

        changes = cluster_pki(host.cluster).ensure(cert_specs(host.cluster))
        host.emit("message", message="; ".join(f"{c.path}: {c.reason}" for c in changes))


@dataclass(frozen=True)
class PlaceRegistryCerts(Step):
    """The CA, and this host's certificate and key (readable by the registry's user, nobody else)."""

    check_unprivileged: ClassVar[bool] = False

    def describe(self) -> str:
        return f"place the registry's certificate in {TLS_DIR}"

    def _files(self, host: HostContext) -> list[tuple[bytes, str, int, str]] | None:
        from kubexm.steps.etcd import cluster_pki

        pki = cluster_pki(host.cluster)
        leaf = server_cert_spec(host.cluster, host.name).path
        try:
            return [(pki.crt(REGISTRY_CA.path).read_bytes(), CA_FILE, 0o644, "root:root"),
                    (pki.crt(leaf).read_bytes(), CERT_FILE, 0o644, "root:root"),
                    (pki.key(leaf).read_bytes(), KEY_FILE, 0o640, OWNER)]
        except FileNotFoundError:
            return None  # not issued yet: a plan shows the step as a change

    async def check(self, host: HostContext) -> bool:
        files = self._files(host)
        if files is None:
            return False
        for data, remote, mode, owner in files:
            got, attrs = await host.file_state(remote)
            if got != hashlib.sha256(data).hexdigest() or attrs != file_attrs(mode, owner):
                return False
        return True

    async def run(self, host: HostContext) -> None:
        files = self._files(host)
        if files is None:
            raise StepFailed("the registry's certificates are not issued yet",
                             hint="run `kubexm registry up` (its first task issues them)")
        await host.run(sh("mkdir", "-p", "--", TLS_DIR) & sh("chmod", "0755", "--", CONF_DIR, TLS_DIR))
        for data, remote, mode, owner in files:
            if await host.upload(data, remote, mode=mode, owner=owner):
                host.vars.setdefault("changed_files", set()).add(remote)


@dataclass(frozen=True)
class RegistryHtpasswd(Step):
    """The htpasswd file of spec.registry.auths' users for this registry (bcrypt); rewritten only when a user
    or password changed. Hashes travel in the file transfer, never on a command line."""

    def describe(self) -> str:
        return f"write the registry's users to {HTPASSWD_FILE}"

    async def check(self, host: HostContext) -> bool:
        res = await host.run(sh("cat", "--", HTPASSWD_FILE, readonly=True), check=False)
        if not res.ok or not htpasswd_matches(res.stdout, registry_users(host.cluster)):
            return False
        _, attrs = await host.file_state(HTPASSWD_FILE)
        return attrs == file_attrs(0o640, OWNER)

    async def run(self, host: HostContext) -> None:
        res = await host.run(sh("cat", "--", HTPASSWD_FILE, readonly=True), check=False)
        users = registry_users(host.cluster)
        if res.ok and htpasswd_matches(res.stdout, users):
            await host.run(sh("chown", "--", OWNER, HTPASSWD_FILE) & sh("chmod", "0640", "--", HTPASSWD_FILE))
            return
        await host.run(sh("mkdir", "-p", "--", CONF_DIR))
        await host.upload(htpasswd_text(users), HTPASSWD_FILE, mode=0o640, owner=OWNER)
        host.vars.setdefault("changed_files", set()).add(HTPASSWD_FILE)


@dataclass(frozen=True)
class RegistryDataDir(Step):
    """spec.registry.dataDir, owned by the registry's user (the package creates only its default)."""

    def describe(self) -> str:
        return "create the registry's storage directory"

    def _probe(self, path: str) -> Cmd:
        return shell("stat -c '%U:%G %a' -- {path}", path=path, readonly=True).no_stderr()

    async def check(self, host: HostContext) -> bool:
        res = await host.run(self._probe(data_dir(host.cluster)), check=False)
        return res.ok and res.stdout.strip() == f"{SERVICE_USER}:{SERVICE_USER} 750"

    async def run(self, host: HostContext) -> None:
        path = data_dir(host.cluster)
        await host.run(sh("mkdir", "-p", "--", path) & sh("chown", "--", f"{SERVICE_USER}:{SERVICE_USER}", path)
                       & sh("chmod", "0750", "--", path))


def curl_config(user: RegistryAuth) -> str:
    """curl's ``--config`` text with the credentials, given on stdin: never in argv, where ``ps`` shows it."""
    secret = f"{user.username}:{user.password.get_secret_value()}"
    return 'user = "' + secret.replace("\\", "\\\\").replace('"', '\\"') + '"\n'


def health_command(port: int, authenticated: bool) -> Cmd:
    """GET /v2/ on the host itself over TLS with the registry's CA; prints the body, then the status code."""
    url = f"https://127.0.0.1:{port}/v2/"
    if authenticated:
        return sh("curl", "-sS", "--max-time", "5", "--cacert", CA_FILE, "-w", "\\n%{http_code}", "-K", "-", url,
                  readonly=True)
    return sh("curl", "-sS", "--max-time", "5", "--cacert", CA_FILE, "-w", "\\n%{http_code}", url, readonly=True)


async def registry_health(host: HostContext) -> tuple[bool, str]:
    """(healthy, what was seen): /v2/ answers 200 to the first user and 401 without credentials."""
    port = host.cluster.spec.registry.port
    user = registry_users(host.cluster)[0]
    res = await host.run(health_command(port, True), check=False, stdin=curl_config(user),
                         timeout=host.timeout_for("check"))
    code = res.stdout.strip().rsplit("\n", 1)[-1] if res.ok else ""
    if code != "200":
        return False, (f"GET /v2/ as {user.username} answered {code}" if code else
                       f"GET /v2/ failed: {res.stderr.strip() or 'no answer'}")
    anon = await host.run(health_command(port, False), check=False, timeout=host.timeout_for("check"))
    anon_code = anon.stdout.strip().rsplit("\n", 1)[-1] if anon.ok else ""
    if anon_code != "401":
        return False, f"GET /v2/ without credentials answered {anon_code or 'nothing'} instead of 401"
    return True, f"https://127.0.0.1:{port}/v2/ answers 200 to {user.username} and 401 without credentials"


@dataclass(frozen=True)
class WaitRegistryHealthy(Step):
    """The registry answers over TLS, lets the configured user in and nobody else."""

    timeout: float = 60.0

    def describe(self) -> str:
        return "wait until the registry answers GET /v2/ over TLS with authentication"

    async def check(self, host: HostContext) -> bool:
        return (await registry_health(host))[0]

    async def run(self, host: HostContext) -> None:
        deadline = time.monotonic() + self.timeout
        last = ""
        while time.monotonic() < deadline:
            ok, last = await registry_health(host)
            if ok:
                host.emit("message", message=last)
                return
            await asyncio.sleep(1)
        raise StepFailed(f"the registry on {host.name} is not healthy after {self.timeout:.0f}s: {last}",
                         hint=f"see `journalctl -u {UNIT}` on {host.name}")


def _is_stopped() -> Cmd:
    return (sh("systemctl", "is-active", "-q", "--", UNIT, readonly=True).negate()
            & sh("systemctl", "is-enabled", "-q", "--", UNIT, readonly=True).no_stderr().negate())


@dataclass(frozen=True)
class StopRegistry(Step):
    """Stop and disable the registry; its images stay in the data directory."""

    def describe(self) -> str:
        return f"stop and disable {UNIT}"

    def check_script(self, host: HostContext) -> Cmd | None:
        return _is_stopped()

    async def check(self, host: HostContext) -> bool:
        return (await host.run(_is_stopped(), check=False)).ok

    async def run(self, host: HostContext) -> None:
        # A host where the package was never installed has no unit: nothing runs there, which is the goal.
        await host.run(shell("if systemctl cat -- {unit} >/dev/null 2>&1; then systemctl disable --now -- {unit}; fi",
                             unit=UNIT))


@dataclass(frozen=True)
class PurgeRegistry(Step):
    """Remove the registry's images and kubexm's config and drop-in (the package stays installed, stopped)."""

    def describe(self) -> str:
        return "delete the registry's images and configuration"

    def _paths(self, host: HostContext) -> list[str]:
        return [data_dir(host.cluster), CONF_DIR, DROPIN]

    def _absent(self, host: HostContext) -> Cmd:
        return shell("for p in {paths}; do test ! -e \"$p\" || exit 1; done", paths=self._paths(host), readonly=True)

    def check_script(self, host: HostContext) -> Cmd | None:
        return self._absent(host)

    async def check(self, host: HostContext) -> bool:
        return (await host.run(self._absent(host), check=False)).ok

    async def run(self, host: HostContext) -> None:
        await host.run(sh("rm", "-rf", "--", *self._paths(host)) & sh("rmdir", "--ignore-fail-on-non-empty", "--",
                                                                     DROPIN_DIR).no_stderr().orelse(sh("true"))
                       & sh("systemctl", "daemon-reload"))


def install_steps(host: HostContext) -> list[Step]:
    from kubexm.steps.common import PutFile, Systemd, Template
    from kubexm.steps.os import Packages

    return [
        # curl: the health check on the host itself.
        Packages(group="registry", names=(PACKAGE, "curl")),
        PlaceRegistryCerts(),
        RegistryHtpasswd(),
        RegistryDataDir(),
        PutFile(config_text(host.cluster), CONFIG_FILE, 0o644),
        Template("registry/docker-registry.conf.j2", DROPIN, 0o644, (("config", CONFIG_FILE),)),
        Systemd(UNIT, restart_on=RESTART_ON),
        WaitRegistryHealthy(),
    ]


def remove_steps(host: HostContext) -> list[Step]:
    steps: list[Step] = [StopRegistry()]
    if host.run_ctx.options.extra.get("purge"):
        steps.append(PurgeRegistry())
    return steps

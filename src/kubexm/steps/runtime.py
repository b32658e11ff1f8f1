"""Container runtime: containerd from packages, its config.toml, registry hosts, crictl; one runtime per node."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import posixpath
import re
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, script, sh, shell
from kubexm.spec.models import Cluster
from kubexm.steps.common import kubexm_command
from kubexm.templates import render

CONFIG = "/etc/containerd/config.toml"
CERTS_D = "/etc/containerd/certs.d"
CRICTL = "/etc/crictl.yaml"
RUNTIME_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
DOCKER_DAEMON = "/etc/docker/daemon.json"
CRI_DOCKER_UNIT = "/etc/systemd/system/cri-docker.service"
CRI_DOCKER_SOCKET = "/etc/systemd/system/cri-docker.socket"
CRIO_CONF = "/etc/crio/crio.conf.d/10-kubexm.conf"
CRIO_REGISTRIES = "/etc/containers/registries.conf.d/50-kubexm.conf"
CRIO_AUTH = "/etc/crio/auth.json"
# kubelet reads registry credentials from its root dir in docker's config.json format (all runtimes).
KUBELET_DOCKER_CONFIG = "/var/lib/kubelet/config.json"
IMAGE_DIR = "/var/lib/kubexm/images"

# The CRI endpoint kubelet, kubeadm and crictl talk to, per runtime.
CRI_SOCKETS = {
    "containerd": "unix:///run/containerd/containerd.sock",
    "docker": "unix:///run/cri-dockerd.sock",
    "crio": "unix:///var/run/crio/crio.sock",
}


def sandbox_image(cluster: Cluster) -> str:
    """The pause image: the spec's, else the one matching Kubernetes' minor, from the private registry if set."""
    rt = cluster.spec.container_runtime
    if rt.sandbox_image:
        return rt.sandbox_image
    tag = "3.10" if cluster.spec.kubernetes.minor >= 31 else "3.9"
    registry = cluster.spec.registry.private_registry or "registry.k8s.io"
    return f"{registry}/pause:{tag}"


def _auths(cluster: Cluster) -> list[dict[str, str]]:
    return [{"registry": a.registry, "username": a.username, "password": a.password.get_secret_value()}
            for a in cluster.spec.registry.auths]


MANAGED = "# Managed by kubexm: edits are replaced on the next run.\n"


def _toml(doc: dict[str, Any], header: str = MANAGED) -> str:
    # A TOML writer, not lines assembled from values: a registry name or password is a key or a string,
    # whatever characters it holds, and can never open a table of its own.
    return header + tomli_w.dumps(doc)


def containerd_config(cluster: Cluster) -> str:
    rt = cluster.spec.container_runtime
    registry: dict[str, Any] = {
        # Mirrors and insecure registries live in one hosts.toml per registry under this directory.
        "config_path": CERTS_D,
    }
    auths = _auths(cluster)
    if auths:
        registry["configs"] = {a["registry"]: {"auth": {"username": a["username"], "password": a["password"]}}
                               for a in auths}
    cri = {
        "sandbox_image": sandbox_image(cluster),
        "containerd": {
            "default_runtime_name": "runc",
            # Also used by kubexm's image imports, so imported images are unpacked where kubelet looks.
            "snapshotter": rt.snapshotter,
            "runtimes": {"runc": {
                "runtime_type": "io.containerd.runc.v2",
                # Must match kubelet's cgroupDriver (spec.kubernetes.cgroupDriver).
                "options": {"SystemdCgroup": cluster.spec.kubernetes.cgroup_driver == "systemd"},
            }},
        },
        "cni": {"bin_dir": "/opt/cni/bin", "conf_dir": "/etc/cni/net.d"},
        "registry": registry,
    }
    return _toml({"version": 2, "root": rt.data_root or "/var/lib/containerd", "state": "/run/containerd",
                  "grpc": {"address": "/run/containerd/containerd.sock"},
                  "plugins": {"io.containerd.grpc.v1.cri": cri}})


def crictl_config(cluster: Cluster) -> str:
    socket = CRI_SOCKETS[cluster.spec.container_runtime.type]
    return f"# Managed by kubexm.\nruntime-endpoint: {socket}\nimage-endpoint: {socket}\ntimeout: 10\n"


def docker_auth_json(cluster: Cluster) -> str | None:
    """Registry credentials in docker's config.json format (kubelet and CRI-O both read it)."""
    auths = _auths(cluster)
    if not auths:
        return None
    entries = {a["registry"]: {"auth": base64.b64encode(f"{a['username']}:{a['password']}".encode()).decode()}
               for a in auths}
    return json.dumps({"auths": entries}, indent=2, sort_keys=True) + "\n"


def docker_daemon_json(cluster: Cluster) -> str:
    """dockerd's daemon.json: cgroup driver matching kubelet, bounded logs, mirrors and insecure registries."""
    rt = cluster.spec.container_runtime
    conf: dict[str, object] = {
        "exec-opts": [f"native.cgroupdriver={cluster.spec.kubernetes.cgroup_driver}"],
        "log-driver": "json-file",
        "log-opts": {"max-size": "100m", "max-file": "5"},
        "storage-driver": "overlay2",
        # kubelet restarts pods itself; keeping containers up across a dockerd restart avoids an outage.
        "live-restore": True,
    }
    if rt.data_root:
        conf["data-root"] = rt.data_root
    mirrors = [e for m in rt.registry_mirrors if m.registry in DOCKER_HUB for e in m.endpoints]
    if any(u in DOCKER_HUB for u in mirrored_upstreams(cluster)):
        mirrors.insert(0, f"https://{private_mirror(cluster)}")
    if mirrors:
        conf["registry-mirrors"] = mirrors
    if rt.insecure_registries:
        conf["insecure-registries"] = list(rt.insecure_registries)
    return json.dumps(conf, indent=2) + "\n"


# Docker applies registry-mirrors to Docker Hub only; the spec validation refuses mirrors of other registries.
DOCKER_HUB = ("docker.io", "registry-1.docker.io", "index.docker.io")


def cri_dockerd_units(cluster: Cluster) -> dict[str, str]:
    values = {"sandbox_image": sandbox_image(cluster), "cgroup_driver": cluster.spec.kubernetes.cgroup_driver}
    return {CRI_DOCKER_UNIT: render("docker/cri-docker.service.j2", **values),
            CRI_DOCKER_SOCKET: render("docker/cri-docker.socket.j2", **values)}


def crio_config(cluster: Cluster) -> str:
    """A drop-in read after /etc/crio/crio.conf."""
    rt = cluster.spec.container_runtime
    doc: dict[str, Any] = {}
    if rt.data_root:
        doc["crio"] = {"root": rt.data_root}
    image = {"pause_image": sandbox_image(cluster)}
    if cluster.spec.registry.auths:
        image["global_auth_file"] = CRIO_AUTH
    doc.setdefault("crio", {}).update({
        # Must match kubelet's cgroupDriver (spec.kubernetes.cgroupDriver).
        "runtime": {"cgroup_manager": cluster.spec.kubernetes.cgroup_driver, "conmon_cgroup": "pod"},
        "image": image,
        "network": {"network_dir": "/etc/cni/net.d/",
                    "plugin_dirs": ["/opt/cni/bin/", "/usr/libexec/cni/", "/usr/lib/cni/"]},
    })
    return _toml(doc, MANAGED.replace("\n", " Read after /etc/crio/crio.conf.\n"))


def crio_registries(cluster: Cluster) -> str:
    """containers-registries.conf(5) v2: one [[registry]] per mirrored or insecure registry."""
    rt = cluster.spec.container_runtime
    entries: list[dict[str, Any]] = []
    for mirror in rt.registry_mirrors:
        entry: dict[str, Any] = {"prefix": mirror.registry, "location": mirror.registry,
                                 "insecure": mirror.registry in rt.insecure_registries}
        mirrors = []
        for endpoint in mirror.endpoints:
            location = endpoint.split("://", 1)[-1].rstrip("/")
            mirrors.append({"location": location, "insecure": location.split("/")[0] in rt.insecure_registries
                            or endpoint.startswith("http://")})
        if mirrors:
            entry["mirror"] = mirrors
        entries.append(entry)
    mirrored = {m.registry for m in rt.registry_mirrors}
    private = mirrored_upstreams(cluster)
    for upstream in private:
        first = {"location": private_mirror(cluster), "insecure": False}
        same = [e for e in entries if e["prefix"] == upstream]
        if same:
            same[0]["mirror"] = [first, *same[0].get("mirror", [])]
        else:
            entries.append({"prefix": upstream, "location": upstream, "insecure": False, "mirror": [first]})
    mirrored |= set(private)
    entries += [{"prefix": r, "location": r, "insecure": True} for r in rt.insecure_registries if r not in mirrored]
    header = "# Managed by kubexm: edits are replaced on the next run (containers-registries.conf(5), version 2).\n"
    return _toml({"registry": entries} if entries else {}, header)


def registry_hosts(cluster: Cluster) -> dict[str, str]:
    """hosts.toml per registry: the private registry first (with its CA), then the spec's mirrors, the upstream
    last; a registry with a CA on the node verifies TLS against it; insecure registries skip TLS verification."""
    rt = cluster.spec.container_runtime
    cas = registry_cas(cluster)
    tables: dict[str, dict[str, Any]] = {}

    def host_entry(endpoint: str, capabilities: list[str]) -> dict[str, Any]:
        entry: dict[str, Any] = {"capabilities": capabilities}
        name = endpoint.split("://", 1)[-1].split("/")[0]
        if name in rt.insecure_registries:
            entry["skip_verify"] = True
        elif name in cas:
            entry["ca"] = ca_path(CERTS_D, name)
        return entry

    for upstream in mirrored_upstreams(cluster):
        private = private_mirror(cluster)
        tables[upstream] = {"server": _upstream_server(upstream),
                            "host": {f"https://{private}": host_entry(private, ["pull", "resolve"])}}
    for mirror in rt.registry_mirrors:
        table = tables.setdefault(mirror.registry, {
            "server": mirror.registry if "://" in mirror.registry else f"https://{mirror.registry}", "host": {}})
        for endpoint in mirror.endpoints:
            table["host"].setdefault(endpoint, host_entry(endpoint, ["pull", "resolve"]))
    for registry in cas:
        if registry not in tables:
            url = f"https://{registry}"
            tables[registry] = {"server": url, "host": {url: host_entry(registry, ["pull", "resolve", "push"])}}
    for registry in rt.insecure_registries:
        if registry not in tables:
            url = f"https://{registry}"
            tables[registry] = {"server": url, "host": {url: {
                "capabilities": ["pull", "resolve", "push"], "skip_verify": True}}}
    return {r: tomli_w.dumps(t if t.get("host") else {"server": t["server"]}) for r, t in tables.items()}


# Where each runtime reads a registry's CA: containerd's hosts.toml names it, docker and CRI-O (containers/image)
# read every *.crt in their certs.d/<host:port>/ directory.
DOCKER_CERTS_D = "/etc/docker/certs.d"
CONTAINERS_CERTS_D = "/etc/containers/certs.d"


def ca_path(root: str, registry: str) -> str:
    return posixpath.join(posixpath.dirname(hosts_toml_path(registry)).replace(CERTS_D, root, 1), "ca.crt")


def registry_cas(cluster: Cluster) -> dict[str, bytes]:
    """{host[:port]: CA certificate (PEM)} of the registries nodes verify with a CA of their own: every endpoint
    of the registry kubexm runs (spec.registry.type docker-registry, its CA from kubexm's PKI) and each
    spec.registry.auths entry with a caFile."""
    out: dict[str, bytes] = {}
    reg = cluster.spec.registry
    if reg.type == "docker-registry" and cluster.hosts_with_role("registry"):
        from kubexm.steps.etcd import cluster_pki
        from kubexm.steps.registry import REGISTRY_CA, endpoints

        try:
            pem = cluster_pki(cluster).crt(REGISTRY_CA.path).read_bytes()
        except FileNotFoundError:
            raise StepFailed("the private registry's CA does not exist yet (spec.registry.type is docker-registry)",
                             hint="run `kubexm registry up -f CLUSTER_FILE` first: it issues the CA the nodes "
                                  "trust") from None
        out.update({e: pem for e in endpoints(cluster)})
    for auth in reg.auths:
        if auth.ca_file and auth.registry not in out:
            try:
                out[auth.registry] = Path(auth.ca_file).expanduser().read_bytes()
            except OSError as exc:
                raise StepFailed(f"cannot read spec.registry.auths caFile {auth.ca_file} for {auth.registry}: "
                                 f"{exc.strerror or exc}", hint="fix the path in the cluster file") from None
    return out


def private_mirror(cluster: Cluster) -> str:
    """The endpoint nodes pull upstream images through: spec.registry.privateRegistry's host, else the first
    registry host's address (``host:port``)."""
    from kubexm.steps.registry import main_endpoint

    return main_endpoint(cluster)


def mirrored_upstreams(cluster: Cluster) -> list[str]:
    """Upstream registries of the images the cluster needs, pulled through the private registry kubexm runs.

    `kubexm offline sync` stores registry.k8s.io/pause:3.10 as <registry>/pause:3.10 (the host dropped), which is
    the path a mirror request for the upstream name asks for. A namespace override or a path in privateRegistry
    changes that path: then only the rewritten names (which name the private registry) reach it."""
    reg = cluster.spec.registry
    if reg.type != "docker-registry" or not cluster.hosts_with_role("registry") or reg.namespace_override or \
            "/" in (reg.private_registry or ""):
        return []
    from kubexm.offline.images import registry_of, required_images

    private = set(registry_cas(cluster))
    try:
        upstreams = {registry_of(i.ref) for i in required_images(cluster).images}
    except KubexmError:  # a version whose image list kubexm does not know: the registries its images come from
        upstreams = set(UPSTREAM_REGISTRIES)
    return sorted(upstreams - private)


UPSTREAM_REGISTRIES = ("registry.k8s.io", "docker.io", "quay.io", "ghcr.io")


def _upstream_server(registry: str) -> str:
    return "https://registry-1.docker.io" if registry in DOCKER_HUB else f"https://{registry}"


def ca_files(cluster: Cluster, root: str) -> dict[str, tuple[str, int]]:
    """{remote path: (CA PEM, mode)} for each registry with a CA, under a runtime's certs.d ``root``."""
    return {ca_path(root, r): (pem.decode(), 0o644) for r, pem in registry_cas(cluster).items()}


# A registry names a directory under certs.d: nothing that could leave it or hide in a listing.
_UNSAFE_DIR_NAME = re.compile(r"[/\s\x00-\x1f\x7f]|\.\.")


def hosts_toml_path(registry: str) -> str:
    """certs.d/<registry>/hosts.toml, refused (one line) for a name that is not a plain ``host[:port]``."""
    if not registry or registry == "." or _UNSAFE_DIR_NAME.search(registry):
        raise StepFailed(f"registry {registry!r} cannot name a directory under {CERTS_D}",
                         hint="registry mirrors and insecure registries are host[:port], without a scheme or path")
    return posixpath.join(CERTS_D, registry, "hosts.toml")


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


@dataclass(frozen=True)
class RefuseRuntimeSwitch(Step):
    """A node keeps the runtime it has: switching moves every container and image, which kubexm does not do."""

    mutates = False

    def describe(self) -> str:
        return "make sure no other container runtime runs here"

    async def run(self, host: HostContext) -> None:
        wanted = host.cluster.spec.container_runtime.type
        res = await host.run(_ACTIVE_RUNTIMES, check=False)
        active = [s for s in res.stdout.split() if s != wanted]
        # docker ships its own containerd; that one belongs to docker, not a second runtime.
        if wanted == "docker":
            active = [s for s in active if s != "containerd"]
        if active:
            role = "control-plane" if "control-plane" in host.roles else "worker"
            remove = kubexm_command(host, "delete", "nodes", "--nodes", host.name)
            add = kubexm_command(host, "add", "nodes", "--nodes", host.name, "--role", role)
            raise StepFailed(f"{host.name} already runs {', '.join(active)}, the spec asks for {wanted}",
                             hint=f"kubexm does not switch runtimes on a node: remove it (`{remove}`), uninstall "
                                  f"{', '.join(active)} there and add it back (`{add}`), or set "
                                  "spec.containerRuntime.type")


_ACTIVE_RUNTIMES = script('for s in docker crio containerd; do systemctl is-active -q "$s" 2>/dev/null && echo "$s"; '
                          'done; true', readonly=True)


class ConfigFiles(Step):
    """Files rendered from the spec, compared by sha256; changed paths are recorded so units restart."""

    check_unprivileged = True  # matching checksums cannot come from missing permissions

    @abstractmethod
    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        """{remote path: (content, mode)} this step keeps in place."""

    async def check(self, host: HostContext) -> bool:
        for path, (text, _) in self.files(host.cluster).items():
            if await host.sha256(path) != _sha(text):
                return False
        return True

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        return {path: _sha(text) for path, (text, _) in self.files(host.cluster).items()}

    async def run(self, host: HostContext) -> None:
        for path, (text, mode) in self.files(host.cluster).items():
            if await host.upload(text.encode(), path, mode=mode):
                host.vars.setdefault("changed_files", set()).add(path)


def _common_files(cluster: Cluster) -> dict[str, tuple[str, int]]:
    files = {CRICTL: (crictl_config(cluster), 0o644)}
    auth = docker_auth_json(cluster)
    if auth:
        files[KUBELET_DOCKER_CONFIG] = (auth, 0o600)
    return files


@dataclass(frozen=True)
class ContainerdConfig(ConfigFiles):
    """config.toml (cgroup driver, sandbox image, snapshotter, auths), a hosts.toml per mirrored or insecure
    registry, crictl.yaml; CNI plugins linked where kubelet looks for them."""

    def describe(self) -> str:
        return f"write {CONFIG} and registry hosts"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        files = {CONFIG: (containerd_config(cluster), 0o600), **_common_files(cluster)}
        for registry, text in registry_hosts(cluster).items():
            files[hosts_toml_path(registry)] = (text, 0o644)
        files.update(ca_files(cluster, CERTS_D))
        return files

    async def check(self, host: HostContext) -> bool:
        return await super().check(host) and (await host.run(_CNI_LINKED, check=False)).ok

    async def run(self, host: HostContext) -> None:
        await super().run(host)
        await host.run(_LINK_CNI)


@dataclass(frozen=True)
class DockerConfig(ConfigFiles):
    """daemon.json for dockerd, cri-dockerd's unit and socket (the CRI kubelet talks to), crictl.yaml."""

    def describe(self) -> str:
        return f"write {DOCKER_DAEMON} and the cri-dockerd units"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        files = {DOCKER_DAEMON: (docker_daemon_json(cluster), 0o644), **_common_files(cluster)}
        files.update({path: (text, 0o644) for path, text in cri_dockerd_units(cluster).items()})
        files.update(ca_files(cluster, DOCKER_CERTS_D))
        return files

    async def check(self, host: HostContext) -> bool:
        return await super().check(host) and (await host.run(_CNI_LINKED, check=False)).ok

    async def run(self, host: HostContext) -> None:
        await super().run(host)
        await host.run(_LINK_CNI)


@dataclass(frozen=True)
class CrioConfig(ConfigFiles):
    """A CRI-O drop-in (cgroup manager, pause image, auth file), registries.conf.d entries, crictl.yaml."""

    def describe(self) -> str:
        return f"write {CRIO_CONF} and registry configuration"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        files = {CRIO_CONF: (crio_config(cluster), 0o644), CRIO_REGISTRIES: (crio_registries(cluster), 0o644),
                 **_common_files(cluster)}
        auth = docker_auth_json(cluster)
        if auth:
            files[CRIO_AUTH] = (auth, 0o600)
        files.update(ca_files(cluster, CONTAINERS_CERTS_D))
        return files


_CNI_LINKED = script("test ! -d /usr/lib/cni || test -e /opt/cni/bin/bridge", readonly=True)
# Distribution packages put CNI plugins in /usr/lib/cni; kubelet and CNI installers use /opt/cni/bin.
_LINK_CNI = script('mkdir -p /opt/cni/bin && if [ -d /usr/lib/cni ]; then for f in /usr/lib/cni/*; do '
                   'ln -sfn "$f" /opt/cni/bin/; done; fi')


def image_archives(cluster: Cluster) -> list[tuple[Path, list[str]]]:
    """(verified archive, image references in it) for every image archive of the local asset source."""
    source = cluster.spec.assets.local_source
    if not source or not cluster.spec.container_runtime.import_images:
        return []
    from kubexm.assets import LocalSource
    from kubexm.assets.images import archive_refs
    from kubexm.steps.binaries import asset_store

    local = LocalSource(Path(source).expanduser())
    try:
        entries = local.entries()
    except KubexmError:
        return []
    store = asset_store(cluster)
    out = []
    for e in entries:
        if e.get("component") == "image":
            _, path = store.get("image", str(e["version"]), str(e["arch"]), name=str(e.get("name", "")))
            out.append((path, archive_refs(path)))
    return out


# containerd's namespace as one option word: a read-only command's sub-command is its first operand.
_CTR = ("ctr", "--namespace=k8s.io")


def present_command(runtime: str, refs: list[str]) -> Cmd:
    """Prints which of ``refs`` the runtime holds (containerd: every image it holds)."""
    if runtime == "containerd":
        return sh(*_CTR, "images", "ls", "-q", readonly=True)
    if runtime == "docker":
        return shell('for r in {refs}; do docker image inspect "$r" >/dev/null 2>&1 && echo "$r"; done; true',
                     refs=refs, readonly=True)
    return shell('for r in {refs}; do skopeo inspect --raw "containers-storage:$r" >/dev/null 2>&1 '
                 '&& echo "$r"; done; true', refs=refs, readonly=True)


def import_command(cluster: Cluster, remote: str, refs: list[str]) -> Cmd:
    rt = cluster.spec.container_runtime
    if rt.type == "containerd":
        return sh(*_CTR, "images", "import", "--snapshotter", rt.snapshotter, remote)
    if rt.type == "docker":
        return sh("docker", "load", "-i", remote)
    copies = [sh("skopeo", "copy", "--quiet", f"docker-archive:{remote}:{r}", f"containers-storage:{r}") for r in refs]
    out = copies[0]
    for c in copies[1:]:
        out = out & c
    return out


@dataclass(frozen=True)
class ImportImages(Step):
    """Image archives from the local asset source imported into the runtime, skipped when already present."""

    def describe(self) -> str:
        return "import image archives from the local asset source"

    async def _archives(self, host: HostContext) -> list[tuple[Path, list[str]]]:
        key = "image-archives"
        shared = host.run_ctx.shared
        if key not in shared:
            shared[key] = await asyncio.to_thread(image_archives, host.cluster)
        found: list[tuple[Path, list[str]]] = shared[key]
        return found

    async def _missing(self, host: HostContext) -> list[tuple[Path, list[str]]]:
        archives = await self._archives(host)
        if not archives:
            return []
        from kubexm.assets.images import normalize

        refs = sorted({r for _, rs in archives for r in rs})
        rt = host.cluster.spec.container_runtime.type
        res = await host.run(present_command(rt, refs), check=False)
        have = {normalize(line.strip()) for line in res.stdout.splitlines() if line.strip()}
        return [(path, rs) for path, rs in archives if not set(rs) <= have]

    async def check(self, host: HostContext) -> bool:
        try:
            return not await self._missing(host)
        except KubexmError as exc:
            raise StepFailed(exc.message, exc.hint) from None

    async def run(self, host: HostContext) -> None:
        missing = await self._missing(host)
        await host.run(sh("mkdir", "-p", IMAGE_DIR))
        for path, refs in missing:
            remote = posixpath.join(IMAGE_DIR, path.name)
            await host.upload(path, remote, mode=0o600)
            # The archive is removed after a successful import: images can be large, the runtime holds them now.
            await host.run(import_command(host.cluster, remote, refs) & sh("rm", "-f", remote), timeout=1800,
                           display=f"import {', '.join(refs)}")
        still = await self._missing(host)
        if still:
            names = ", ".join(r for _, rs in still for r in rs)
            raise StepFailed(f"images still missing after import: {names}",
                             hint="check the archive's platform matches the node and the runtime's logs")
        host.emit("message", message=f"imported {sum(len(rs) for _, rs in missing)} image(s)")

"""Container runtime: containerd from packages, its config.toml, registry hosts, crictl; one runtime per node."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import shlex
from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.spec.models import Cluster
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


def containerd_config(cluster: Cluster) -> str:
    rt = cluster.spec.container_runtime
    return render("containerd/config.toml.j2", data_root=rt.data_root or "/var/lib/containerd",
                  sandbox_image=sandbox_image(cluster), systemd_cgroup=cluster.spec.kubernetes.cgroup_driver == "systemd",
                  snapshotter=rt.snapshotter, auths=_auths(cluster))


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
    rt = cluster.spec.container_runtime
    return render("crio/10-kubexm.conf.j2", data_root=rt.data_root, sandbox_image=sandbox_image(cluster),
                  cgroup_manager=cluster.spec.kubernetes.cgroup_driver,
                  auth_file=CRIO_AUTH if cluster.spec.registry.auths else None)


def crio_registries(cluster: Cluster) -> str:
    """containers-registries.conf(5) v2: one [[registry]] per mirrored or insecure registry."""
    rt = cluster.spec.container_runtime
    entries = []
    for mirror in rt.registry_mirrors:
        locations = [e.split("://", 1)[-1].rstrip("/") for e in mirror.endpoints]
        entries.append({"prefix": mirror.registry, "location": mirror.registry,
                        "insecure": mirror.registry in rt.insecure_registries,
                        "mirrors": [(loc, loc.split("/")[0] in rt.insecure_registries or
                                     e.startswith("http://")) for loc, e in zip(locations, mirror.endpoints, strict=True)]})
    mirrored = {m.registry for m in rt.registry_mirrors}
    entries += [{"prefix": r, "location": r, "insecure": True, "mirrors": []}
                for r in rt.insecure_registries if r not in mirrored]
    return render("crio/registries.conf.j2", registries=entries)


def registry_hosts(cluster: Cluster) -> dict[str, str]:
    """hosts.toml per registry: mirrors first, the upstream last; insecure registries skip TLS verification."""
    rt = cluster.spec.container_runtime
    out: dict[str, str] = {}
    for mirror in rt.registry_mirrors:
        server = mirror.registry if "://" in mirror.registry else f"https://{mirror.registry}"
        text = f'server = "{server}"\n'
        for endpoint in mirror.endpoints:
            text += f'\n[host."{endpoint}"]\n  capabilities = ["pull", "resolve"]\n'
            if endpoint.split("://", 1)[-1].split("/")[0] in rt.insecure_registries:
                text += "  skip_verify = true\n"
        out[mirror.registry] = text
    for registry in rt.insecure_registries:
        out.setdefault(registry, f'server = "https://{registry}"\n\n[host."https://{registry}"]\n'
                                 '  capabilities = ["pull", "resolve", "push"]\n  skip_verify = true\n')
    return out


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
        res = await host.run("for s in docker crio containerd; do systemctl is-active -q $s 2>/dev/null && echo $s; "
                             "done; true", check=False)
        active = [s for s in res.stdout.split() if s != wanted]
        # docker ships its own containerd; that one belongs to docker, not a second runtime.
        if wanted == "docker":
            active = [s for s in active if s != "containerd"]
        if active:
            raise StepFailed(f"{host.name} already runs {', '.join(active)}, the spec asks for {wanted}",
                             hint="kubexm does not switch runtimes on a node: drain it, remove it "
                                  "(kubexm delete nodes) and add it back, or set spec.containerRuntime.type")


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
            files[f"{CERTS_D}/{registry}/hosts.toml"] = (text, 0o644)
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
        return files


_CNI_LINKED = "test ! -d /usr/lib/cni || test -e /opt/cni/bin/bridge"
# Distribution packages put CNI plugins in /usr/lib/cni; kubelet and CNI installers use /opt/cni/bin.
_LINK_CNI = ("mkdir -p /opt/cni/bin && if [ -d /usr/lib/cni ]; then for f in /usr/lib/cni/*; do "
             "ln -sfn \"$f\" /opt/cni/bin/; done; fi")


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


# Per runtime: print which of the given references are present; import one archive.
_PRESENT = {
    "containerd": "ctr -n k8s.io images ls -q",
    "docker": "for r in {refs}; do docker image inspect \"$r\" >/dev/null 2>&1 && echo \"$r\"; done; true",
    "crio": "for r in {refs}; do skopeo inspect --raw \"containers-storage:$r\" >/dev/null 2>&1 "
            "&& echo \"$r\"; done; true",
}


def import_command(cluster: Cluster, remote: str, refs: list[str]) -> str:
    rt = cluster.spec.container_runtime
    if rt.type == "containerd":
        return f"ctr -n k8s.io images import --snapshotter {shlex.quote(rt.snapshotter)} {remote}"
    if rt.type == "docker":
        return f"docker load -i {remote}"
    return " && ".join(f"skopeo copy --quiet docker-archive:{remote}:{shlex.quote(r)} "
                       f"containers-storage:{shlex.quote(r)}" for r in refs)


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
        res = await host.run(_PRESENT[rt].format(refs=" ".join(shlex.quote(r) for r in refs)), check=False)
        have = {normalize(line.strip()) for line in res.stdout.splitlines() if line.strip()}
        return [(path, rs) for path, rs in archives if not set(rs) <= have]

    async def check(self, host: HostContext) -> bool:
        try:
            return not await self._missing(host)
        except KubexmError as exc:
            raise StepFailed(exc.message, exc.hint) from None

    async def run(self, host: HostContext) -> None:
        missing = await self._missing(host)
        await host.run(f"mkdir -p {IMAGE_DIR}")
        for path, refs in missing:
            remote = f"{IMAGE_DIR}/{path.name}"
            await host.upload(path, remote, mode=0o600)
            # The archive is removed after a successful import: images can be large, the runtime holds them now.
            await host.run(f"{import_command(host.cluster, remote, refs)} && rm -f {remote}", timeout=1800,
                           display=f"import {', '.join(refs)}")
        still = await self._missing(host)
        if still:
            names = ", ".join(r for _, rs in still for r in rs)
            raise StepFailed(f"images still missing after import: {names}",
                             hint="check the archive's platform matches the node and the runtime's logs")
        host.emit("message", message=f"imported {sum(len(rs) for _, rs in missing)} image(s)")

"""Container runtime: containerd from packages, its config.toml, registry hosts, crictl; one runtime per node."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.spec.models import Cluster
from kubexm.templates import render

CONFIG = "/etc/containerd/config.toml"
CERTS_D = "/etc/containerd/certs.d"
CRICTL = "/etc/crictl.yaml"
RUNTIME_PACKAGES = ("containerd", "runc", "containernetworking-plugins")
OTHER_RUNTIMES = {"docker": "docker", "crio": "crio", "containerd": "containerd"}


def sandbox_image(cluster: Cluster) -> str:
    """The pause image: the spec's, else the one matching Kubernetes' minor, from the private registry if set."""
    rt = cluster.spec.container_runtime
    if rt.sandbox_image:
        return rt.sandbox_image
    tag = "3.10" if cluster.spec.kubernetes.minor >= 31 else "3.9"
    registry = cluster.spec.registry.private_registry or "registry.k8s.io"
    return f"{registry}/pause:{tag}"


def containerd_config(cluster: Cluster) -> str:
    rt = cluster.spec.container_runtime
    auths = [{"registry": a.registry, "username": a.username, "password": a.password.get_secret_value()}
             for a in cluster.spec.registry.auths]
    return render("containerd/config.toml.j2", data_root=rt.data_root or "/var/lib/containerd",
                  sandbox_image=sandbox_image(cluster), systemd_cgroup=cluster.spec.kubernetes.cgroup_driver == "systemd",
                  auths=auths)


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


@dataclass(frozen=True)
class ContainerdConfig(Step):
    """config.toml (cgroup driver, sandbox image, auths) and one hosts.toml per mirrored or insecure registry."""

    def describe(self) -> str:
        return f"write {CONFIG} and registry hosts"

    def _files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        files = {CONFIG: (containerd_config(cluster), 0o600), CRICTL: (
            "runtime-endpoint: unix:///run/containerd/containerd.sock\n"
            "image-endpoint: unix:///run/containerd/containerd.sock\ntimeout: 10\n", 0o644)}
        for registry, text in registry_hosts(cluster).items():
            files[f"{CERTS_D}/{registry}/hosts.toml"] = (text, 0o644)
        return files

    async def check(self, host: HostContext) -> bool:
        for path, (text, _) in self._files(host.cluster).items():
            if await host.sha256(path) != _sha(text):
                return False
        return (await host.run(_CNI_LINKED, check=False)).ok

    async def run(self, host: HostContext) -> None:
        for path, (text, mode) in self._files(host.cluster).items():
            if await host.upload(text.encode(), path, mode=mode):
                host.vars.setdefault("changed_files", set()).add(path)
        # Distribution packages put CNI plugins in /usr/lib/cni; kubelet and CNI installers use /opt/cni/bin.
        await host.run("mkdir -p /opt/cni/bin && if [ -d /usr/lib/cni ]; then for f in /usr/lib/cni/*; do "
                       "ln -sfn \"$f\" /opt/cni/bin/; done; fi")


_CNI_LINKED = "test ! -d /usr/lib/cni || test -e /opt/cni/bin/bridge"

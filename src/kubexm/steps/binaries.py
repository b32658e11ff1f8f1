"""Binaries from verified release assets: resolved once per run and architecture, installed by checksum."""

from __future__ import annotations

import asyncio
import shlex
from dataclasses import dataclass
from pathlib import Path

from kubexm.assets import Asset, AssetStore
from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.spec.models import Cluster

BIN = "/usr/local/bin"
ASSET_DIR = "/var/lib/kubexm/assets"

# The crictl release that matches each Kubernetes minor (cri-tools follows Kubernetes' numbering);
# newer minors use the newest one the catalog holds.
HELM_VERSION = "v3.15.4"
CRICTL_FOR_MINOR = {29: "v1.29.0", 30: "v1.30.0", 33: "v1.33.0", 34: "v1.34.0"}


def asset_store(cluster: Cluster) -> AssetStore:
    a = cluster.spec.assets
    return AssetStore(Path(a.local_source).expanduser() if a.local_source else None, a.mirror, a.checksums)


def component_version(cluster: Cluster, component: str) -> str:
    """The version of a component this cluster uses, from its spec."""
    spec = cluster.spec
    if component in ("kubeadm", "kubelet", "kubectl"):
        return spec.kubernetes.version
    if component == "etcd":
        return spec.etcd.version
    if component == "cri-dockerd":
        return spec.container_runtime.cri_dockerd_version
    if component == "helm":
        return HELM_VERSION
    if component == "crictl":
        minor = spec.kubernetes.minor
        return CRICTL_FOR_MINOR.get(minor) or CRICTL_FOR_MINOR[max(CRICTL_FOR_MINOR)]
    raise KubexmError(f"kubexm does not know which {component} version this cluster uses")


async def host_asset(host: HostContext, component: str) -> tuple[Asset, Path]:
    """The verified file of ``component`` for this host's architecture (fetched once per run and arch)."""
    arch = (await host.facts()).arch
    key = f"asset:{component}:{arch}"
    shared = host.run_ctx.shared
    if key not in shared:
        store = asset_store(host.cluster)
        version = component_version(host.cluster, component)
        shared[key] = await asyncio.to_thread(store.get, component, version, arch)
    found: tuple[Asset, Path] = shared[key]
    return found


def _is_archive(name: str) -> bool:
    return name.endswith((".tar.gz", ".tgz", ".tar"))


@dataclass(frozen=True)
class InstallBinaries(Step):
    """Install ``binaries`` of a release asset into /usr/local/bin (from its archive, or the file itself).

    A marker with the asset's sha256 makes the step idempotent and notices version changes.
    """

    component: str
    binaries: tuple[str, ...]

    def describe(self) -> str:
        return f"install {', '.join(self.binaries)} ({self.component} release)"

    @property
    def marker(self) -> str:
        return f"{ASSET_DIR}/{self.component}.installed"

    async def check(self, host: HostContext) -> bool:
        try:
            asset, _ = await host_asset(host, self.component)
        except KubexmError as exc:  # a plan shows the gap; a real run fails on it in run()
            raise StepFailed(exc.message, exc.hint) from None
        present = " && ".join(f"test -x {BIN}/{b}" for b in self.binaries)
        res = await host.run(f"cat {self.marker} && {present}", check=False)
        return res.ok and res.stdout.split()[:1] == [asset.sha256]

    async def run(self, host: HostContext) -> None:
        asset, path = await host_asset(host, self.component)
        remote = f"{ASSET_DIR}/{asset.file}"
        await host.upload(path, remote, mode=0o644)
        if _is_archive(asset.file):
            tmp = f"/tmp/kubexm-{self.component}-{asset.sha256[:12]}"
            find = " ".join(f'"$(find {tmp} -type f -name {shlex.quote(b)} | head -n1)"' for b in self.binaries)
            script = (f"rm -rf {tmp} && mkdir -p {tmp} && tar -xf {shlex.quote(remote)} -C {tmp} && "
                      f"for f in {find}; do test -n \"$f\" || {{ echo 'binary missing from the archive' >&2; "
                      f"exit 3; }}; install -m 0755 \"$f\" {BIN}/; done && rm -rf {tmp}")
        elif len(self.binaries) == 1:
            script = f"install -m 0755 {shlex.quote(remote)} {BIN}/{self.binaries[0]}"
        else:
            raise StepFailed(f"{asset.file} is a single file, {len(self.binaries)} binaries were asked for")
        await host.run(f"{script} && echo {asset.sha256} > {self.marker}", display=self.describe())
        for b in self.binaries:
            host.vars.setdefault("changed_files", set()).add(f"{BIN}/{b}")

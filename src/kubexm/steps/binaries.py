"""Binaries from verified release assets: resolved once per run and architecture, installed by checksum."""

from __future__ import annotations

import asyncio
import posixpath
import secrets
from dataclasses import dataclass
from pathlib import Path

from kubexm.assets import Asset, AssetStore
from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.selectors import DEPLOY
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.digest import parse_sha256, sha256_command
from kubexm.hosts.shell import Cmd, seq, sh, shell
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
        probe = sh("cat", "--", self.marker, readonly=True)
        for b in self.binaries:
            probe = probe & sh("test", "-x", posixpath.join(BIN, b), readonly=True)
        res = await host.run(probe, check=False)
        return res.ok and res.stdout.split()[:1] == [asset.sha256]

    async def run(self, host: HostContext) -> None:
        asset, path = await host_asset(host, self.component)
        remote = posixpath.join(ASSET_DIR, asset.file)
        await host.upload(path, remote, mode=0o644)
        install: Cmd
        if _is_archive(asset.file):
            install = _extract_and_install(remote, self.component, self.binaries)
        elif len(self.binaries) == 1:
            install = sh("install", "-m", "0755", remote, posixpath.join(BIN, self.binaries[0]))
        else:
            raise StepFailed(f"{asset.file} is a single file, {len(self.binaries)} binaries were asked for")
        await host.run(install & sh("echo", asset.sha256).to(self.marker), display=self.describe())
        for b in self.binaries:
            host.vars.setdefault("changed_files", set()).add(f"{BIN}/{b}")


def _extract_and_install(archive: str, component: str, binaries: tuple[str, ...]) -> Cmd:
    """Unpack ``archive`` into a private directory and install ``binaries`` from it into BIN.

    The directory is root's own (ASSET_DIR), with a name nobody can guess, created by a mkdir that fails if
    anything already has that name: no other user can pre-create it or plant a link in it. It goes away
    whatever happened.
    """
    work = posixpath.join(ASSET_DIR, f".extract-{component}-{secrets.token_hex(8)}")
    return shell(
        "mkdir -m 0700 {work} && {{ ( tar -xf {archive} -C {work} && for b in {binaries}; do "
        'f=$(find {work} -type f -name "$b" | head -n1); '
        'test -n "$f" || {{ echo "$b: missing from the archive" >&2; exit 3; }}; '
        'install -m 0755 "$f" {bin} || exit 1; done ); s=$?; rm -rf {work}; test "$s" -eq 0; }}',
        work=work, archive=archive, binaries=list(binaries), bin=BIN + "/")


# A release file goes through the relay when more nodes than this need it (the relay's seeds get it directly).
RELAY_SEEDS = 2
_RELAY_NEEDED = "relay-assets:needed"


@dataclass(frozen=True)
class RelayAssets(Step):
    """Release files the run's InstallBinaries steps will upload, relayed node to node ahead of them.

    Runs once, on the deploy machine (``spec.assets.relay``), for whichever tasks the run selected. Each
    file that more than RELAY_SEEDS nodes still need goes through ``kubexm.hosts.relay``: the deploy
    machine sends it to two nodes, which pass it on, every hop checking the sha256. The InstallBinaries
    steps then find it in place by its checksum and only install; whatever the relay could not deliver
    they upload themselves, as without the relay. A relay failure costs time, never the run.
    """

    def describe(self) -> str:
        return "relay release files node to node (spec.assets.relay)"

    async def check(self, host: HostContext) -> bool:
        needed = await self._needed(host.run_ctx)
        host.run_ctx.shared[_RELAY_NEEDED] = needed  # run() right after needs the same answer: no second probe
        return not needed

    async def run(self, host: HostContext) -> None:
        from kubexm.hosts.relay import PORT, distribute

        run = host.run_ctx
        needed = run.shared.pop(_RELAY_NEEDED, None)
        for asset, path, names in needed if needed is not None else await self._needed(run):
            try:
                dist = await distribute(run, names, path, posixpath.join(ASSET_DIR, asset.file), mode=0o644,
                                        seeds=RELAY_SEEDS, missing=True)  # _needed just checked every node
            except KubexmError as exc:  # e.g. a node went away: its own steps report it, the others upload
                host.emit("message", step=self.name, message=f"{asset.file}: not relayed ({exc.message}); "
                                                             "the install steps upload it directly")
                continue
            size = path.stat().st_size
            relayed = sorted(h for h, how in dist.how.items() if how == "relay")
            direct = sorted(h for h, how in dist.how.items() if how == "direct")
            note = (f"{asset.file}: {len(relayed)} node(s) by relay, {len(direct)} directly; the deploy machine "
                    f"sent {dist.bytes_sent / 1e6:.0f} MB instead of {len(names) * size / 1e6:.0f} MB")
            if dist.unreachable:
                a, b = dist.unreachable[0]
                note += (f". {a} could not pass it on to {b} over TCP {PORT}: open that port between nodes, "
                         "or set spec.assets.relay: false")
            elif dist.relay_failures:
                h, why = sorted(dist.relay_failures.items())[0]
                note += f". The relay failed on {len(dist.relay_failures)} node(s), e.g. {h}: {why}"
            elif not relayed and direct:
                note += ". No node could take part in a relay (each needs socat, which the OS module installs)"
            host.emit("message", step=self.name, message=note,
                      data={"file": asset.file, "relay": relayed, "direct": direct, "bytes_sent": dist.bytes_sent,
                            "unreachable": dist.unreachable})

    async def _needed(self, run: RunContext) -> list[tuple[Asset, Path, list[str]]]:
        """[(asset, local file, nodes that lack it)] for the files worth relaying, biggest first."""
        from kubexm.engine.executor import task_targets

        wanted: dict[str, set[str]] = {}  # node -> components its InstallBinaries steps need
        for task in run.plan:
            for name in task_targets(run, task):
                if name == DEPLOY:
                    continue
                try:
                    steps = task.steps_for(run.host(name))
                except KubexmError:
                    continue  # that task reports it itself when it runs
                wanted.setdefault(name, set()).update(s.component for s in steps if isinstance(s, InstallBinaries))
        lacking = await asyncio.gather(*(_lacking(run.host(n), comps) for n, comps in wanted.items() if comps))
        groups: dict[str, tuple[Asset, Path, list[str]]] = {}
        for name, assets in zip([n for n, c in wanted.items() if c], lacking, strict=True):
            for asset, path in assets:
                groups.setdefault(asset.sha256, (asset, path, []))[2].append(name)
        return sorted((g for g in groups.values() if len(g[2]) > RELAY_SEEDS), key=lambda g: -g[1].stat().st_size)


async def _lacking(host: HostContext, components: set[str]) -> list[tuple[Asset, Path]]:
    """The release files of ``components`` this node neither has installed (marker) nor holds (checksum)."""
    found: list[tuple[str, Asset, Path]] = []
    for component in sorted(components):
        try:
            asset, path = await host_asset(host, component)
        except KubexmError:
            continue  # e.g. not in the local source: the InstallBinaries step stops the run with the reason
        found.append((component, asset, path))
    if not found:
        return []
    markers = [shell('echo {component}="$(head -c 64 {marker} 2>/dev/null)"', component=c,
                     marker=InstallBinaries(c, ()).marker, readonly=True) for c, _, _ in found]
    paths = [posixpath.join(ASSET_DIR, a.file) for _, a, _ in found]
    probe = seq(*markers, sh("echo", "#sha256", readonly=True), sha256_command(paths, fast=True),
                sh("true", readonly=True))
    try:
        res = await host.run(probe, check=False, display="which release files are missing")
    except KubexmError:
        return []  # an unreachable node is left out of the relay; its own steps report it
    head, _, tail = res.stdout.partition("#sha256\n")
    installed = dict(line.split("=", 1) for line in head.splitlines() if "=" in line)
    digests = parse_sha256(tail)
    return [(a, p) for c, a, p in found
            if installed.get(c) != a.sha256 and digests.get(posixpath.join(ASSET_DIR, a.file)) != a.sha256]

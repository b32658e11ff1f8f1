"""Addons on the cluster: manifests applied with kubectl, charts installed with helm, from the first control plane.

What an addon is (a manifest kubexm renders, or a chart with values it computes) comes from
``kubexm.addons``; these steps only ship and apply it, idempotently (a marker holds the sha256 of what
was applied, and the objects must still exist).
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm.addons.release import AddonRelease, enabled_addons
from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import KubexmError, StepFailed
from kubexm.hosts.shell import sh
from kubexm.kube import commands
from kubexm.kube.kubeadm import dump_go_yaml
from kubexm.spec.models import Addon, Cluster

ADDON_DIR = "/etc/kubexm/addons"
# A DNS-1123 label (what the spec accepts as an addon name): safe as a file name under ADDON_DIR.
_ADDON_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def addon_path(addon: str, suffix: str) -> str:
    """A file of this addon under ADDON_DIR; a name that could leave the directory is refused."""
    if not _ADDON_NAME.match(addon):
        raise StepFailed(f"addon name {addon!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
                         "at most 63 characters)", hint="use the name spec.addons[].name gives it")
    return posixpath.join(ADDON_DIR, addon + suffix)


def user_addon(cluster: Cluster, addon: Addon) -> AddonRelease:
    """A generic addon of spec.addons: a chart (repo + chart + version + values) or manifests (files or URLs)."""
    if addon.chart:
        return AddonRelease(name=addon.name, namespace=addon.namespace, chart=addon.chart, chart_repo=addon.repo,
                            chart_version=addon.version, values=dict(addon.values))
    texts = []
    for source in addon.manifests:
        try:
            if "://" in source:
                with urllib.request.urlopen(source, timeout=60) as response:
                    texts.append(response.read().decode())
            else:
                texts.append(Path(source).expanduser().read_text())
        except OSError as exc:
            raise KubexmError(f"addon {addon.name}: cannot read manifest {source} ({exc})",
                              hint="fix spec.addons[].manifests (a readable file or a reachable URL)") from None
    if not texts:
        raise KubexmError(f"addon {addon.name} has neither a chart nor manifests",
                          hint="set spec.addons[].chart (with repo and version) or spec.addons[].manifests")
    return AddonRelease(name=addon.name, namespace=addon.namespace, manifest="\n---\n".join(texts))


def all_addons(cluster: Cluster) -> list[AddonRelease]:
    return [*enabled_addons(cluster), *(user_addon(cluster, a) for a in cluster.spec.addons if a.enabled)]


def _values_yaml(values: dict[str, Any]) -> str:
    # helm reads values as YAML 1.1: strings are quoted so "no" or "on" stay strings.
    return dump_go_yaml([json.loads(json.dumps(values))])


def local_chart(cluster: Cluster, release: AddonRelease) -> Path | None:
    """The chart's .tgz from the local asset source (component chart, name = chart, arch all), if it has one."""
    source = cluster.spec.assets.local_source
    if not source or not release.chart or not release.chart_version:
        return None
    from kubexm.assets import LocalSource, verified

    local = LocalSource(Path(source).expanduser())
    try:
        asset = local.find("chart", release.chart_version, "all", release.chart)
    except KubexmError:
        return None
    return verified(local.root / asset.file, asset) if asset else None


def fingerprint(release: AddonRelease) -> str:
    payload = json.dumps({"manifest": release.manifest, "chart": release.chart, "repo": release.chart_repo,
                          "version": release.chart_version, "values": release.values}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()


@dataclass(frozen=True)
class ApplyAddon(Step):
    """Install or update one addon; a re-run with the same content only checks that it is still there."""

    addon: str

    def describe(self) -> str:
        return f"install addon {self.addon}"

    def release(self, host: HostContext) -> AddonRelease:
        # Rendered once per run: user manifests may come from URLs.
        releases = host.run_ctx.shared.get("addons")
        if releases is None:
            releases = host.run_ctx.shared["addons"] = {r.name: r for r in all_addons(host.cluster)}
        if self.addon not in releases:
            raise StepFailed(f"addon {self.addon} is not enabled in the cluster file")
        found: AddonRelease = releases[self.addon]
        return found

    def _marker(self) -> str:
        return addon_path(self.addon, ".applied")

    async def check(self, host: HostContext) -> bool:
        release = self.release(host)
        marker = await host.read_text(self._marker())
        if marker is None or marker.strip() != fingerprint(release):
            return False
        if release.manifest is not None:
            present = await host.run(commands.manifest_present(addon_path(self.addon, ".yaml")), check=False)
        else:
            present = await host.run(commands.helm_status(release.name, release.namespace), check=False)
        return present.ok

    async def run(self, host: HostContext) -> None:
        release = self.release(host)
        await host.run(sh("mkdir", "-p", ADDON_DIR))
        if release.manifest is not None:
            path = addon_path(self.addon, ".yaml")
            await host.upload(release.manifest.encode(), path, mode=0o644)
            await host.run(commands.apply_manifest(path), timeout=600, display=f"kubectl apply {self.addon}")
        else:
            assert release.chart is not None
            values = addon_path(self.addon, "-values.yaml")
            await host.upload(_values_yaml(release.values).encode(), values, mode=0o600)
            chart, repo = release.chart, release.chart_repo
            local = local_chart(host.cluster, release)
            if local is not None:  # air-gapped: the chart archive comes from the local asset source
                chart, repo = posixpath.join(ADDON_DIR, local.name), None
                await host.upload(local, chart, mode=0o644)
            await host.run(commands.helm_upgrade(release.name, chart, release.namespace, values,
                                                 None if local else release.chart_version, repo),
                           timeout=900, display=f"helm upgrade --install {self.addon}")
        await host.upload((fingerprint(release) + "\n").encode(), self._marker(), mode=0o644)


@dataclass(frozen=True)
class RemoveAddon(Step):
    """`kubexm delete addon NAME`: helm uninstall, or kubectl delete of the applied manifest."""

    addon: str
    namespace: str = "default"

    def describe(self) -> str:
        return f"uninstall addon {self.addon}"

    async def check(self, host: HostContext) -> bool:
        return not await host.exists(addon_path(self.addon, ".applied"))

    async def run(self, host: HostContext) -> None:
        manifest = addon_path(self.addon, ".yaml")
        if await host.exists(manifest):
            await host.run(commands.delete_manifest(manifest), timeout=600)
        else:
            await host.run(commands.helm_uninstall(self.addon, self.namespace), timeout=600)
        await host.run(commands.remove(addon_path(self.addon, ".applied"), manifest,
                                       addon_path(self.addon, "-values.yaml")))

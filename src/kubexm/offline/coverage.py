"""Whether a bundle holds everything a cluster file needs: missing versions, images, packages, architectures."""

from __future__ import annotations

from kubexm.offline.bundle import Manifest
from kubexm.offline.fetch import needed_binaries, package_groups
from kubexm.offline.images import required_images
from kubexm.spec.models import Cluster


def cluster_arches(cluster: Cluster) -> list[str]:
    """Architectures of the cluster's hosts (amd64 where a host does not say)."""
    return sorted({h.arch or "amd64" for h in cluster.spec.hosts})


def missing(manifest: Manifest, cluster: Cluster) -> list[str]:
    """One line per thing the cluster needs that the bundle lacks; empty when it covers the cluster."""
    out: list[str] = []
    arches = cluster_arches(cluster)
    have_arches = [str(a) for a in manifest.meta.get("arches") or []]
    out += [f"architecture {a} (the bundle has {', '.join(have_arches) or 'none'})" for a in arches
            if a not in have_arches]
    items = manifest.items
    for component, version in needed_binaries(cluster):
        versions = sorted({i.version for i in items if i.component == component})
        for arch in arches:
            if not any((i.component, i.version, i.arch) == (component, version, arch) for i in items):
                out.append(f"{component} {version} ({arch})"
                           + (f"; the bundle has {', '.join(versions)}" if versions else ""))
    if any(i.component == "deb" for i in items) or manifest.meta.get("os"):
        for group, names in package_groups(cluster).items():
            for arch in arches:
                have = {i.name for i in items if i.component == "deb" and i.group == group and i.arch in (arch, "all")}
                out += [f"package {n} (group {group}, {arch})" for n in names if n not in have]
    images = {i.name: i for i in items if i.component == "image"}
    wanted = required_images(cluster)
    for image in wanted.images:
        item = images.get(image.ref)
        if item is None:
            out.append(f"image {image.ref} (needed by {image.needed_by})")
            continue
        out += [f"image {image.ref} for {a} (the bundle has {', '.join(item.platforms) or 'none'})"
                for a in arches if a not in item.platforms]
    if cluster.spec.kubernetes.deploy_mode == "kubeadm":
        from kubexm.steps.addons import all_addons

        for release in all_addons(cluster):
            if release.chart and not any((i.component == "chart" and (i.name, i.version) in
                                         ((release.chart, release.chart_version), (release.chart, "local"))) or
                                         i.source == release.chart for i in items):
                out.append(f"chart {release.chart} {release.chart_version or ''} (addon {release.name})")
    return out

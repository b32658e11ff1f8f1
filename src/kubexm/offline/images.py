"""The container images a cluster file needs: the one list `offline images`, `offline package` and
`offline verify` share.

Images come from what kubexm itself renders (static pods, manifests, the sandbox image) so the list cannot
drift from what a node will pull; each manifest is rendered twice, without and with the private registry,
which pairs every upstream reference with the name the nodes pull it by. kubeadm's own images come from a
kubeadm binary when one is at hand (its answer is exact, etcd and CoreDNS move within a minor), else from
the table below. Charts deploy images kubexm does not render: their lists for the chart versions kubexm
pins are in ``CHART_IMAGES``.
"""

from __future__ import annotations

import subprocess
import tempfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML

from kubexm.addons.images import _containers, rewrite_image, split_image
from kubexm.assets.images import normalize
from kubexm.errors import KubexmError
from kubexm.spec.models import Cluster

K8S_REGISTRY = "registry.k8s.io"
CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")

# kubeadm's constants (cmd/kubeadm/app/constants) per minor: (pause, CoreDNS, etcd). kubeadm bumps etcd and
# CoreDNS in patch releases too, so a kubeadm binary's own answer replaces this table whenever kubexm has one.
KUBEADM_TABLE: dict[int, tuple[str, str, str]] = {
    28: ("3.9", "v1.10.1", "3.5.15-0"),
    29: ("3.9", "v1.11.1", "3.5.16-0"),
    30: ("3.9", "v1.11.3", "3.5.15-0"),
    31: ("3.10", "v1.11.3", "3.5.15-0"),
    32: ("3.10", "v1.11.3", "3.5.16-0"),
    33: ("3.10", "v1.12.0", "3.5.21-0"),
    34: ("3.10.1", "v1.12.1", "3.6.4-0"),
}

# Images deployed by the charts kubexm installs, per chart version (the versions kubexm/addons pins). They
# cannot be read off kubexm's renderings: Calico's operator creates its DaemonSets at run time, the others
# would need the chart and helm. Sources: tigera-operator v3.29.2 = Calico v3.29.2's operator release and the
# calico/* images it deploys with the API server disabled (kubexm's values), from docker.io as that operator
# defaults to; cilium 1.16.6 = the chart's values.yaml (agent, operator-generic, envoy DaemonSet);
# nfs-subdir-external-provisioner 4.0.18 = the chart's values.yaml. Charts missing here (openebs, longhorn,
# user charts) are reported as not resolved; add them with their source once checked.
CHART_IMAGES: dict[str, dict[str, tuple[str, ...]]] = {
    "tigera-operator": {"v3.29.2": (
        "quay.io/tigera/operator:v1.36.5", "docker.io/calico/node:v3.29.2", "docker.io/calico/cni:v3.29.2",
        "docker.io/calico/kube-controllers:v3.29.2", "docker.io/calico/typha:v3.29.2",
        "docker.io/calico/pod2daemon-flexvol:v3.29.2", "docker.io/calico/csi:v3.29.2",
        "docker.io/calico/node-driver-registrar:v3.29.2")},
    "cilium": {"1.16.6": (
        "quay.io/cilium/cilium:v1.16.6", "quay.io/cilium/operator-generic:v1.16.6",
        "quay.io/cilium/cilium-envoy:v1.30.9-1737073743-40a016d11c0d863b772961ed0168eea6fe6b10a5")},
    "nfs-subdir-external-provisioner": {"4.0.18": ("registry.k8s.io/sig-storage/nfs-subdir-external-provisioner:v4.0.2",)},
}
# Manifest-list digests of upstream images, as the cilium 1.16.6 chart pins them.
DIGESTS = {
    "quay.io/cilium/cilium:v1.16.6": "sha256:1e0896b1c4c188b4812c7e0bed7ec3f5631388ca88325c1391a0ef9172c448da",
    "quay.io/cilium/operator-generic:v1.16.6":
        "sha256:13d32071d5a52c069fb7c35959a56009c6914439adc73e99e098917646d154fc",
    "quay.io/cilium/cilium-envoy:v1.30.9-1737073743-40a016d11c0d863b772961ed0168eea6fe6b10a5":
        "sha256:a69dfe0e54b24b0ff747385c8feeae0612cfbcae97bfcc8ee42a773bb3f69c88",
}


@dataclass(frozen=True)
class Image:
    """One image: its upstream reference (where it is fetched), the name nodes pull, and who needs it."""

    ref: str  # normalized upstream reference, e.g. registry.k8s.io/pause:3.10
    targets: tuple[str, ...]  # as the nodes pull it (private registry names when the spec has one)
    needed_by: str
    digest: str | None = None
    exact: bool = True  # False: from kubexm's table where the exact answer needs a kubeadm binary

    @property
    def target(self) -> str:
        return self.targets[0]

    @property
    def repository(self) -> str:
        return self.ref.split("@", 1)[0].rsplit(":", 1)[0] if ":" in self.ref.rsplit("/", 1)[-1] else self.ref

    @property
    def tag(self) -> str:
        last = self.ref.split("@", 1)[0].rsplit("/", 1)[-1]
        return last.split(":", 1)[1] if ":" in last else "latest"

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["targets"] = list(self.targets)
        return d


@dataclass
class ImageList:
    images: list[Image] = field(default_factory=list)
    unresolved: list[str] = field(default_factory=list)  # addons whose images kubexm cannot know, and why

    def add(self, ref: str, target: str, needed_by: str, exact: bool = True) -> None:
        ref = normalize(ref)
        for i, have in enumerate(self.images):
            if have.ref == ref:
                # One upstream image may be pulled under two names (kubeadm's and the runtime's pause).
                users = have.needed_by if needed_by in have.needed_by.split(", ") else f"{have.needed_by}, {needed_by}"
                targets = have.targets if target in have.targets else (*have.targets, target)
                self.images[i] = Image(have.ref, targets, users, have.digest, have.exact and exact)
                return
        self.images.append(Image(ref, (target,), needed_by, digests().get(ref), exact))

    def refs(self) -> list[str]:
        return [i.ref for i in self.images]


@lru_cache(maxsize=1)
def digests() -> dict[str, str]:
    return {normalize(k): v for k, v in DIGESTS.items()}


def _without_registry(cluster: Cluster) -> Cluster:
    spec = cluster.spec.model_copy(update={"registry": cluster.spec.registry.model_copy(
        update={"private_registry": None, "namespace_override": None})})
    return cluster.model_copy(update={"spec": spec})


def manifest_images(text: str) -> list[str]:
    """Every container image of a multi-document manifest, in document order (pod specs in ConfigMaps too)."""
    out: list[str] = []
    for doc in YAML(typ="safe").load_all(text):
        if not isinstance(doc, dict):
            continue
        out += [c["image"] for c in _containers(doc) if isinstance(c.get("image"), str)]
        if doc.get("kind") == "ConfigMap" and isinstance(doc.get("data"), dict):
            for key, value in doc["data"].items():
                if str(key).endswith((".yaml", ".yml")) and isinstance(value, str):
                    try:
                        out += manifest_images(value)
                    except Exception:  # not YAML after all
                        continue
    return out


def _paired(list_: ImageList, upstream: str, private: str, needed_by: str) -> None:
    """Images of one rendering without and with the private registry, paired by position."""
    ups, targets = manifest_images(upstream), manifest_images(private)
    if len(ups) != len(targets):  # cannot happen: the registry only renames images
        targets = ups
    for ref, target in zip(ups, targets, strict=True):
        list_.add(ref, target, needed_by)


def kubeadm_images(cluster: Cluster, kubeadm: Path | None = None) -> list[tuple[str, bool]]:
    """(upstream reference, exact) of what kubeadm pulls: its binary's answer if given, else the table."""
    plain = _without_registry(cluster)
    if kubeadm is not None:
        return [(ref, True) for ref in _ask_kubeadm(plain, kubeadm)]
    k8s = cluster.spec.kubernetes
    row = KUBEADM_TABLE.get(k8s.minor)
    if row is None:
        raise KubexmError(f"kubexm does not know kubeadm's images for Kubernetes {k8s.version}",
                          hint=f"known minors: {', '.join(f'1.{m}' for m in sorted(KUBEADM_TABLE))}; or put the "
                               "kubeadm binary in spec.assets.localSource so kubexm can ask it")
    pause, coredns, etcd = row
    refs = [f"{K8S_REGISTRY}/{name}:{k8s.version}" for name in CONTROL_PLANE]
    if not _replaces_kube_proxy(cluster):
        refs.append(f"{K8S_REGISTRY}/kube-proxy:{k8s.version}")
    refs += [f"{K8S_REGISTRY}/coredns/coredns:{coredns}", f"{K8S_REGISTRY}/pause:{pause}"]
    if cluster.spec.etcd.type == "kubeadm":
        refs.append(f"{K8S_REGISTRY}/etcd:{etcd}")
    return [(ref, False) for ref in refs]


def _replaces_kube_proxy(cluster: Cluster) -> bool:
    net = cluster.spec.network
    return net.plugin == "cilium" and net.cilium.kube_proxy_replacement


def _ask_kubeadm(cluster: Cluster, kubeadm: Path) -> list[str]:
    from kubexm.kube.kubeadm import cluster_configuration, dump

    with tempfile.TemporaryDirectory(prefix="kubexm-kubeadm-") as tmp:
        config = Path(tmp) / "kubeadm.yaml"
        config.write_text(dump([cluster_configuration(cluster, "127.0.0.1:6443")]))
        proc = subprocess.run([str(kubeadm), "config", "images", "list", "--config", str(config)],
                              capture_output=True, text=True, check=False, timeout=60)
    if proc.returncode != 0:
        raise KubexmError(f"`kubeadm config images list` failed: {proc.stderr.strip()[-300:]}",
                          hint="the kubeadm binary must run on this machine (same architecture)")
    refs = [line.strip() for line in proc.stdout.splitlines() if line.strip()]
    if _replaces_kube_proxy(cluster):  # kubeadm lists it, but kubexm skips the kube-proxy addon
        refs = [r for r in refs if "/kube-proxy:" not in r]
    return refs


def _kubeadm_target(cluster: Cluster, ref: str) -> str:
    """kubeadm pulls every image as <imageRepository>/<name>; CoreDNS loses its coredns/ sub-path there."""
    from kubexm.kube.kubeadm import image_repository

    if not cluster.spec.registry.private_registry:
        return ref
    return f"{image_repository(cluster)}/{ref.rsplit('/', 1)[-1]}"


def chart_images(chart: str, version: str, cluster: Cluster) -> list[str] | None:
    """The images a chart kubexm installs deploys at this version (None: kubexm does not know them)."""
    found = CHART_IMAGES.get(chart, {}).get(str(version))
    return list(found) if found is not None else None


def required_images(cluster: Cluster, kubeadm: Path | None = None) -> ImageList:
    """Every image the cluster file makes a node pull, each once, in install order."""
    from kubexm.addons.release import enabled_addons
    from kubexm.steps.addons import user_addon
    from kubexm.steps.runtime import sandbox_image

    plain = _without_registry(cluster)
    out = ImageList()
    if cluster.spec.kubernetes.deploy_mode == "kubeadm":
        for ref, exact in kubeadm_images(cluster, kubeadm):
            out.add(ref, _kubeadm_target(cluster, ref), "kubeadm", exact)
    out.add(sandbox_image(plain), sandbox_image(cluster), "container runtime (sandbox)")
    _balancer(cluster, plain, out)
    if cluster.spec.kubernetes.deploy_mode != "kubeadm":  # kubexm installs addons on kubeadm clusters only
        return out
    for plain_release, release in zip(enabled_addons(plain), enabled_addons(cluster), strict=True):
        if release.manifest is not None:
            assert plain_release.manifest is not None
            _paired(out, plain_release.manifest, release.manifest, release.name)
        else:
            assert release.chart is not None and release.chart_version is not None
            found = chart_images(release.chart, release.chart_version, cluster)
            if found is None:
                out.unresolved.append(f"{release.name}: kubexm does not know the images of chart {release.chart} "
                                      f"{release.chart_version}")
                continue
            for ref in found:
                out.add(ref, rewrite_image(ref, cluster), release.name)
    for addon in cluster.spec.addons:
        if not addon.enabled:
            continue
        if addon.chart:
            found = chart_images(addon.chart, addon.version or "", cluster)
            if found is None:
                out.unresolved.append(f"addon {addon.name}: chart {addon.chart} {addon.version or '(no version)'} "
                                      "is not rendered by kubexm; its images are not listed")
                continue
            for ref in found:
                out.add(ref, rewrite_image(ref, cluster), addon.name)
        else:
            release = user_addon(cluster, addon)
            assert release.manifest is not None
            for ref in manifest_images(release.manifest):
                # User manifests are applied as written: nodes pull exactly what they name.
                out.add(ref, ref, addon.name)
    return out


def _balancer(cluster: Cluster, plain: Cluster, out: ImageList) -> None:
    from kubexm.balancer.configs import internal_proxy_manifest, kube_vip_manifest

    lb = cluster.spec.control_plane_endpoint.load_balancer
    if lb == "kube-vip":
        _paired(out, kube_vip_manifest(plain, "eth0"), kube_vip_manifest(cluster, "eth0"), "kube-vip")
    elif lb == "internal":
        _paired(out, internal_proxy_manifest(plain), internal_proxy_manifest(cluster), "worker API proxy")


def registry_of(ref: str) -> str:
    return split_image(ref)[0]

"""The image list is what kubexm renders: every image of every manifest and static pod it writes is in it."""

from __future__ import annotations

from pathlib import Path

from kubexm.addons.release import enabled_addons
from kubexm.offline.images import manifest_images, required_images
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.runtime import sandbox_image


def cluster(*overrides: str, text: str | None = None) -> Cluster:
    return parse_cluster(text or sample_config("demo"), overrides=overrides)


def test_every_rendered_image_is_listed_under_the_name_nodes_pull() -> None:
    for plugin in ("calico", "flannel", "cilium"):
        c = cluster(f"spec.network.plugin={plugin}", "spec.dns.nodelocaldns=true",
                    "spec.registry.privateRegistry=reg.example.internal:5000", "spec.registry.namespaceOverride=mirror")
        listed = required_images(c)
        targets = {t for i in listed.images for t in i.targets}
        for release in enabled_addons(c):
            if release.manifest:
                assert set(manifest_images(release.manifest)) <= targets, release.name
        assert sandbox_image(c) in targets
        assert all(t.startswith("reg.example.internal:5000/") for i in listed.images for t in i.targets)


def test_kubeadm_images_follow_the_spec() -> None:
    refs = required_images(cluster()).refs()
    assert "registry.k8s.io/kube-proxy:v1.33.7" in refs
    assert not any("/etcd:" in r for r in refs)  # kubexm runs etcd from its release binaries
    stacked = required_images(cluster("spec.etcd.type=kubeadm")).refs()
    assert "registry.k8s.io/etcd:3.5.21-0" in stacked
    kpr = required_images(cluster("spec.network.plugin=cilium", "spec.network.cilium.kubeProxyReplacement=true"))
    assert not any("kube-proxy" in r for r in kpr.refs())
    assert "quay.io/cilium/cilium:v1.16.6" in kpr.refs()
    assert next(i for i in kpr.images if i.ref == "quay.io/cilium/cilium:v1.16.6").digest


def test_private_registry_names_match_kubeadm_and_the_runtime() -> None:
    c = cluster("spec.registry.privateRegistry=reg.example.internal:5000")
    by_ref = {i.ref: i.targets[0] for i in required_images(c).images}
    # kubeadm pulls CoreDNS as <imageRepository>/coredns once the repository is not registry.k8s.io.
    assert by_ref["registry.k8s.io/coredns/coredns:v1.12.0"] == "reg.example.internal:5000/coredns:v1.12.0"
    assert by_ref["docker.io/library/busybox:1.36"] == "reg.example.internal:5000/library/busybox:1.36"


def test_balancer_pods_and_user_addons(tmp_path: Path) -> None:
    vip = cluster("spec.controlPlaneEndpoint.loadBalancer=kube-vip", "spec.controlPlaneEndpoint.address=10.0.0.100")
    assert "ghcr.io/kube-vip/kube-vip:v0.8.9" in required_images(vip).refs()
    internal = cluster("spec.controlPlaneEndpoint.loadBalancer=internal")
    assert "docker.io/library/haproxy:2.8" in required_images(internal).refs()

    manifest = tmp_path / "app.yaml"
    manifest.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: a}\nspec:\n  template:\n    spec:\n"
                        "      containers: [{name: a, image: nginx:1.27}]\n")
    text = sample_config("demo").replace("spec:\n", f"spec:\n  addons:\n  - name: app\n    manifests: [{manifest}]\n"
                                         "  - name: ext\n    chart: something\n    repo: https://charts.invalid\n"
                                         "    version: 1.0.0\n", 1)
    found = required_images(cluster(text=text))
    assert "docker.io/library/nginx:1.27" in found.refs()
    assert any("ext" in u and "something" in u for u in found.unresolved)

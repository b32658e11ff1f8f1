"""containerd on real lab nodes: packages from uploaded .debs, config parsed back, idempotent, repaired."""

from __future__ import annotations

import ipaddress
import shutil
import tomllib
from pathlib import Path

import pytest
from ruamel.yaml import YAML
from support.images import docker_archive

from kubexm.assets import LocalSource

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab


def test_containerd_installed_configured_and_repaired(lab: RunningLab) -> None:
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "runtime")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for node in lab.nodes:
        assert lab.ssh(node, "systemctl is-active containerd").strip() == "active"
        conf = tomllib.loads(lab.ssh(node, "cat /etc/containerd/config.toml"))
        cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
        assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
        assert cri["sandbox_image"].endswith("/pause:3.10")
        assert "runtime-endpoint: unix:///run/containerd/containerd.sock" in lab.ssh(node, "cat /etc/crictl.yaml")
        assert lab.ssh(node, "test -e /opt/cni/bin/bridge && ctr version >/dev/null && echo ok").strip() == "ok"
    again = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "runtime")
    assert again.returncode == 0 and "nothing to change" in again.stdout

    # Broken by hand: unit stopped and disabled, config edited. A re-run puts both back.
    lab.ssh("node2", "systemctl disable --now containerd && echo '# edited by hand' >> /etc/containerd/config.toml")
    fixed = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "runtime")
    assert fixed.returncode == 0, fixed.stdout[-2000:]
    assert "node2: write /etc/containerd/config.toml and registry hosts (changed)" in fixed.stdout
    assert lab.ssh("node2", "systemctl is-enabled containerd; systemctl is-active containerd").split() == ["enabled", "active"]
    assert "edited by hand" not in lab.ssh("node2", "cat /etc/containerd/config.toml")


def test_mirrors_apply_and_air_gapped_images_are_imported_once(lab: RunningLab, tmp_path: Path) -> None:
    # The test's own local source: the lab's packages (linked) plus one image archive built offline.
    spec = YAML(typ="safe").load(lab.cluster_file.read_text())["spec"]
    shared = Path(spec["assets"]["localSource"])
    own = tmp_path / "source"
    own.mkdir()
    for f in shared.iterdir():
        if f.name == "manifest.yaml":
            shutil.copyfile(f, own / f.name)
        else:
            (own / f.name).symlink_to(f)
    archive = docker_archive(tmp_path / "hello.tar", ["kubexm.test/hello:v1"], {"hello.txt": b"air-gapped\n"})
    LocalSource(own).add("image", "v1", "amd64", archive, name="kubexm.test/hello:v1", group="images")
    mirror = str(next(ipaddress.ip_network(lab.state.subnet).hosts())) + ":5000"  # the bridge address
    text = lab.cluster_file.read_text().replace(f"localSource: {shared}", f"localSource: {own}").replace(
        "  containerRuntime:\n", "  containerRuntime:\n    registryMirrors:\n"
        f"      - {{registry: docker.io, endpoints: ['http://{mirror}']}}\n    insecureRegistries: ['{mirror}']\n")
    cluster_file = tmp_path / "cluster.yaml"
    cluster_file.write_text(text)

    res = kubexm("create", "cluster", "-f", str(cluster_file), "-y", "--tags", "runtime")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for node in lab.nodes:
        assert "kubexm.test/hello:v1" in lab.ssh(node, "ctr -n k8s.io images ls -q").split()
        # Unpacked with the snapshotter the CRI plugin uses, so kubelet would find it.
        assert lab.ssh(node, "ctr -n k8s.io snapshots --snapshotter native ls | wc -l").strip() != "1"
        hosts = tomllib.loads(lab.ssh(node, "cat /etc/containerd/certs.d/docker.io/hosts.toml"))
        assert hosts["server"] == "https://docker.io"
        assert hosts["host"][f"http://{mirror}"] == {"capabilities": ["pull", "resolve"], "skip_verify": True}
        assert "/var/lib/kubexm/images/hello.tar" not in lab.ssh(node, "ls /var/lib/kubexm/images/")
    again = kubexm("create", "cluster", "-f", str(cluster_file), "-y", "--tags", "runtime")
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout[-2000:]

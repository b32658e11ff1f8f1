"""containerd on real lab nodes: packages from uploaded .debs, config parsed back, idempotent, repaired."""

from __future__ import annotations

import tomllib

import pytest

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

"""Node OS preparation on real lab nodes: files, packages from uploaded .debs, container limits, re-run."""

from __future__ import annotations

import pytest

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab


def test_prepare_nodes_os_on_the_lab(lab: RunningLab) -> None:
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "os")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for node in lab.nodes:
        out = lab.ssh(node, "hostname; cat /etc/hostname; sed -n '/BEGIN kubexm/,/END kubexm/p' /etc/hosts; "
                            "cat /etc/sysctl.d/99-kubexm.conf /etc/modules-load.d/kubexm.conf; "
                            "dpkg-query -W -f='${Package} ${Status}\\n' socat conntrack ebtables ipset chrony ipvsadm")
        lines = out.splitlines()
        assert lines[:2] == [node, node]
        for other in lab.nodes:
            assert f"{lab.address(other)} {other}" in out
        assert "net.ipv4.ip_forward = 1" in out and "br_netfilter" in out
        assert out.count("install ok installed") == 6, out
    # Container limits are reported as such, with the reason, and do not fail the run.
    assert "turn swap off now and in /etc/fstab (not applicable)" in res.stdout.replace("\n", " ")
    assert "cannot load kernel modules" in res.stdout.replace("\n", " ")
    again = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "os")
    assert again.returncode == 0
    assert "changed" not in again.stdout.split("done:")[-1]
    assert "(changed)" not in again.stdout

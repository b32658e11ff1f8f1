"""OS preparation on recorded Debian, Ubuntu and Rocky hosts (the lab proves the Debian branch for real)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

from support.memory import MemoryFleet, MemoryHost, default_facts

from kubexm.engine import Event, EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.infrastructure import InfrastructureModule
from kubexm.spec.loader import parse_cluster
from kubexm.steps.os import (
    HOSTS_BEGIN,
    HOSTS_END,
    chrony_conf,
    hosts_block,
    replace_block,
    sysctl_text,
    wanted_modules,
    wanted_packages,
    wanted_sysctl,
)

CLUSTER = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: os}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: w1, address: 10.0.0.2}
  roleGroups: {etcd: [cp1], control-plane: [cp1], worker: [w1]}
  system:
    sysctl: {vm.max_map_count: "262144"}
    ntpServers: [ntp1.example.org]
""")

ROCKY = default_facts("w1").replace("os_id=debian", "os_id=rocky").replace("os_version=12", "os_version=9.4") \
    .replace("os_like=", 'os_like="rhel centos fedora"')
UBUNTU = default_facts("cp1").replace("os_id=debian", "os_id=ubuntu").replace("os_version=12", "os_version=22.04")


def test_hosts_block_is_replaced_not_duplicated() -> None:
    original = "127.0.0.1 localhost\n# admin's own entry\n10.9.9.9 db\n"
    once = replace_block(original, hosts_block(CLUSTER))
    assert once.startswith(original) and "10.0.0.2 w1" in once and "10.0.0.1 lb.kubexm.local" in once
    assert replace_block(once, hosts_block(CLUSTER)) == once
    assert once.count(HOSTS_BEGIN) == 1 and once.count(HOSTS_END) == 1


def test_wanted_settings_follow_the_spec() -> None:
    assert {"overlay", "br_netfilter", "ip_vs"} <= set(wanted_modules(CLUSTER))  # proxy mode ipvs by default
    assert "ipvsadm" in wanted_packages(CLUSTER)
    assert wanted_sysctl(CLUSTER)["vm.max_map_count"] == "262144"
    assert "net.ipv4.ip_forward = 1\n" in sysctl_text(wanted_sysctl(CLUSTER))
    assert "server ntp1.example.org iburst" in chrony_conf(CLUSTER, "w1")
    no_ntp = CLUSTER.model_copy(deep=True)
    no_ntp.spec.system.ntp_servers = []
    assert "local stratum 10" in chrony_conf(no_ntp, "cp1") and "allow 10.0.0.2" in chrony_conf(no_ntp, "cp1")
    assert "server 10.0.0.1 iburst" in chrony_conf(no_ntp, "w1")


def fake_os(host: MemoryHost, family: str) -> None:
    """Just enough of a machine: packages install, modules load, sysctl keys writable."""
    state: dict[str, Any] = {"pkgs": set(), "mods": set(), "sysctl": {}, "hostname": "localhost"}

    def pkgs_query(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        names = m.string.split("'")[-1].split()[:-1]  # the package names, before "2>/dev/null"
        return 0, "".join(f"{n} install ok installed\n" if family == "debian" else f"{n} installed\n"
                          for n in names if n in state["pkgs"]), ""

    def install(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        state["pkgs"].update(m.group(1).split())
        return 0, "", ""

    def modprobe(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        state["mods"].update(m.group(1).split())
        return 0, "", ""

    host.on(r"^(?:dpkg-query|rpm -q)", pkgs_query)
    host.on(r"(?:apt-get install -y|dnf install -y \|\| yum install -y\)) (.*)$", install)
    host.on(r"^for m in (.*); do modprobe", modprobe)
    host.on(r"cut -d' ' -f1 /proc/modules",
            lambda h, m, s: (0, (h.files.get("/etc/modules-load.d/kubexm.conf", b"").decode()) + "---\n"
                             + "\n".join(state["mods"]) + "\n", ""))
    host.on(r"^hostname; cat /etc/hostname", lambda h, m, s: (0, f"{state['hostname']}\n{state['hostname']}\n", ""))
    host.on(r"^echo (\S+) > /etc/hostname", lambda h, m, s: (state.update(hostname=m.group(1)), (0, "", ""))[1])
    host.on(r"^test -w /proc/sys", lambda h, m, s: (0, "\n".join(re.findall(r"&& echo ([^;\s]+)", m.string)), ""))
    host.on(r"^sysctl -q -w (\S+)=(\S+)", lambda h, m, s: (state["sysctl"].update({m.group(1): m.group(2)}), (0, "", ""))[1])
    host.on(r"^printf '%s='", lambda h, m, s: (0, "".join(f"{k}={state['sysctl'].get(k, '')}\n"
                                                         for k in re.findall(r"printf '%s=' ([^;\s]+);", m.string)), ""))
    host.on(r"getenforce", lambda h, m, s: (0, "Enforcing\nSELINUX=enforcing\n" if not h.commands.count("setenforce")
                                             else "Permissive\n", ""))
    host.on(r"/proc/swaps \| wc -l; grep", lambda h, m, s: (0, "0\n0\n", ""))
    host.on(r"systemctl is-active", lambda h, m, s: (3, "inactive\n", ""))
    host.on(r"^systemctl enable chrony", lambda h, m, s: (0, "", ""))


def run_os(fleet: MemoryFleet) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    options = RunOptions()
    run = RunContext(CLUSTER, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(CLUSTER, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(run).run_tasks([(InfrastructureModule, t) for t in InfrastructureModule.tasks]))
    return report, events


def test_ubuntu_and_rocky_branches() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["cp1"].facts_text = UBUNTU
    fleet["w1"].facts_text = ROCKY
    fake_os(fleet["cp1"], "debian")
    fake_os(fleet["w1"], "rhel")
    report, _ = run_os(fleet)
    assert report.ok, [(r.host, r.step, r.message) for r in report.failures]
    ubuntu, rocky = fleet["cp1"].commands, fleet["w1"].commands
    assert any(c.startswith("DEBIAN_FRONTEND=noninteractive apt-get install -y ") and "ipvsadm" in c for c in ubuntu)
    assert any(c.startswith("(dnf install -y || yum install -y) ") and "socat" in c for c in rocky)
    assert any("setenforce 0" in c for c in rocky) and not any("setenforce" in c for c in ubuntu)
    assert fleet["w1"].files["/etc/chrony.conf"].startswith(b"# Managed by kubexm.")  # RHEL path
    assert b"server ntp1.example.org iburst" in fleet["cp1"].files["/etc/chrony/chrony.conf"]
    assert fleet["w1"].files["/etc/sysctl.d/99-kubexm.conf"].decode() == sysctl_text(wanted_sysctl(CLUSTER))
    assert any(c == "sysctl -q -w vm.max_map_count=262144" for c in rocky)


def test_unsupported_os_is_refused() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["w1"].facts_text = default_facts("w1").replace("os_id=debian", "os_id=alpine")
    for name in ("cp1", "w1"):
        fake_os(fleet[name], "debian")
    report, _ = run_os(fleet)
    (failure,) = [f for f in report.failures if f.host == "w1"]
    assert "OS family 'alpine' is not supported" in failure.message


def test_container_limits_are_not_applicable() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    for name in ("cp1", "w1"):
        fleet[name].facts_text = default_facts(name).replace("container=none", "container=systemd-nspawn")
        fleet[name].on(r"^test -w /proc/sys", lambda h, m, s: (0, "", ""))  # all read-only, like nspawn
        fake_os(fleet[name], "debian")
    report, _ = run_os(fleet)
    assert report.ok
    na = {(r.host, r.step): r.message for r in report.records if r.status == "not-applicable"}
    assert "cannot manage swap" in na[("w1", "DisableSwap")]
    assert "cannot load kernel modules" in na[("w1", "KernelModules")]
    assert "cannot set" in na[("w1", "Sysctl")] and "net.ipv4.ip_forward" in na[("w1", "Sysctl")]
    assert "cannot set the clock" in na[("w1", "SyncTime")]
    assert "/etc/modules-load.d/kubexm.conf" in fleet["w1"].files  # the boot-time file is still written

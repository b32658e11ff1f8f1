"""OS preparation on recorded Debian, Ubuntu and Rocky hosts (the lab proves the Debian branch for real)."""

from __future__ import annotations

import asyncio
import re
import shlex
from typing import Any

import pytest
from support.memory import MemoryFleet, MemoryHost, default_facts

from kubexm.engine import Event, EventBus, Executor, RunContext, RunOptions
from kubexm.errors import StepFailed
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.infrastructure import InfrastructureModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
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


def _words_between(command: str, start: str, end: str) -> list[str]:
    """The shell words of ``command`` between two literal markers (the package or module list)."""
    return shlex.split(command.split(start, 1)[1].split(end, 1)[0])


def fake_os(host: MemoryHost, family: str, firewall: str = "") -> dict[str, Any]:
    """Just enough of a machine: packages install, modules load, sysctl keys writable, units start.

    The kernel prints multi-field sysctl values with tabs, as /proc/sys does. ``firewall``: the active one.
    """
    state: dict[str, Any] = {"pkgs": {}, "mods": set(), "sysctl": {}, "hostname": "localhost", "active": set(),
                             "selinux": "Enforcing", "ports": set()}
    if firewall:
        state["active"].add(firewall)

    def pkgs_query(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        if family == "debian":
            names = [w for w in shlex.split(m.string) if not w.startswith(("-", "2>"))][1:]
            return 0, "".join(f"{n}\t{state['pkgs'][n]}\n" for n in names if n in state["pkgs"]), ""
        names = _words_between(m.string, "for p in ", "; do")
        return 0, "".join(f"{n}\n" for n in names if state["pkgs"].get(n) == "ii "), ""

    def install(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        names = _words_between(m.string, "install -y ", ";") if family == "rhel" else shlex.split(m.group(1))
        state["pkgs"].update({n: "ii " for n in names})
        return 0, "", ""

    def modprobe(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        state["mods"].update(_words_between(m.string, "for m in ", "; do"))
        return 0, "", ""

    def sysctl_w(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        key, _, value = shlex.split(m.string)[3].partition("=")
        state["sysctl"][key] = "\t".join(value.split())  # as the kernel prints it back
        return 0, "", ""

    def unit(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        words = shlex.split(m.string.replace("&&", ";").replace(";", " ; "))
        for i, w in enumerate(words):
            if w == "restart":
                state["active"].add(words[i + 1])
            elif w == "--now":
                state["active"].discard(words[i + 1])
        return 0, "", ""

    def ufw_status(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        rules = "".join(f"{p:<27}ALLOW       Anywhere\n" for p in sorted(state["ports"]))
        return 0, f"Status: active\n\nTo                         Action      From\n--  ------  ----\n{rules}", ""

    host.on(r"^cat -- (\S+)$", lambda h, m, s: (0, h.files[m.group(1)].decode(), "") if m.group(1) in h.files
            else (1, "", "No such file or directory"))
    host.on(r"^(?:dpkg-query|for p in .*rpm -q)", pkgs_query)
    host.on(r"^DEBIAN_FRONTEND=noninteractive apt-get install -y (.*)$", install)
    host.on(r"^if command -v dnf >/dev/null 2>&1; then dnf install -y ", install)
    host.on(r"^for m in .*; do modprobe", modprobe)
    host.on(r"cut -d' ' -f1 /proc/modules",
            lambda h, m, s: (0, (h.files.get("/etc/modules-load.d/kubexm.conf", b"").decode()) + "---\n"
                             + "\n".join(state["mods"]) + "\n", ""))
    host.on(r"^hostname; cat /etc/hostname", lambda h, m, s: (0, f"{state['hostname']}\n{state['hostname']}\n", ""))
    host.on(r"^printf '%s\\n' (\S+) > /etc/hostname",
            lambda h, m, s: (state.update(hostname=shlex.split(m.group(1))[0]), (0, "", ""))[1])
    host.on(r"^test -w /proc/sys", lambda h, m, s: (0, "".join(
        f"{k}\n" for k in re.findall(r"&& printf '%s\\n' ([^;\s]+)", m.string)), ""))
    host.on(r"^sysctl -q -w ", sysctl_w)
    host.on(r"^printf '%s='", lambda h, m, s: (0, "".join(f"{k}={state['sysctl'].get(k, '')}\n"
                                                         for k in re.findall(r"printf '%s=' ([^;\s]+);", m.string)), ""))
    host.on(r"^getenforce", lambda h, m, s: (0, f"{state['selinux']}\n"
                                             + ("SELINUX=enforcing\n" if state["selinux"] == "Enforcing" else ""), ""))
    host.on(r"^setenforce 0", lambda h, m, s: (state.update(selinux="Permissive"), (0, "", ""))[1])
    host.on(r"/proc/swaps \| wc -l; grep", lambda h, m, s: (0, "0\n0\n", ""))
    host.on(r"^for s in ufw firewalld; do systemctl is-active",
            lambda h, m, s: (0, "".join(f"{u}\n" for u in ("ufw", "firewalld") if u in state["active"]), ""))
    host.on(r"^systemctl is-active -q (\S+)$", lambda h, m, s: (0 if m.group(1) in state["active"] else 3, "", ""))
    host.on(r"^systemctl (?:enable|disable)", unit)
    host.on(r"^ufw allow (\S+)$", lambda h, m, s: (state["ports"].add(m.group(1)), (0, "", ""))[1])
    host.on(r"^ufw status$", ufw_status)
    host.on(r"^firewall-cmd --permanent --add-port=(\S+)$", lambda h, m, s: (state["ports"].add(m.group(1)), (0, "", ""))[1])
    host.on(r"^firewall-cmd --list-ports$", lambda h, m, s: (0, " ".join(sorted(state["ports"])) + "\n", ""))
    return state


def run_os(fleet: MemoryFleet, cluster: Cluster = CLUSTER, dry_run: bool = False) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    options = RunOptions(dry_run=dry_run)
    run = RunContext(cluster, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))
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
    assert any(c.startswith("if command -v dnf ") and "socat" in c for c in rocky)
    assert any(c.startswith("setenforce 0") for c in rocky) and not any("setenforce" in c for c in ubuntu)
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


FULL = CLUSTER.model_copy(deep=True)
FULL.spec.system.sysctl = {"vm.max_map_count": "262144", "net.ipv4.ip_local_port_range": "1024 65535"}
FULL.spec.system.firewall = "open-ports"
DEBIAN = default_facts("cp1")


def statuses(report: Any, host: str) -> dict[str, str]:
    return {r.step: r.status for r in report.records if r.host == host}


@pytest.mark.parametrize(("cp1", "w1"), [(UBUNTU, ROCKY), (DEBIAN, ROCKY)], ids=["ubuntu+rocky", "debian+rocky"])
def test_a_second_run_changes_nothing(cp1: str, w1: str) -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["cp1"].facts_text, fleet["w1"].facts_text = cp1, w1
    states = {"cp1": fake_os(fleet["cp1"], "debian", firewall="ufw"), "w1": fake_os(fleet["w1"], "rhel", firewall="firewalld")}
    first, _ = run_os(fleet, FULL)
    assert first.ok, [(r.host, r.step, r.message) for r in first.failures]
    assert statuses(first, "w1")["Sysctl"] == "changed"
    # the multi-field value went to the kernel as one word and comes back with a tab between its fields
    assert "sysctl -q -w 'net.ipv4.ip_local_port_range=1024 65535'" in fleet["w1"].commands
    assert states["w1"]["sysctl"]["net.ipv4.ip_local_port_range"] == "1024\t65535"
    second, _ = run_os(fleet, FULL)
    assert second.ok
    for host in ("cp1", "w1"):
        changed = [step for step, status in statuses(second, host).items() if status != "ok"]
        assert changed == [], (host, changed)


def test_firewalls_get_the_role_ports_in_their_own_syntax() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["cp1"].facts_text, fleet["w1"].facts_text = UBUNTU, ROCKY
    fake_os(fleet["cp1"], "debian", firewall="ufw")
    rocky = fake_os(fleet["w1"], "rhel", firewall="firewalld")
    report, _ = run_os(fleet, FULL)
    assert report.ok
    assert {"ufw allow 6443/tcp", "ufw allow 2379:2380/tcp"} <= set(fleet["cp1"].commands)
    assert "firewall-cmd --permanent --add-port=30000-32767/tcp" in fleet["w1"].commands
    assert fleet["w1"].commands.index("firewall-cmd --reload") > \
        fleet["w1"].commands.index("firewall-cmd --permanent --add-port=10250/tcp")
    assert rocky["ports"] == {"10250/tcp", "30000-32767/tcp"}
    assert not any(c.startswith("firewall-cmd") for c in fleet["cp1"].commands)
    assert not any(c.startswith("ufw") for c in fleet["w1"].commands)


def test_firewall_disable_stops_whichever_runs_and_none_is_left_alone() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["w1"].facts_text = ROCKY
    debian = fake_os(fleet["cp1"], "debian")  # no firewall at all
    rocky = fake_os(fleet["w1"], "rhel", firewall="firewalld")
    report, _ = run_os(fleet)  # CLUSTER: firewall "disable" (the default)
    assert report.ok
    assert "systemctl disable --now firewalld" in fleet["w1"].commands and "firewalld" not in rocky["active"]
    assert statuses(report, "cp1")["Firewall"] == "ok" and not debian["ports"]
    assert not any(c.startswith(("ufw ", "firewall-cmd", "systemctl disable")) for c in fleet["cp1"].commands)


def test_selinux_is_set_permissive_on_rhel_only() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["w1"].facts_text = ROCKY
    fake_os(fleet["cp1"], "debian")
    rocky = fake_os(fleet["w1"], "rhel")
    report, _ = run_os(fleet)
    assert statuses(report, "w1")["SELinuxPermissive"] == "changed" and rocky["selinux"] == "Permissive"
    assert statuses(report, "cp1")["SELinuxPermissive"] == "ok"
    assert not any("getenforce" in c or "setenforce" in c for c in fleet["cp1"].commands)


def test_half_installed_package_is_installed_again() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    debian = fake_os(fleet["cp1"], "debian")
    fake_os(fleet["w1"], "debian")
    debian["pkgs"].update({p: "ii " for p in wanted_packages(CLUSTER)})
    debian["pkgs"]["socat"] = "iH "  # dpkg stopped while unpacking it
    report, _ = run_os(fleet)
    assert report.ok
    (install,) = [c for c in fleet["cp1"].commands if "apt-get install" in c]
    assert shlex.split(install)[4:] == ["socat"]
    assert debian["pkgs"]["socat"] == "ii "


HOSTILE_PACKAGES = ["curl;touch${IFS}/tmp/x", "$(touch${IFS}/tmp/y)", "`id`"]


def test_dry_run_only_reads_even_with_hostile_package_names() -> None:
    hostile = CLUSTER.model_copy(deep=True)
    hostile.spec.system.packages = list(HOSTILE_PACKAGES)  # the spec refuses them; the step must be safe anyway
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["w1"].facts_text = ROCKY
    fake_os(fleet["cp1"], "debian")
    fake_os(fleet["w1"], "rhel")
    report, _ = run_os(fleet, hostile, dry_run=True)
    assert report.ok, [(r.host, r.step, r.message) for r in report.failures]
    assert statuses(report, "cp1")["Packages"] == "would-change"
    (query,) = [c for c in fleet["cp1"].commands if c.startswith("dpkg-query")]
    assert shlex.split(query)[-len(HOSTILE_PACKAGES) - 1:-1] == HOSTILE_PACKAGES  # each one word, before 2>/dev/null
    (rpm,) = [c for c in fleet["w1"].commands if "rpm -q" in c]
    assert _words_between(rpm, "for p in ", "; do")[-len(HOSTILE_PACKAGES):] == HOSTILE_PACKAGES
    for host in ("cp1", "w1"):
        assert not any(c.startswith(("<put", "sysctl -q -w", "DEBIAN_FRONTEND", "if command -v dnf", "printf '%s\\n'",
                                     "setenforce", "for m in", "systemctl enable"))
                       for c in fleet[host].commands)


def test_a_package_name_with_a_blank_or_a_leading_dash_is_refused() -> None:
    for name, reason in [("curl; touch /tmp/x", "holds a blank"), ("-oDPkg::Pre-Invoke::=id", "starts with '-'"),
                         ("curl\nid", "line break")]:
        bad = CLUSTER.model_copy(deep=True)
        bad.spec.system.packages = [name]
        fleet = MemoryFleet(["cp1", "w1"])
        for host in ("cp1", "w1"):
            fake_os(fleet[host], "debian")
        report, _ = run_os(fleet, bad)
        (failure,) = report.failures
        assert failure.step == "Packages" and f"package name {name!r}" in failure.message and reason in failure.message
        assert not any("dpkg-query" in c or "apt-get" in c for c in fleet["cp1"].commands)


@pytest.mark.parametrize(("field", "value", "step", "named"), [
    ("ntp_servers", ["ntp1.example.org iburst\nserver 203.0.113.9"], "SyncTime",
     "NTP server 'ntp1.example.org iburst\\nserver 203.0.113.9'"),
    ("ntp_servers", ["ntp1.example.org key 1"], "SyncTime", "NTP server 'ntp1.example.org key 1' holds a blank"),
    ("sysctl", {"vm.max_map_count": "262144\nkernel.core_pattern = |/tmp/x"}, "Sysctl",
     "sysctl value of vm.max_map_count '262144\\nkernel.core_pattern = |/tmp/x'"),
    ("sysctl", {"kernel.core_pattern\u2028x": "1"}, "Sysctl", "sysctl key 'kernel.core_pattern\\u2028x'"),
    ("sysctl", {"net.ipv4..conf": "1"}, "Sysctl", "does not name a file under /proc/sys"),
])
def test_a_value_that_would_add_a_config_line_is_refused_before_writing(field: str, value: Any, step: str,
                                                                       named: str) -> None:
    bad = CLUSTER.model_copy(deep=True)
    setattr(bad.spec.system, field, value)  # the spec validates these fields too; the steps must hold on their own
    fleet = MemoryFleet(["cp1", "w1"])
    for name in ("cp1", "w1"):
        fake_os(fleet[name], "debian")
    report, _ = run_os(fleet, bad)
    failed = {(r.host, r.step): r.message for r in report.failures}
    assert named in failed[("cp1", step)]
    assert "\n" not in failed[("cp1", step)]  # a one-line reason
    written = {"Sysctl": "/etc/sysctl.d/99-kubexm.conf", "SyncTime": "/etc/chrony/chrony.conf"}[step]
    assert written not in fleet["cp1"].files


def test_hosts_block_refuses_a_field_that_adds_a_line_or_an_alias() -> None:
    bad = CLUSTER.model_copy(deep=True)
    bad.spec.control_plane_endpoint.domain = "lb.kubexm.local\n203.0.113.9 other.example.org"
    with pytest.raises(StepFailed, match=r"controlPlaneEndpoint\.domain"):
        hosts_block(bad, "w1")
    bad.spec.control_plane_endpoint.domain = "lb.kubexm.local evil.example.org"
    with pytest.raises(StepFailed, match="holds a blank"):
        hosts_block(bad, "w1")

"""PreflightChecks on recorded hosts: the table has one row per host x check and failures stop the run."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from support.memory import MemoryFleet, MemoryHost, default_facts

from kubexm.engine import Event, EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.preflight import PreflightModule
from kubexm.spec.default import default_local_cluster
from kubexm.spec.loader import parse_cluster

CLUSTER = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: pf}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: w1, address: 10.0.0.2}
    - {name: w2, address: 10.0.0.3}
  roleGroups:
    etcd: [cp1]
    control-plane: [cp1]
    worker: [w1, w2]
"""

CHECKS = ["ssh", "os", "arch", "kernel", "init", "cpu", "memory", "swap", "container", "commands", "hostname",
          "dns", "clock", "ports", "network"]


def probe_handler(listen: str = "22", missing: tuple[str, ...] = (), unreachable: tuple[str, ...] = (),
                  skew: float = 0.0) -> Any:
    def handle(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        script = m.string
        lines = []
        for cmd in re.findall(r"command -v (\S+) >/dev/null 2>&1 && echo cmd_", script):
            lines.append(f"cmd_{cmd}={0 if cmd in missing else 1}")
        lines += [f"listen={listen}", "dns_self=1", "have_bash=1"]
        for peer, port in re.findall(r"printf '%s=%s\\n' reach_(\w+)_(\d+) ", script):
            lines.append(f"reach_{peer}_{port}={'timeout' if peer in unreachable else 'refused'}")
        import time

        lines.append(f"now={time.time() + skew}")
        return 0, "\n".join(lines) + "\n", ""
    return handle


def run_preflight(fleet: MemoryFleet, dry_run: bool = False, skip: bool = False) -> tuple[Any, RunContext, list[Event]]:
    cluster = parse_cluster(CLUSTER)
    events: list[Event] = []
    options = RunOptions(dry_run=dry_run, skip_preflight=skip)
    run = RunContext(cluster, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))
    items = [(PreflightModule, t) for t in PreflightModule.tasks]
    report = asyncio.run(Executor(run).run_tasks(items))
    return report, run, events


def table(events: list[Event]) -> dict[tuple[str, str], tuple[str, str]]:
    (report,) = [e for e in events if e.kind == "report" and e.data["title"] == "Preflight"]
    assert report.data["columns"] == ["host", "check", "result", "reason"]
    return {(r[0], r[1]): (r[2], r[3]) for r in report.data["rows"]}


def fleet_with(**per_host: dict[str, Any]) -> MemoryFleet:
    fleet = MemoryFleet(["cp1", "w1", "w2"])
    for name in ("cp1", "w1", "w2"):
        opts = per_host.get(name, {})
        host = fleet[name]
        if "facts" in opts:
            host.facts_text = opts["facts"]
        host.on(r"cmd_sh=", probe_handler(**opts.get("probe", {})))
    return fleet


def test_healthy_hosts_pass_with_a_row_per_host_and_check() -> None:
    report, _, events = run_preflight(fleet_with())
    assert report.ok, report.failures
    rows = table(events)
    for host in ("cp1", "w1", "w2"):
        for check in CHECKS:
            assert rows[(host, check)][0] == "pass", (host, check, rows[(host, check)])
    assert rows[("deploy-machine", "spec")][0] == "pass"
    assert "reaches 2 peers" in rows[("cp1", "network")][1]


def test_each_host_is_probed_in_two_round_trips() -> None:
    fleet = fleet_with()
    run_preflight(fleet)
    assert len(fleet["w1"].commands) == 2  # facts + one probe script, whatever the number of checks


@pytest.mark.parametrize(("host", "setup", "check", "reason"), [
    ("w1", {"facts": default_facts("w1").replace("os_id=debian", "os_id=arch").replace("os_version=12", "os_version=")},
     "os", "is not supported"),
    ("w1", {"facts": default_facts("w1").replace("os_version=12", "os_version=10")}, "os", "not supported"),
    ("cp1", {"facts": default_facts("cp1", cpus=1)}, "cpu", "1 CPUs, a control-plane host needs at least 2"),
    ("w2", {"facts": default_facts("w2", memory_kb=512 * 1024)}, "memory", "512 MiB, a worker/etcd host needs"),
    ("w1", {"facts": default_facts("w1").replace("arch=x86_64", "arch=s390x")}, "arch", "s390x is not supported"),
    ("w1", {"facts": default_facts("w1").replace("systemd_running=1", "systemd_running=0").replace("init=systemd", "init=sysvinit")},
     "init", "not systemd"),
    ("cp1", {"probe": {"listen": "22 6443"}}, "ports", "already in use: 6443"),
    ("w1", {"probe": {"missing": ("tar",)}}, "commands", "missing: tar (tar)"),
    ("w1", {"probe": {"missing": ("iptables", "nft")}}, "commands", "iptables or nft"),
    ("w1", {"probe": {"skew": 42.0}}, "clock", "+42"),
    ("w2", {"probe": {"unreachable": ("cp1",)}}, "network", "cannot reach cp1 10.0.0.1:2379 (timeout)"),
])
def test_a_failed_check_stops_the_run(host: str, setup: dict[str, Any], check: str, reason: str) -> None:
    report, _, events = run_preflight(fleet_with(**{host: setup}))
    rows = table(events)
    assert rows[(host, check)][0] == "fail"
    assert reason in rows[(host, check)][1]
    assert not report.ok and report.stopped_at == "PreflightChecks"
    assert f"{host}/{check}" in report.failures[0].message
    assert "--skip-preflight" in report.failures[0].message


def test_rocky_and_ubuntu_are_supported() -> None:
    rocky = default_facts("w1").replace("os_id=debian", "os_id=rocky").replace("os_version=12", "os_version=9.4") \
        .replace("os_like=", 'os_like="rhel centos fedora"')
    ubuntu = default_facts("w2").replace("os_id=debian", "os_id=ubuntu").replace("os_version=12", "os_version=22.04")
    _, _, events = run_preflight(fleet_with(w1={"facts": rocky}, w2={"facts": ubuntu}))
    rows = table(events)
    assert rows[("w1", "os")][0] == "pass" and rows[("w2", "os")][0] == "pass"


def test_container_and_swap_are_warnings() -> None:
    facts = default_facts("w1").replace("container=none", "container=systemd-nspawn").replace("swap_kb=0", "swap_kb=1048576")
    report, _, events = run_preflight(fleet_with(w1={"facts": facts}))
    rows = table(events)
    assert report.ok
    assert rows[("w1", "container")][0] == "warn" and "not applicable" in rows[("w1", "container")][1]
    assert rows[("w1", "swap")][0] == "warn" and "cannot turn it off" in rows[("w1", "swap")][1]


def test_unreachable_host_is_a_row_not_a_crash() -> None:
    fleet = fleet_with()
    fleet["w2"].down = True
    report, _, events = run_preflight(fleet)
    rows = table(events)
    assert rows[("w2", "ssh")][0] == "fail" and "refused" in rows[("w2", "ssh")][1]
    assert rows[("w1", "os")][0] == "pass"
    assert not report.ok


def test_dry_run_reports_without_failing_and_skip_preflight_goes_on() -> None:
    setup = {"cp1": {"probe": {"listen": "2379"}}}
    report, run, _ = run_preflight(fleet_with(**setup), dry_run=True)
    assert report.ok
    assert run.shared["preflight_failed"][0][:2] == ("cp1", "ports")
    report, run, events = run_preflight(fleet_with(**setup), skip=True)
    assert report.ok
    assert any(e.kind == "message" and "--skip-preflight" in e.message for e in events)


def test_real_checks_on_this_machine() -> None:
    cluster = default_local_cluster()
    events: list[Event] = []
    run = RunContext(cluster, RunOptions(dry_run=True), bus=EventBus([events.append]))
    asyncio.run(Executor(run).run_tasks([(PreflightModule, t) for t in PreflightModule.tasks]))
    rows = table(events)
    host = cluster.spec.hosts[0].name
    assert {c for (h, c) in rows if h == host} == set(CHECKS)
    assert rows[(host, "cpu")][1].startswith(f"{os.cpu_count()} CPUs")
    assert rows[(host, "ssh")][0] == "pass"


def test_a_dry_run_tests_peer_reachability_with_a_read_only_probe() -> None:
    # While planning the engine refuses every command not declared (and verified) read-only: the probe,
    # peer connections included, runs all the same, so a plan already shows a closed firewall.
    fleet = fleet_with(w1={"probe": {"unreachable": ("cp1",)}})
    report, run, events = run_preflight(fleet, dry_run=True)
    assert report.ok, report.failures
    rows = table(events)
    assert rows[("w1", "network")][0] == "fail" and "cp1 10.0.0.1:6443 (timeout)" in rows[("w1", "network")][1]
    assert rows[("w2", "network")][0] == "pass"
    assert any("/dev/tcp" in c for c in fleet["w1"].commands)
    assert run.shared["preflight_failed"]


def peer_arguments(probe: str) -> list[tuple[str, str, str]]:
    """(bash script, address, port) of each peer connection in a probe."""
    return re.findall(r"bash -c '([^']*)' kubexm-probe (\S+) (\d+) ", probe)


def test_real_run_probes_each_peer_port() -> None:
    fleet = fleet_with()
    run_preflight(fleet)
    (probe,) = [c for c in fleet["w2"].commands if "/dev/tcp" in c]
    found = peer_arguments(probe)
    assert [(addr, port) for _, addr, port in found] == [
        ("10.0.0.1", "2379"), ("10.0.0.1", "2380"), ("10.0.0.1", "6443"), ("10.0.0.2", "10250")]
    # One literal script for every peer: the values are its positional parameters, never its text.
    assert {script for script, _, _ in found} == {': <"/dev/tcp/$1/$2"'}


def test_the_peer_probe_is_declared_and_verified_read_only() -> None:
    from kubexm.steps.preflight import peer_probe, probe_script

    assert peer_probe("p", "10.0.0.1", 6443).readonly
    assert probe_script([("p", "10.0.0.1", 6443), ("q", "fe80::1", 2379)]).readonly


def test_the_probe_runs_in_sh_and_a_hostile_peer_address_stays_one_word(tmp_path: Path) -> None:
    from kubexm.steps.preflight import probe_script

    peers = [("odd", "127.0.0.1/1;echo pwned>f", 1), ("p", "127.0.0.1", 1)]
    for shell_name in ("bash", "dash"):
        res = subprocess.run([shell_name, "-c", probe_script(peers).text], cwd=tmp_path, capture_output=True,
                             text=True, check=False, timeout=30)
        probe = dict(line.partition("=")[::2] for line in res.stdout.splitlines())
        assert probe["cmd_sh"] == "1" and probe["now"]
        assert probe["reach_p_1"] == "refused"  # nothing listens on port 1 here
        assert probe["reach_odd_1"] in ("refused", "unreachable")
        assert list(tmp_path.iterdir()) == []


def test_this_machines_limits_are_a_row(monkeypatch: pytest.MonkeyPatch) -> None:
    from kubexm.hosts import limits

    _, _, events = run_preflight(fleet_with())
    assert table(events)[("deploy-machine", "limits")][0] == "pass"
    # A fleet bigger than the neighbour table on this machine's own subnet: a warning naming the sysctl.
    monkeypatch.setattr(limits, "_local_networks", lambda: [__import__("ipaddress").ip_network("10.0.0.0/24")])
    monkeypatch.setattr(limits, "_read_int", lambda path: 2)
    report, _, events = run_preflight(fleet_with())
    result, reason = table(events)[("deploy-machine", "limits")]
    assert report.ok and result == "warn"
    assert reason.startswith("3 hosts are on this machine's own subnets") and "gc_thresh2" in reason

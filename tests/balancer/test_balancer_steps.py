"""The load-balancer module on in-memory hosts: every command it sends parses (MemoryHost runs bash -n and
dash -n), a dry run only reads, and values that could add a line to keepalived.conf are refused."""

from __future__ import annotations

import asyncio
import shlex
from pathlib import Path

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.balancer.configs import CHECK_SCRIPT, HAPROXY_CFG, INTERNAL_CFG, KEEPALIVED_CONF, keepalived_conf
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.errors import StepFailed
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.loadbalancer import LoadBalancerModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config

HOSTS = ["master1", "master2", "master3", "worker1", "worker2"]


def cluster(lb: str = "haproxy-keepalived") -> Cluster:
    text = sample_config("ha", with_ha=True).replace("loadBalancer: haproxy-keepalived", f"loadBalancer: {lb}")
    return parse_cluster(text)


def fake_host(host: MemoryHost) -> None:
    installed: set[str] = set()
    host.on(r"^dpkg-query -W \S+ (.*?)(?: 2>/dev/null)?$", lambda h, m, s: (0, "".join(
        f"{n}\tii \n" for n in shlex.split(m.group(1)) if n in installed), ""))
    host.on(r"apt-get install -y (.*)$", lambda h, m, s: (installed.update(shlex.split(m.group(1))), (0, "", ""))[1])
    host.on(r"^ip -o -4 addr show to ", lambda h, m, s: (0, "eth0\n", ""))


def run_module(c: Cluster, fleet: MemoryFleet, **options: object) -> object:
    opts = RunOptions(**options)  # type: ignore[arg-type]
    run = RunContext(c, opts, bus=EventBus([lambda e: None]), pool=ConnectionPool(c, opts.connect, factory=fleet.factory))
    for name in fleet.hosts:
        fake_host(fleet[name])
    tasks = LoadBalancerModule.tasks_for(c, set(), set())
    return asyncio.run(Executor(run).run_tasks([(LoadBalancerModule, t) for t in tasks]))


def test_haproxy_keepalived_on_the_control_planes() -> None:
    fleet = MemoryFleet(HOSTS)
    report = run_module(cluster(), fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    for name in ("master1", "master2", "master3"):
        host = fleet[name]
        assert {HAPROXY_CFG, KEEPALIVED_CONF, CHECK_SCRIPT} <= set(host.files)
        assert b'interface "eth0"' in host.files[KEEPALIVED_CONF]
        # Candidates are checked by the daemons before replacing the live files, then removed.
        assert f"haproxy -c -q -dW -f {HAPROXY_CFG}.kubexm-new 2>&1" in host.commands
        assert f"rm -f -- {KEEPALIVED_CONF}.kubexm-new" in host.commands
        restarts = [c for c in host.commands if c.startswith("systemctl daemon-reload")]
        assert [c.split()[-1] for c in restarts] == ["haproxy", "keepalived"]
    assert not any(HAPROXY_CFG in fleet[w].files for w in ("worker1", "worker2"))


def test_a_dry_run_only_reads() -> None:
    # While planning the engine refuses any command not declared read-only (an internal error would be a
    # failure here), and uploads are refused too.
    fleet = MemoryFleet(HOSTS)
    report = run_module(cluster(), fleet, dry_run=True)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    assert not any(c.startswith("<put") for h in HOSTS for c in fleet[h].commands)
    statuses = {(r.step, r.status) for r in report.records}  # type: ignore[attr-defined]
    assert ("HaproxyConfig", "would-change") in statuses
    assert ("WaitHaproxyServing", "not-applicable") in statuses


def test_internal_proxy_restarts_the_pod_only_when_its_config_changed() -> None:
    fleet = MemoryFleet(HOSTS)
    report = run_module(cluster("internal"), fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    host = fleet["worker1"]
    assert INTERNAL_CFG in host.files
    assert sum("crictl stop" in c for c in host.commands) == 1
    host.files[INTERNAL_CFG] += b"# drift\n"
    host.commands.clear()
    assert run_module(cluster("internal"), fleet).ok  # type: ignore[attr-defined]
    assert sum("crictl stop" in c for c in host.commands) == 1


def test_kube_vip_on_the_first_control_plane_and_a_dry_run() -> None:
    for dry in (False, True):
        fleet = MemoryFleet(HOSTS)
        report = run_module(cluster("kube-vip"), fleet, dry_run=dry)
        assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
        assert ("/etc/kubernetes/manifests/kube-vip.yaml" in fleet["master1"].files) is not dry


@pytest.mark.parametrize("interface", ["eth0\nvirtual_router_id 1", 'eth0" }', "eth 0", "a/b", "x" * 16, ""])
def test_interfaces_that_could_add_to_keepalived_conf_are_refused(interface: str) -> None:
    c = cluster()
    c.spec.control_plane_endpoint.interface = interface
    fleet = MemoryFleet(HOSTS)
    report = run_module(c, fleet)
    if not interface:  # empty: the interface carrying the host's address is looked up instead
        assert report.ok  # type: ignore[attr-defined]
        return
    failures = [f for f in report.failures if f.step == "KeepalivedConfig"]  # type: ignore[attr-defined]
    assert failures and all("\n" not in f.message and "interface" in f.message for f in failures)
    assert not any(KEEPALIVED_CONF in fleet[h].files for h in HOSTS)


def test_a_discovered_interface_is_checked_too() -> None:
    fleet = MemoryFleet(HOSTS)
    for name in HOSTS:
        fleet[name].on(r"^ip -o -4 addr show to ", lambda h, m, s: (0, 'eth0"\n', ""))
    report = run_module(cluster(), fleet)
    failures = [f for f in report.failures if f.step == "KeepalivedConfig"]  # type: ignore[attr-defined]
    assert failures and "is not an interface name" in failures[0].message


def test_addresses_that_are_not_ips_are_refused_in_keepalived_conf() -> None:
    c = cluster()
    c.spec.hosts[1].internal_address = "10.0.0.12 }\n"
    with pytest.raises(StepFailed, match="is not an IP address"):
        keepalived_conf(c, "master1", "eth0")


def test_a_dry_run_asks_a_configured_haproxy_whether_it_serves() -> None:
    fleet = MemoryFleet(HOSTS)
    assert run_module(cluster(), fleet).ok  # type: ignore[attr-defined]
    for name in HOSTS:
        fleet[name].commands.clear()
    # Configured already (same config, unit enabled and active): the plan asks the live haproxy, read-only.
    report = run_module(cluster(), fleet, dry_run=True)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    statuses = {(r.host, r.step): r.status for r in report.records}  # type: ignore[attr-defined]
    assert statuses[("master1", "WaitHaproxyServing")] == "ok"
    assert any("/dev/tcp/127.0.0.1/$1" in c for c in fleet["master1"].commands)
    # A config the run would still rewrite: nothing to ask yet.
    fleet["master2"].files[HAPROXY_CFG] += b"# drift\n"
    report = run_module(cluster(), fleet, dry_run=True)
    statuses = {(r.host, r.step): r.status for r in report.records}  # type: ignore[attr-defined]
    assert statuses[("master2", "WaitHaproxyServing")] == "not-applicable"
    assert statuses[("master1", "WaitHaproxyServing")] == "ok"


def test_a_configured_haproxy_that_does_not_answer_fails_the_plan() -> None:
    from kubexm.engine import Module, Task, role
    from kubexm.steps.balancer import WaitHaproxyServing

    fleet = MemoryFleet(HOSTS)
    c = cluster()
    assert run_module(c, fleet).ok  # type: ignore[attr-defined]
    fleet["master3"].on(r"/dev/tcp/127\.0\.0\.1/\$1", lambda h, m, s: (1, "", "Connection refused"))
    opts = RunOptions(dry_run=True)
    run = RunContext(c, opts, bus=EventBus([lambda e: None]), pool=ConnectionPool(c, opts.connect, factory=fleet.factory))
    task = Task("Wait", [WaitHaproxyServing(timeout=0)], hosts=role("control-plane"))
    report = asyncio.run(Executor(run).run_tasks([(Module("M", [task]), task)]))
    assert [(f.host, f.step) for f in report.failures] == [("master3", "WaitHaproxyServing")]
    assert "does not serve" in report.failures[0].message


@pytest.mark.parametrize("shell_name", ["bash", "dash"])
def test_the_haproxy_probe_answers_from_a_real_listener(shell_name: str, tmp_path: Path) -> None:
    import socket
    import subprocess

    from kubexm.steps.balancer import haproxy_answers

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        probe = haproxy_answers(port)
        assert probe.readonly
        # sudo runs commands with sh -c: dash runs the outer command, bash only the literal probe script.
        assert subprocess.run([shell_name, "-c", probe.text], cwd=tmp_path, check=False, timeout=10).returncode == 0
    assert subprocess.run([shell_name, "-c", probe.text], cwd=tmp_path, check=False, timeout=10).returncode != 0
    # A value is a positional parameter of the script, so even text meant as shell stays inert.
    hostile = haproxy_answers("1;touch pwned")  # type: ignore[arg-type]
    subprocess.run([shell_name, "-c", hostile.text], cwd=tmp_path, check=False, timeout=10)
    assert list(tmp_path.iterdir()) == []

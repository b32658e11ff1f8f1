"""`kubexm repair`: the plan made from a health report, and its actions applied through the engine."""

from __future__ import annotations

import asyncio
import re

import pytest

from kubexm.diagnostics.health import collect
from kubexm.diagnostics.health_checks import Report, evaluate
from kubexm.diagnostics.repair import plan, run_action
from kubexm.engine import RunOptions

try:
    from .health_fakes import Fleet, cluster, unit
except ImportError:  # collected without a package (no tests/diagnostics/__init__.py)
    from health_fakes import Fleet, cluster, unit  # type: ignore[no-redef]

COMMAND = "kubexm repair -f /srv/hc.yaml"


def report(fleet: Fleet) -> Report:
    collected = asyncio.run(collect(fleet.cluster, RunOptions(), factory=fleet.fleet.factory, command=COMMAND))
    return evaluate(collected, COMMAND)


def systemd(fleet: Fleet) -> None:
    """The fake nodes' systemctl: is-active reads the unit's state, start makes it active (and etcd answer)."""
    for name in fleet.names:
        def is_active(host, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
            state = fleet[host.name].units.get(m.group(1), {})
            return (0 if state.get("ActiveState") == "active" else 3), "", ""

        def start(host, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
            name = m.group(1)
            fleet[host.name].units[name] = unit(restarts=0)
            if name == "etcd":
                fleet[host.name].etcd_up = True
            return 0, "", ""

        fleet.host(name).on(r"systemctl (?:start|restart) -- (\S+)", start)
        fleet.host(name).on(r"systemctl is-active -q -- (\S+)", is_active)


def test_the_plan_starts_stopped_units_etcd_first_reruns_drifted_nodes_and_renews() -> None:
    c = cluster("  pki:\n    certValidityDays: 10\n")
    fleet = Fleet(c)
    from kubexm.pki.layout import etcd_specs
    from kubexm.steps.etcd import cluster_pki

    pki = cluster_pki(c)
    pki.ensure(etcd_specs(c))
    fleet["node2"].certs = {"/etc/kubernetes/pki/etcd/peer.crt": pki.crt("etcd/nodes/node2/peer").read_text()}
    fleet["node3"].units["containerd"] = unit("failed", "failed", 5, "exit-code")
    fleet["node2"].units["etcd"] = unit("inactive", "dead")
    fleet["node2"].etcd_up = False
    fleet["node1"].sysctl["net.ipv4.ip_forward"] = "0"
    fleet["node1"].units["containerd"] = unit(restarts=7)  # restarting, but running: nothing to start
    actions = plan(report(fleet), c, COMMAND)
    assert [(a.kind, a.what, a.nodes, a.automatic) for a in actions] == [
        ("start-unit", "etcd", ["node2"], True),
        ("start-unit", "containerd", ["node3"], True),
        ("run-task", "PrepareNodesOS", ["node1"], True),
        ("renew-certs", "etcd-peer", ["node2"], True),
    ]
    assert actions[0].command == "kubexm restart component etcd -f /srv/hc.yaml --nodes node2 -y"
    assert actions[2].command == "kubexm run task PrepareNodesOS -f /srv/hc.yaml --nodes node1 -y"
    assert actions[3].command == "kubexm certs renew etcd-peer -f /srv/hc.yaml -y"


def test_a_broken_member_is_only_planned_and_never_while_quorum_is_lost() -> None:
    fleet = Fleet(cluster())
    # etcd runs on node3 but the member does not answer: the unit is not the problem; replacing it is.
    fleet["node3"].etcd_up = False
    actions = plan(report(fleet), fleet.cluster, COMMAND)
    assert [(a.kind, a.nodes, a.automatic) for a in actions] == [("replace-etcd-member", ["node3"], False)]
    assert actions[0].command == ("kubexm delete nodes -f /srv/hc.yaml --nodes node3 -y, then "
                                  "kubexm add nodes -f /srv/hc.yaml --nodes node3 --role etcd -y")
    fleet["node2"].etcd_up = False  # now 1 of 3 answers
    actions = plan(report(fleet), fleet.cluster, COMMAND)
    assert all(not a.automatic and a.command == "" for a in actions)
    assert all("quorum is lost" in a.reason and "restore cluster" in a.reason for a in actions)


def test_a_slow_member_is_reported_but_never_replaced() -> None:
    fleet = Fleet(cluster())
    fleet["node2"].took = "2.5s"  # fails the latency check: a disk problem, not a member to replace
    r = report(fleet)
    assert [c.status for c in r.checks if c.id == "etcd.member" and c.target == "node2"] == ["fail"]
    assert plan(r, fleet.cluster, COMMAND) == []


def test_nothing_to_plan_on_a_healthy_cluster() -> None:
    fleet = Fleet(cluster())
    assert plan(report(fleet), fleet.cluster, COMMAND) == []


@pytest.mark.parametrize("broken", ["etcd", "containerd"])
def test_starting_a_stopped_unit_brings_the_report_back_to_ok(broken: str) -> None:
    fleet = Fleet(cluster())
    systemd(fleet)
    fleet["node2"].units[broken] = unit("failed" if broken == "containerd" else "inactive", "dead")
    if broken == "etcd":
        fleet["node2"].etcd_up = False
    before = report(fleet)
    assert before.exit_code == 4
    (action,) = plan(before, fleet.cluster, COMMAND)
    outcome = run_action(fleet.cluster, action, RunOptions(), command_line=COMMAND, factory=fleet.fleet.factory)
    assert outcome.ok, outcome.report.summary()
    # Only node2 was touched, and only to start that unit.
    started = [c for n in fleet.names for c in fleet.host(n).commands if "systemctl start" in c]
    assert len(started) == 1 and started[0] in [c for c in fleet.host("node2").commands]
    assert f"systemctl start -- {broken}" in started[0]
    after = report(fleet)
    assert after.status == "ok", [(c.target, c.id, c.reason) for c in after.checks if c.status != "ok"]


def test_a_task_rerun_goes_to_the_drifted_node_only() -> None:
    fleet = Fleet(cluster())
    fleet["node3"].sysctl["net.ipv4.ip_forward"] = "0"
    (action,) = plan(report(fleet), fleet.cluster, COMMAND)
    for name in fleet.names:
        fleet.host(name).commands.clear()
    run_action(fleet.cluster, action, RunOptions(), command_line=COMMAND, factory=fleet.fleet.factory)
    # PrepareNodesOS ran on node3 alone and wrote its sysctl file there (the fake cannot load modules, so the
    # run's own outcome is not what this test is about).
    assert fleet.host("node1").commands == [] and fleet.host("node2").commands == []
    assert "net.ipv4.ip_forward = 1" in fleet.host("node3").files["/etc/sysctl.d/99-kubexm.conf"].decode()

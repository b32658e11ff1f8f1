"""Risks of a change as a whole, judged from the impact and the cluster's roles, and the steps the planner
classifies as restarts, drains and etcd membership changes."""

from __future__ import annotations

from support.memory import MemoryFleet

from kubexm.engine import SERIAL, RunOptions, Task, all_hosts
from kubexm.governance.impact import Impact, UnitAction, assess
from kubexm.governance.plan import plan_impact
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.common import Systemd
from kubexm.steps.etcd_members import JoinEtcdCluster, LeaveEtcdCluster
from kubexm.steps.nodes import Drain


def cluster(cps: int, etcd: int, workers: int) -> Cluster:
    names = [f"n{i}" for i in range(1, max(cps, etcd) + workers + 1)]
    hosts = "".join(f"    - {{name: {n}, address: 10.0.0.{i + 1}}}\n" for i, n in enumerate(names))
    lb = "  controlPlaneEndpoint: {address: 10.0.0.100, loadBalancer: kube-vip}\n" if cps > 1 else ""
    return parse_cluster(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata: {name: risk}\nspec:\n  hosts:\n" + hosts
        + f"  roleGroups: {{etcd: [{', '.join(names[:etcd])}], control-plane: [{', '.join(names[:cps])}], "
        f"worker: [{', '.join(names[len(names) - workers:])}]}}\n" + lb)


def impact_with(c: Cluster, restarts: dict[str, list[str]] | None = None, drained: tuple[str, ...] = (),
                etcd: dict[str, str] | None = None) -> Impact:
    impact = Impact(c.name, "cluster")
    for unit, nodes in (restarts or {}).items():
        for n in nodes:
            impact.node(n, c.roles_of(n)).units.append(UnitAction(unit, "restart", "test"))
    for n in drained:
        impact.node(n, c.roles_of(n)).drained = True
    for n, change in (etcd or {}).items():
        impact.node(n, c.roles_of(n)).etcd.append(change)
    return impact


def rules(c: Cluster, impact: Impact, rolling: dict[str, bool] | None = None) -> dict[str, str]:
    return {r.rule: r.severity for r in assess(c, impact, rolling or {})}


def test_single_control_plane_restart_is_a_warning() -> None:
    c = cluster(cps=1, etcd=1, workers=2)
    assert rules(c, impact_with(c, {"containerd": ["n1"]}))["single-control-plane-restart"] == "warn"
    assert "single-control-plane-restart" not in rules(c, impact_with(c, {"containerd": ["n3"]}))
    three = cluster(cps=3, etcd=3, workers=1)
    assert rules(three, impact_with(three, {"kubelet": ["n1"]})) == {}
    every = impact_with(three, {"kubelet": ["n1", "n2", "n3"]})
    assert "all-control-planes-restart" in rules(three, every)
    assert "all-control-planes-restart" not in rules(three, every, {"kubelet": True})


def test_etcd_restart_all_at_once_loses_quorum_one_by_one_does_not() -> None:
    c = cluster(cps=1, etcd=3, workers=1)
    all_members = impact_with(c, {"etcd": ["n1", "n2", "n3"]})
    assert rules(c, all_members)["etcd-quorum-loss"] == "error"
    assert "etcd-quorum-loss" not in rules(c, all_members, {"etcd": True})
    assert "etcd-quorum-loss" not in rules(c, impact_with(c, {"etcd": ["n2"]}))
    single = cluster(cps=1, etcd=1, workers=1)
    assert rules(single, impact_with(single, {"etcd": ["n1"]}))["single-etcd-restart"] == "warn"


def test_draining_the_only_worker_is_a_warning() -> None:
    one = cluster(cps=1, etcd=1, workers=1)
    assert rules(one, impact_with(one, drained=("n2",)))["no-worker-left"] == "warn"
    two = cluster(cps=1, etcd=1, workers=2)
    # One at a time (an upgrade), the other worker takes the pods; removed together, none is left.
    assert "no-worker-left" not in rules(two, impact_with(two, drained=("n2", "n3")), {"drain": True})
    assert "no-worker-left" in rules(two, impact_with(two, drained=("n2", "n3")), {"drain": False})
    assert "no-worker-left" not in rules(two, impact_with(two, drained=("n2",)))


def test_etcd_membership_leaving_an_even_count_or_fewer_than_three() -> None:
    c = cluster(cps=1, etcd=3, workers=1)
    got = rules(c, impact_with(c, etcd={"n3": "remove"}))
    assert got == {"etcd-even-members": "warn", "etcd-below-three": "warn"}


def test_planner_classifies_drains_membership_and_restarts() -> None:
    c = cluster(cps=1, etcd=1, workers=2)
    fleet = MemoryFleet([h.name for h in c.spec.hosts])
    for host in fleet.hosts.values():
        host.on(r"systemctl is-active|kubectl|etcdctl", lambda h, m, _: (1, "", ""))  # nothing runs yet
        host.on(r"^test -e /var/lib/kubexm/restart-pending/", lambda h, m, _: (0, "", ""))  # a restart is owed
    tasks = [(None, Task("T", hosts=all_hosts(), strategy=SERIAL,
                         steps=[FakeDrain(), FakeJoin(), FakeLeave(), Systemd("containerd")]))]
    impact = plan_impact(c, tasks, RunOptions(), operation="upgrade", factory=fleet.factory)
    for name in ("n1", "n2", "n3"):
        node = impact.nodes[name]
        assert node.drained and node.etcd == ["add", "remove"]
        assert [(u.unit, u.action, u.reason) for u in node.units] == [
            ("containerd", "restart", "a restart owed by an earlier run")]
    # n1 is the only control plane, and containerd restarts there.
    assert "single-control-plane-restart" in {r.rule for r in impact.risks}


class FakeDrain(Drain):
    async def check(self, host: object) -> bool:  # type: ignore[override]
        return False


class FakeJoin(JoinEtcdCluster):
    async def check(self, host: object) -> bool:  # type: ignore[override]
        return False


class FakeLeave(LeaveEtcdCluster):
    async def check(self, host: object) -> bool:  # type: ignore[override]
        return False

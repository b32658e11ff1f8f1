"""``kubexm repair``: known, conservative remediations planned from the health report.

What kubexm repairs by itself, each through steps and pipelines that already exist (so a repair is what a
re-run of the right command would do, with its lock, run history and audit entries):

- a unit kubexm manages that is stopped or failed: enabled and started again (``Systemd``), etcd members one
  at a time;
- a node whose kernel settings drifted (sysctls, modules, swap back on): ``PrepareNodesOS`` on that node; a
  clock off by more than the limit: ``SyncTime`` on it;
- certificates expired or expiring within 30 days: the ``certs renew`` pipeline for those names.

What it only plans, naming the command: a broken etcd member (answering but unhealthy, or listed but gone)
is replaced with ``delete nodes`` then ``add nodes --role etcd``, and only while quorum holds; a component
missing on one node is installed again by ``create cluster``. Nothing else is touched.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

from kubexm.diagnostics.health_checks import Check, Hints, Report, selector_of
from kubexm.spec.models import Cluster

if TYPE_CHECKING:
    from kubexm.api import Outcome
    from kubexm.engine import RunOptions
    from kubexm.engine.events import Listener
    from kubexm.hosts.pool import ConnectionFactory

Kind = Literal["start-unit", "run-task", "renew-certs", "replace-etcd-member", "reinstall"]
# Drift a task of the create pipeline puts back, by check id.
TASK_FOR = {"node.sysctl": "PrepareNodesOS", "node.modules": "PrepareNodesOS", "node.swap": "PrepareNodesOS",
            "node.clock": "SyncTime"}
STOPPED = ("inactive", "failed", "deactivating")


@dataclass
class Action:
    kind: Kind
    what: str  # the unit, the task or the certificate names
    nodes: list[str]
    reason: str
    command: str  # the kubexm command that does the same (or, for a planned-only action, the one to run)
    automatic: bool = True
    checks: list[Check] = field(default_factory=list)

    def describe(self) -> str:
        where = ", ".join(self.nodes)
        return {"start-unit": f"start {self.what} on {where}",
                "run-task": f"re-run {self.what} on {where}",
                "renew-certs": f"renew {self.what} on {where}",
                "replace-etcd-member": f"replace etcd member {where}",
                "reinstall": f"install {self.what} again on {where}"}[self.kind]


def plan(report: Report, cluster: Cluster, command: str = "") -> list[Action]:
    """The remediations for the report's failures and warnings, in the order they are applied."""
    hints = Hints(cluster, selector_of(command, cluster))
    units: dict[str, Action] = {}
    tasks: dict[str, Action] = {}
    renew: dict[str, set[str]] = {}
    renew_nodes: list[str] = []
    manual: list[Action] = []
    quorum = next((c for c in report.checks if c.id == "etcd.quorum"), None)
    quorum_holds = quorum is None or quorum.status == "ok"
    for c in report.checks:
        if c.status == "ok":
            continue
        if c.id.startswith("unit.") and c.data.get("active_state") in STOPPED and c.data.get("load_state") == "loaded":
            unit = c.id.removeprefix("unit.")
            act = units.setdefault(unit, Action("start-unit", unit, [], f"{unit} is stopped", ""))
            act.nodes.append(c.target)
            act.checks.append(c)
        elif c.id.startswith("unit.") and c.data.get("load_state") == "not-found":
            manual.append(Action("reinstall", c.id.removeprefix("unit."), [c.target], c.reason,
                                 hints.kubexm("create", "cluster", "-y"), automatic=False, checks=[c]))
        elif c.id in TASK_FOR:
            task = TASK_FOR[c.id]
            act = tasks.setdefault(task, Action("run-task", task, [], "", ""))
            if c.target not in act.nodes:
                act.nodes.append(c.target)
            act.checks.append(c)
        elif c.id == "certs.expiry":
            renew.setdefault(c.target, set()).update(c.data.get("renew", []))
            renew_nodes.append(c.target)
        elif c.id == "etcd.member" and c.status == "fail":
            problem = c.data.get("problem")
            add = hints.kubexm("add", "nodes", "--nodes", c.target, "--role", "etcd", "-y")
            if problem == "not-member":
                manual.append(Action("replace-etcd-member", "etcd", [c.target], c.reason, add, automatic=False,
                                     checks=[c]))
            elif problem in ("no-answer", "unhealthy"):
                # Running (or at least not stopped) and still broken: the member is replaced, never while the
                # removal could cost quorum. A stopped member is started above; an unreachable one must come back.
                remove = hints.kubexm("delete", "nodes", "--nodes", c.target, "-y")
                why = c.reason if quorum_holds else c.reason + "; quorum is lost: do not remove a member, restore " \
                    f"from a backup instead ({hints.kubexm('restore', 'cluster', '--from', 'BACKUP', '-y')})"
                manual.append(Action("replace-etcd-member", "etcd", [c.target], why,
                                     f"{remove}, then {add}" if quorum_holds else "", automatic=False, checks=[c]))
    actions: list[Action] = []
    # etcd first: the API server and everything after it need it.
    for unit in sorted(units, key=lambda u: (u != "etcd", u)):
        act = units[unit]
        act.command = hints.kubexm("restart", "component", unit, "--nodes", ",".join(act.nodes), "-y", head=3)
        act.reason = "; ".join(c.reason for c in act.checks)
        actions.append(act)
    for task, act in tasks.items():
        act.reason = "; ".join(c.reason for c in act.checks)
        act.command = hints.kubexm("run", "task", task, "--nodes", ",".join(act.nodes), "-y", head=3)
        actions.append(act)
    if renew:
        certs = sorted(set().union(*renew.values()))
        nodes = sorted(set(renew_nodes))
        actions.append(Action("renew-certs", ", ".join(certs), nodes, "certificates expired or expiring",
                              hints.kubexm("certs", "renew", *certs, "-y", head=2 + len(certs))))
    return actions + manual


def run_action(cluster: Cluster, action: Action, options: RunOptions, *, command_line: str,
               listeners: Sequence[Listener] = (), factory: ConnectionFactory | None = None) -> Outcome:
    """Apply one automatic action through the engine (lock, run history, audit), as the equivalent kubexm
    command would."""
    from kubexm import api

    opts = replace(options, extra=dict(options.extra), nodes=None)
    if action.kind == "start-unit":
        from kubexm.engine import PARALLEL, SERIAL, Task, named
        from kubexm.steps.common import Systemd

        task = Task(f"Start-{action.what}", [Systemd(action.what)], hosts=named(*action.nodes),
                    strategy=SERIAL if action.what == "etcd" else PARALLEL,
                    description=f"enable and start {action.what} where it is stopped")
        return api.execute(cluster, [(None, task)], opts, name="RepairPipeline", command_line=command_line,
                           listeners=listeners, factory=factory)
    if action.kind == "run-task":
        opts.nodes = [",".join(action.nodes)]
        return api.run_task(cluster, action.what, opts, listeners=listeners, command_line=command_line,
                            factory=factory)
    if action.kind == "renew-certs":
        from kubexm.pki.inventory import resolve_names

        opts.extra["renew"] = resolve_names(action.what.split(", "))
        return api.run_pipeline(cluster, "RenewCertsPipeline", opts, command_line=command_line, listeners=listeners,
                                factory=factory)
    raise ValueError(f"{action.kind} is planned only, never applied")

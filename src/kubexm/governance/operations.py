"""The operations a plan can be made for, each as the run its own command would make, and the whole plan.

``kubexm plan cluster|add-nodes|delete-nodes|upgrade|config-sync`` builds the same pipeline, target spec and run
options as ``create cluster``, ``add nodes``, ``delete nodes``, ``upgrade cluster`` and ``config sync`` do, and
hands them to ``governance.plan`` as a connected dry run; policy and cost are judged on the target spec.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubexm.engine import RunOptions, get_registry
from kubexm.engine.events import Listener
from kubexm.errors import UsageError
from kubexm.governance.cost import CostEstimate, estimate, load_prices
from kubexm.governance.impact import Impact, Masker
from kubexm.governance.plan import plan_impact
from kubexm.governance.policy import Violation, evaluate, load_rules, policy_input
from kubexm.hosts.pool import ConnectionFactory
from kubexm.spec.models import Cluster, Host

OPERATIONS = ("cluster", "add-nodes", "delete-nodes", "upgrade", "config-sync")


@dataclass
class Operation:
    """What a plan runs: the pipeline, the spec the operation works towards, and the hosts it leaves."""

    name: str
    pipeline: str
    target: Cluster
    options: RunOptions
    after: list[Host]  # the cluster's hosts once the operation is done (for the cost)
    before: list[Host] | None = None  # the hosts before it, when the state store has no record of the cluster


@dataclass
class PlanResult:
    impact: Impact
    violations: list[Violation] = field(default_factory=list)
    cost: CostEstimate | None = None

    def to_dict(self) -> dict[str, Any]:
        return {**self.impact.to_dict(), "policy": [v.to_dict() for v in self.violations],
                "cost": self.cost.to_dict() if self.cost else None}


def stored_cluster(name: str) -> Cluster | None:
    """The spec last applied to cluster ``name``, as the state store keeps it (secrets redacted); None when the
    store has no record. Only reads: a missing state database is not created."""
    from kubexm.api import stored_spec_yaml
    from kubexm.errors import KubexmError
    from kubexm.spec.loader import parse_cluster

    text = stored_spec_yaml(name)
    if text is None:
        return None
    try:
        return parse_cluster(text, source=f"<stored cluster {name}>")
    except KubexmError:
        return None  # stored by an older kubexm with fields this one refuses: no baseline rather than a wrong one


def operation(name: str, cluster: Cluster, options: RunOptions, *, nodes: list[str] | None = None,
              role: str = "worker", to_version: str | None = None, applied_version: str | None = None) -> Operation:
    """The run ``name`` would make, as its own command builds it (see cli/add.py, delete.py, upgrade.py)."""
    hosts = list(cluster.spec.hosts)
    if name == "cluster":
        return Operation(name, "CreateClusterPipeline", cluster, options, hosts)
    if name == "config-sync":
        return Operation(name, "ConfigSyncPipeline", cluster, options, hosts, hosts)
    if name == "add-nodes":
        assert nodes is not None
        members = {h.name for h in cluster.hosts_with_role(role)}
        missing = [n for n in nodes if n not in members]
        if missing:
            raise UsageError(f"{', '.join(missing)} not listed in spec.roleGroups.{role} of the cluster file",
                             hint=f"add them to roleGroups.{role} (and spec.hosts) first")
        options.nodes = [",".join(nodes)]
        pipeline = "AddNodesPipeline" if role == "etcd" else "AddKubernetesNodesPipeline"
        return Operation(name, pipeline, cluster, options, hosts, [h for h in hosts if h.name not in nodes])
    if name == "delete-nodes":
        assert nodes is not None
        options.nodes = [",".join(nodes)]
        options.extra.update({"removing": nodes, "grace_period": -1, "drain_timeout": 300, "force_drain": False,
                              "skip_cleanup": False})
        kube = {h.name for h in cluster.hosts_with_role("control-plane") + cluster.hosts_with_role("worker")}
        pipeline = "DeleteKubernetesNodesPipeline" if kube & set(nodes) else "DeleteNodesPipeline"
        return Operation(name, pipeline, cluster, options, [h for h in hosts if h.name not in nodes], hosts)
    if name == "upgrade":
        assert to_version is not None
        upgraded = cluster.model_copy(deep=True)
        upgraded.spec.kubernetes.version = to_version
        options.extra.update({"node_concurrency": 1, "control_plane_only": False, "workers_only": False,
                              "from_version": applied_version})
        return Operation(name, "UpgradeClusterPipeline", upgraded, options, hosts, hosts)
    raise UsageError(f"no plan for {name!r}", hint=f"one of {', '.join(OPERATIONS)}")


def make_plan(op: Operation, *, policy_dirs: Sequence[Path] = (), prices: Path | None = None,
              min_cert_days: int = 30, applied_version: str | None = None, factory: ConnectionFactory | None = None,
              listeners: Sequence[Listener] = ()) -> PlanResult:
    """The impact of ``op`` (a connected dry run unless ``op.options.offline``), its policy violations and cost.

    Rule files and the price file are read before any host is contacted: a broken rule fails fast."""
    rules = load_rules(list(policy_dirs))
    price_table = load_prices(prices) if prices is not None else op.target.spec.cost
    source = str(prices) if prices is not None else "spec.cost"
    stored = stored_cluster(op.target.name)
    pipeline = get_registry().pipeline(op.pipeline)
    items = pipeline.plan(op.target, op.options.tags, op.options.skip_tags)
    if not items:
        raise UsageError("the tags selected no task", hint="`kubexm generate docs` lists tasks and their tags")
    impact = plan_impact(op.target, items, op.options, operation=op.name, name=pipeline.name,
                         masker=Masker.for_clusters(op.target, stored), factory=factory, listeners=listeners)
    violations = evaluate(rules, policy_input(op.target, impact=impact.to_dict(), applied_version=applied_version,
                                              min_cert_days=min_cert_days))
    before = list(stored.spec.hosts) if stored is not None else op.before
    cost = estimate(op.after, before, price_table, source, "as stored" if stored is not None else "before the change")
    return PlanResult(impact, violations, cost)

"""Task, Module and Pipeline: named compositions of steps, registered by name."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from kubexm.engine.selectors import Selector, all_hosts
from kubexm.engine.step import Step
from kubexm.spec.models import Cluster

if TYPE_CHECKING:
    from kubexm.engine.context import HostContext, RunContext

StepSource = Sequence[Step] | Callable[["HostContext"], Sequence[Step]]
ThenSource = Sequence[Step] | Callable[["RunContext"], Sequence[Step]]


@dataclass(frozen=True)
class Strategy:
    """How hosts proceed through a task.

    ``parallel``: every host at once, at most ``limit`` at a time (None: the run's bound).
    ``rolling``: ``batch`` hosts at a time; a batch starts only when the previous one
    finished cleanly (rolling upgrades, restarts that must keep quorum).
    """

    kind: Literal["parallel", "rolling"] = "parallel"
    limit: int | None = None
    batch: int = 1
    # The run option (RunOptions.extra key) that overrides ``batch``, e.g. --node-concurrency.
    batch_option: str | None = None

    def __str__(self) -> str:
        if self.kind == "rolling":
            return "one by one" if self.batch == 1 else f"{self.batch} at a time"
        return "all at once" if self.limit is None else f"all at once, at most {self.limit}"


PARALLEL = Strategy()
SERIAL = Strategy("rolling", batch=1)


def rolling(batch: int, option: str | None = None) -> Strategy:
    return Strategy("rolling", batch=max(1, batch), batch_option=option)


def _always(_: Cluster) -> bool:
    return True


@dataclass(frozen=True, eq=False)
class Task:
    """A named list of steps every targeted host walks, then ``then`` steps run once.

    ``then`` steps run on ``then_on`` (default: the first targeted host) after every
    host finished its steps without failure; e.g. wait for a cluster to be healthy.
    ``on_failure="continue"`` lets the other hosts carry on after one fails (ad-hoc
    commands); the default stops starting new steps anywhere once a host failed.
    """

    name: str
    steps: StepSource
    hosts: Selector = field(default_factory=all_hosts)
    tags: frozenset[str] = frozenset()
    strategy: Strategy = PARALLEL
    then: ThenSource = ()
    then_on: Selector | None = None
    description: str = ""
    on_failure: Literal["stop", "continue"] = "stop"
    when: Callable[[Cluster], bool] = _always  # the spec decides (e.g. which container runtime)
    # Ignores --nodes: work every node needs when some change (balancer backends after adding a control plane).
    whole_cluster: bool = False

    def steps_for(self, host: HostContext) -> list[Step]:
        return list(self.steps(host) if callable(self.steps) else self.steps)

    def then_steps(self, run: RunContext) -> list[Step]:
        return list(self.then(run) if callable(self.then) else self.then)

    def selected(self, tags: set[str], skip_tags: set[str]) -> bool:
        names = {self.name, *self.tags}
        if skip_tags & names:
            return False
        return not tags or bool(tags & names)


@dataclass(frozen=True, eq=False)
class Module:
    """The tasks of one component; ``enabled`` reads the cluster spec (e.g. etcd type external)."""

    name: str
    tasks: Sequence[Task]
    description: str = ""
    enabled: Callable[[Cluster], bool] = _always
    tags: frozenset[str] = frozenset()

    def tasks_for(self, cluster: Cluster, tags: set[str], skip_tags: set[str]) -> list[Task]:
        if not self.enabled(cluster):
            return []
        # A module's tags apply to all its tasks: `--tags etcd` selects every etcd task.
        out = []
        for task in self.tasks:
            if not task.when(cluster):
                continue
            names = {task.name, *task.tags, *self.tags, self.name}
            if skip_tags & names:
                continue
            # "always" (as in Ansible): preflight checks run whatever --tags selects, unless skipped by name.
            if tags and not (tags & names) and "always" not in task.tags:
                continue
            out.append(task)
        return out


@dataclass(frozen=True, eq=False)
class Pipeline:
    """The ordered modules that serve one user intent (create cluster, add nodes, ...)."""

    name: str
    modules: Sequence[Module]
    description: str = ""

    def plan(self, cluster: Cluster, tags: set[str] | None = None,
             skip_tags: set[str] | None = None) -> list[tuple[Module, Task]]:
        out: list[tuple[Module, Task]] = []
        for module in self.modules:
            for task in module.tasks_for(cluster, tags or set(), skip_tags or set()):
                out.append((module, task))
        return out

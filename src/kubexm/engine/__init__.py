"""The four layers (Step → Task → Module → Pipeline), the registry and the executor."""

from kubexm.engine.context import HostContext, RunContext, RunOptions
from kubexm.engine.events import Event, EventBus
from kubexm.engine.executor import Executor, RunReport, StepRecord, match_hosts
from kubexm.engine.registry import Registry, get_registry
from kubexm.engine.selectors import DEPLOY, all_hosts, deploy_machine, first, named, rest, role
from kubexm.engine.step import Step
from kubexm.engine.task import PARALLEL, SERIAL, Module, Pipeline, Strategy, Task, rolling

__all__ = [
    "DEPLOY", "PARALLEL", "SERIAL", "Event", "EventBus", "Executor", "HostContext", "Module", "Pipeline",
    "Registry", "RunContext", "RunOptions", "RunReport", "Step", "StepRecord", "Strategy", "Task",
    "all_hosts", "deploy_machine", "first", "get_registry", "match_hosts", "named", "rest", "role", "rolling",
]

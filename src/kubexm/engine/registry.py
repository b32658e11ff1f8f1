"""The one list of pipelines, modules and tasks that the CLI, plans and docs all read.

Built-in pipelines register in ``kubexm.builtin``; third-party packages add theirs
through the ``kubexm.plugins`` entry-point group: each entry point names a callable
``register(registry)`` (the way pytest discovers plugins).
"""

from __future__ import annotations

from importlib.metadata import entry_points

from kubexm.engine.task import Module, Pipeline, Task
from kubexm.errors import UsageError


class Registry:
    def __init__(self) -> None:
        self.pipelines: dict[str, Pipeline] = {}
        self.modules: dict[str, Module] = {}
        self.tasks: dict[str, Task] = {}

    def add_task(self, task: Task) -> Task:
        known = self.tasks.get(task.name)
        if known is not None and known is not task:
            raise ValueError(f"two different tasks are named {task.name}")
        self.tasks[task.name] = task
        return task

    def add_module(self, module: Module) -> Module:
        known = self.modules.get(module.name)
        if known is not None and known is not module:
            raise ValueError(f"two different modules are named {module.name}")
        self.modules[module.name] = module
        for task in module.tasks:
            self.add_task(task)
        return module

    def add_pipeline(self, pipeline: Pipeline) -> Pipeline:
        known = self.pipelines.get(pipeline.name)
        if known is not None and known is not pipeline:
            raise ValueError(f"two different pipelines are named {pipeline.name}")
        self.pipelines[pipeline.name] = pipeline
        for module in pipeline.modules:
            self.add_module(module)
        return pipeline

    def task(self, name: str) -> Task:
        try:
            return self.tasks[name]
        except KeyError:
            close = [t for t in sorted(self.tasks) if name.lower() in t.lower()]
            hint = f"did you mean {', '.join(close)}?" if close else "`kubexm generate docs` lists every task"
            raise UsageError(f"no task named {name!r}", hint) from None

    def pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise UsageError(f"no pipeline named {name!r}") from None

    def module_of(self, task: Task) -> Module | None:
        for module in self.modules.values():
            if any(t is task for t in module.tasks):
                return module
        return None


_REGISTRY: Registry | None = None


def get_registry() -> Registry:
    """The process-wide registry with built-ins and plugins loaded once."""
    global _REGISTRY
    if _REGISTRY is None:
        registry = Registry()
        from kubexm import builtin

        builtin.register(registry)
        for ep in entry_points(group="kubexm.plugins"):
            ep.load()(registry)
        _REGISTRY = registry
    return _REGISTRY

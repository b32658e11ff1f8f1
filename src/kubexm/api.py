"""The Python API: everything the CLI does, as plain calls.

A mutating run holds the cluster's lock, is recorded in the state store (run and step
results) and leaves one audit entry. The CLI only parses flags and renders events.
"""

from __future__ import annotations

import asyncio
import getpass
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kubexm.engine import Executor, Module, RunContext, RunOptions, RunReport, Task, get_registry
from kubexm.engine.events import EventBus, Listener
from kubexm.errors import StateError, UsageError
from kubexm.hosts.pool import ConnectionFactory, ConnectionPool
from kubexm.spec.default import default_local_cluster
from kubexm.spec.dump import dump_cluster
from kubexm.spec.loader import load_cluster, parse_cluster
from kubexm.spec.models import Cluster
from kubexm.state.audit import AuditLog
from kubexm.state.lock import cluster_lock
from kubexm.state.recorder import StateRecorder
from kubexm.state.store import Store


@dataclass
class Outcome:
    """A finished run: the engine's report plus what the run left for the caller to show."""

    report: RunReport
    shared: dict[str, object]

    @property
    def ok(self) -> bool:
        return self.report.ok


def resolve_cluster(file: Path | None = None, context: str | None = None, overrides: Sequence[str] = (),
                    default_local: bool = False, store: Store | None = None) -> Cluster:
    """The cluster a command works on: ``-f FILE``, else ``-c NAME`` or the current context.

    A stored cluster is re-read from the file it was created from when that still exists
    (the store keeps specs with secrets redacted).
    """
    if file is not None:
        return load_cluster(file, overrides)
    store = store or Store()
    name = context or store.current_context()
    if name is None:
        if default_local:
            return default_local_cluster()
        raise UsageError("no cluster given and no current context",
                         hint="pass -f cluster.yaml, or -c NAME (see `kubexm get clusters`)")
    row = store.get_cluster(name)
    if row is None:
        raise StateError(f"no cluster named '{name}' in the state store",
                         hint="`kubexm get clusters` lists them; pass -f FILE for a new one")
    if row.source and Path(row.source).is_file():
        return load_cluster(Path(row.source), overrides)
    return parse_cluster(row.spec_yaml, source=f"<stored cluster {name}>", overrides=overrides)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def execute(cluster: Cluster, items: Sequence[tuple[Module | None, Task]], options: RunOptions, *,
            name: str, command_line: str, listeners: Sequence[Listener] = (), source: Path | None = None,
            factory: ConnectionFactory | None = None, save_status: bool = False) -> Outcome:
    """Run tasks on a cluster with lock, run history and audit entry (offline plans touch nothing)."""
    bus = EventBus(list(listeners))
    pool = ConnectionPool(cluster, options.connect, factory=factory)
    run = RunContext(cluster, options, bus=bus, pool=pool, command=command_line)
    if options.offline:
        report = asyncio.run(Executor(run).run_tasks(items, name))
        return Outcome(report, run.shared)
    store = Store()
    try:
        with cluster_lock(cluster.name, command_line):
            recorder = StateRecorder(store, cluster.name, command_line, dry_run=options.dry_run)
            bus.subscribe(recorder)
            try:
                report = asyncio.run(Executor(run).run_tasks(items, name))
            except BaseException:
                recorder.flush()  # what finished before the interruption stays on record
                AuditLog(store).append(_user(), command_line, cluster.name, "interrupted", {"run_id": run.run_id})
                raise
            status = "ok" if report.ok else "failed"
            if not options.dry_run:
                AuditLog(store).append(_user(), command_line, cluster.name, status, {
                    "run_id": run.run_id, "summary": report.summary(), "stopped_at": report.stopped_at,
                    "hosts": [h.name for h in cluster.spec.hosts]})
                if save_status:
                    store.save_cluster(cluster.name, dump_cluster(cluster, secrets=False), status,
                                       str(source.resolve()) if source else None)
                    if report.ok:
                        store.use_context(cluster.name)
            return Outcome(report, run.shared)
    finally:
        store.close()


def create_cluster(cluster: Cluster, options: RunOptions, *, command_line: str = "kubexm create cluster",
                   listeners: Sequence[Listener] = (), source: Path | None = None,
                   factory: ConnectionFactory | None = None) -> Outcome:
    pipeline = get_registry().pipeline("CreateClusterPipeline")
    items = pipeline.plan(cluster, options.tags, options.skip_tags)
    if not items:
        raise UsageError("the tags selected no task", hint="`kubexm generate docs` lists tasks and their tags")
    return execute(cluster, items, options, name=pipeline.name, command_line=command_line, listeners=listeners,
                   source=source, factory=factory, save_status=True)


def run_command(cluster: Cluster, command: str, options: RunOptions, *, sudo: bool = True,
                timeout: float | None = None, listeners: Sequence[Listener] = (),
                command_line: str = "kubexm run command", factory: ConnectionFactory | None = None) -> Outcome:
    # Straight from its module, not the registry: loading every pipeline and plugin would cost an ad-hoc
    # command more start-up than the command itself, and plugins extend tasks, not `run command`.
    from kubexm.pipelines.adhoc import RUN_COMMAND as pipeline

    options.extra.update({"command": command, "sudo": sudo, "timeout": timeout})
    return execute(cluster, pipeline.plan(cluster), options, name=pipeline.name, command_line=command_line,
                   listeners=listeners, factory=factory)


def run_task(cluster: Cluster, task_name: str, options: RunOptions, *, listeners: Sequence[Listener] = (),
             command_line: str = "", factory: ConnectionFactory | None = None) -> Outcome:
    registry = get_registry()
    task = registry.task(task_name)
    module = registry.module_of(task)
    return execute(cluster, [(module, task)], options, name=f"task {task.name}",
                   command_line=command_line or f"kubexm run task {task_name}", listeners=listeners,
                   factory=factory)


def run_pipeline(cluster: Cluster, pipeline_name: str, options: RunOptions, *, command_line: str,
                 listeners: Sequence[Listener] = (), factory: ConnectionFactory | None = None) -> Outcome:
    """Run a registered pipeline (backup, restore, certs ...) with lock, history and audit."""
    pipeline = get_registry().pipeline(pipeline_name)
    return execute(cluster, pipeline.plan(cluster, options.tags, options.skip_tags), options, name=pipeline.name,
                   command_line=command_line, listeners=listeners, factory=factory)

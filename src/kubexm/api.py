"""The Python API: everything the CLI does, as plain calls.

A run that connects holds the cluster's lock and is recorded in the state store (run and step results);
a mutating one also writes an audit entry before it touches a host and a second one when it ends.
SIGTERM and SIGHUP end a run the way Ctrl-C does. The CLI only parses flags and renders events.
"""

from __future__ import annotations

import asyncio
import getpass
import signal
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any

from kubexm.engine import Executor, Module, RunContext, RunOptions, RunReport, Task, get_registry
from kubexm.engine.events import EventBus, Listener
from kubexm.errors import StateError, UsageError
from kubexm.hosts.pool import ConnectionFactory, ConnectionPool
from kubexm.spec.default import default_local_cluster
from kubexm.spec.dump import dump_cluster, redacted_secrets
from kubexm.spec.loader import load_cluster, parse_cluster
from kubexm.spec.models import Cluster
from kubexm.state.audit import AuditLog
from kubexm.state.lock import cluster_lock
from kubexm.state.recorder import StateRecorder
from kubexm.state.redact import redact_command_line
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

    A stored cluster is re-read from the file it was created from when that still exists (the store
    keeps specs with secrets redacted). Without that file a stored spec is used only if it needs no
    secret, or the overrides give every one it lacks: ``<redacted>`` is never run as a password.
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
    cluster = parse_cluster(row.spec_yaml, source=f"<stored cluster {name}>", overrides=overrides)
    missing = redacted_secrets(cluster)
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        gone = f"its cluster file {row.source} is gone" if row.source else "no cluster file was recorded"
        raise StateError(f"cluster {name}: the stored spec keeps its secrets redacted ({shown}) and {gone}: "
                         "the cluster file is needed", hint="pass -f FILE")
    return cluster


def stored_spec_yaml(name: str) -> str | None:
    """The spec last applied to cluster ``name`` as the state store keeps it (YAML, secrets redacted), or None
    when the store has no record. Only reads: a missing state database is not created."""
    from kubexm import paths

    if not paths.state_db().is_file():
        return None
    store = Store()
    try:
        row = store.get_cluster(name)
    finally:
        store.close()
    return None if row is None else row.spec_yaml


def applied_field(name: str, *path: str) -> str | None:
    """One string field (e.g. "spec", "kubernetes", "version") of the spec last applied to ``name``; None when
    the store has no record or the field is not a string there."""
    text = stored_spec_yaml(name)
    if text is None:
        return None
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value: Any = YAML(typ="safe").load(text)
        for key in path:
            value = value[key]
    except (YAMLError, KeyError, TypeError):
        return None
    return value if isinstance(value, str) else None


def applied_version(name: str) -> str | None:
    """The Kubernetes version of the spec last applied to cluster ``name`` (``create cluster`` and a successful
    ``upgrade cluster`` record it), or None when the store has no record."""
    return applied_field(name, "spec", "kubernetes", "version")


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


class _Interruption:
    """SIGTERM and SIGHUP handled like Ctrl-C for the length of a run.

    They take the path SIGINT takes at that moment: asyncio's handler while the engine runs (the main task
    is cancelled, steps unwind, connections close, KeyboardInterrupt follows), KeyboardInterrupt elsewhere.
    While a run's outcome is being recorded (``held``) every one of the three waits, then interrupts.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.saved: dict[int, Any] = {}
        self.holding = False
        self.pending: int | None = None
        self.received: str | None = None
        self.active = threading.current_thread() is threading.main_thread()

    def __enter__(self) -> _Interruption:
        if self.active:
            for sig in self.SIGNALS:
                self.saved[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, old in self.saved.items():
            signal.signal(sig, old)
        self.saved.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signal.Signals(signum).name
        if self.holding:
            self.pending = signum
            return
        current = signal.getsignal(signal.SIGINT)
        if callable(current) and current is not self._handle:
            current(signal.SIGINT, frame)  # asyncio's SIGINT handler or default_int_handler
            return
        raise KeyboardInterrupt(self.received)

    @contextmanager
    def held(self) -> Iterator[None]:
        """Record without being cut short; an interruption that arrived meanwhile is raised at the end."""
        if not self.active:
            yield
            return
        self.holding = True
        old_int = signal.signal(signal.SIGINT, self._handle)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, old_int)
            self.holding = False
        if self.pending is not None:
            self.pending = None
            raise KeyboardInterrupt(self.received)


def _hosts(cluster: Cluster, options: RunOptions) -> list[str]:
    if options.nodes:
        from kubexm.engine.executor import match_hosts

        return match_hosts(cluster, options.nodes)
    return [h.name for h in cluster.spec.hosts]


def refuse_redacted(cluster: Cluster) -> None:
    """A spec read back from the state store has ``<redacted>`` where its secrets were: refused before anything
    connects, so that text is never sent as a password or written into a node's config."""
    if missing := redacted_secrets(cluster):
        raise StateError(f"cluster {cluster.name}: the stored spec has <redacted> where a secret belongs "
                         f"({', '.join(missing[:3])}): the cluster file is needed", hint="pass -f FILE")


def run_context(cluster: Cluster, options: RunOptions, *, command: str, listeners: Sequence[Listener] = (),
                factory: ConnectionFactory | None = None) -> RunContext:
    """The context every run that reaches hosts works in (pipelines, plans, health, logs). A spec read back
    from the state store is refused first (``refuse_redacted``)."""
    if not options.offline:
        refuse_redacted(cluster)
    return RunContext(cluster, options, bus=EventBus(list(listeners)),
                      pool=ConnectionPool(cluster, options.connect, factory=factory), command=command)


def execute(cluster: Cluster, items: Sequence[tuple[Module | None, Task]], options: RunOptions, *,
            name: str, command_line: str, listeners: Sequence[Listener] = (), source: Path | None = None,
            factory: ConnectionFactory | None = None, save_status: bool = False, remember: bool = False) -> Outcome:
    """Run tasks on a cluster with lock, run history and audit entries (offline plans touch nothing).

    ``save_status``: store the spec and the run's status, and make the cluster the current context when it
    succeeded (``create cluster``). ``remember``: store the spec only when the run succeeded, as the one now
    applied (``upgrade cluster``: the next upgrade's skew is judged from it)."""
    command_line = redact_command_line(command_line)  # whatever the caller did: history and audit get no secret
    run = run_context(cluster, options, command=command_line, listeners=listeners, factory=factory)
    if options.offline:
        report = asyncio.run(Executor(run).run_tasks(items, name))
        return Outcome(report, run.shared)
    store = Store()
    try:
        with _Interruption() as signals, cluster_lock(cluster.name, command_line, run.run_id):
            recorder = StateRecorder(store, cluster.name, command_line, dry_run=options.dry_run)
            run.bus.subscribe(recorder)
            audit = None if options.dry_run else AuditLog(store)
            with signals.held():
                started = audit.begin(_user(), command_line, cluster.name, run.run_id,
                                      _hosts(cluster, options)) if audit else None
            try:
                report = asyncio.run(Executor(run).run_tasks(items, name))
            except BaseException as exc:
                interrupted = isinstance(exc, KeyboardInterrupt | asyncio.CancelledError)
                status = "interrupted" if interrupted else "failed"
                detail = signals.received or ("SIGINT" if interrupted else f"{type(exc).__name__}: {exc}"[:200])
                with signals.held():
                    recorder.finish(status, f"{status} ({detail})", None)
                    if audit and started:
                        audit.complete(started, status, {"reason": detail})
                raise
            status = "ok" if report.ok else "failed"
            with signals.held():
                if audit and started:
                    audit.complete(started, status, {"summary": report.summary(), "stopped_at": report.stopped_at})
                if (save_status or (remember and report.ok)) and not options.dry_run:
                    store.save_cluster(cluster.name, dump_cluster(cluster, secrets=False), status,
                                       str(source.resolve()) if source else None)
                    if save_status and report.ok:
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
                 listeners: Sequence[Listener] = (), factory: ConnectionFactory | None = None,
                 remember: bool = False, source: Path | None = None) -> Outcome:
    """Run a registered pipeline (backup, restore, certs ...) with lock, history and audit; ``remember``
    and ``source`` as in :func:`execute`."""
    pipeline = get_registry().pipeline(pipeline_name)
    return execute(cluster, pipeline.plan(cluster, options.tags, options.skip_tags), options, name=pipeline.name,
                   command_line=command_line, listeners=listeners, factory=factory, remember=remember, source=source)

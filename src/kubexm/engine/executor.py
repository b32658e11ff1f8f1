"""Runs tasks over hosts on asyncio: tasks are barriers, hosts walk their steps independently."""

from __future__ import annotations

import asyncio
import fnmatch
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias, TypeVar, cast

from kubexm.engine.context import (
    PLANNING,
    FileWant,
    HostContext,
    RunContext,
    file_state_command,
    files_match,
    parse_file_states,
)
from kubexm.engine.events import Event, StepStatus
from kubexm.engine.selectors import DEPLOY
from kubexm.engine.step import Step
from kubexm.engine.task import Module, Pipeline, Task
from kubexm.errors import (
    CommandFailed,
    ConnectionFault,
    HostUnreachable,
    KubexmError,
    NotApplicable,
    StepFailed,
    UsageError,
    stderr_tail,
)
from kubexm.hosts.shell import Cmd, seq, shell
from kubexm.spec.models import Cluster

T = TypeVar("T")
# One step's batched check: a read-only command, {path: FileWant} (check_files) or {path: sha256} (check_digests).
_Check: TypeAlias = Cmd | dict[str, FileWant] | dict[str, str]


@dataclass
class StepRecord:
    module: str | None
    task: str
    host: str
    step: str
    description: str
    status: StepStatus
    message: str = ""
    duration: float = 0.0
    command: str | None = None
    exit_status: int | None = None
    stderr: str | None = None
    mutates: bool = True  # False for read-only steps (probes, health waits)


@dataclass
class RunReport:
    run_id: str
    records: list[StepRecord] = field(default_factory=list)
    stopped_at: str | None = None  # the task where the run stopped after a failure
    tasks_run: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[StepRecord]:
        return [r for r in self.records if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def count(self, status: str) -> int:
        return sum(1 for r in self.records if r.status == status)

    def summary(self) -> str:
        parts = [f"{self.count(s)} {s}" for s in
                 ("changed", "ok", "would-change", "planned", "not-applicable", "failed", "skipped")
                 if self.count(s)]
        return ", ".join(parts) or "nothing to do"


def match_hosts(cluster: Cluster, patterns: Sequence[str]) -> list[str]:
    """Host names matching any pattern: a glob on the host name, or a role name (``etcd``,
    ``control-plane``, also ``role:etcd``). Patterns may be comma-separated."""
    wanted: list[str] = []
    flat = [p.strip() for pat in patterns for p in pat.split(",") if p.strip()]
    for pat in flat:
        role_name = pat.removeprefix("role:")
        hits = [h.name for h in cluster.hosts_with_role(role_name)] if role_name in _ROLES else []
        if not pat.startswith("role:"):
            hits += [h.name for h in cluster.spec.hosts
                     if fnmatch.fnmatchcase(h.name, pat) or h.address == pat or h.internal_address == pat]
        if not hits:
            raise UsageError(f"--nodes {pat!r} matches no host of cluster {cluster.name}",
                             "use host names, globs like 'node*', addresses, or role names")
        wanted += [h for h in hits if h not in wanted]
    return wanted


_ROLES = ("etcd", "control-plane", "worker", "loadbalancer", "registry")


def _defined_in(obj: object, attr: str) -> type | None:
    return next((cls for cls in type(obj).__mro__ if attr in cls.__dict__), None)


def task_targets(run: RunContext, task: Task, allowed: set[str] | None = None) -> list[str]:
    """The hosts ``task`` works on in this run: its selector, narrowed by --nodes (``allowed``, computed when
    not given) unless the task needs the whole cluster."""
    if allowed is None and run.options.nodes:
        allowed = set(match_hosts(run.cluster, run.options.nodes))
    names = task.hosts(run.cluster)
    if allowed is None or task.whole_cluster:
        return names
    return [n for n in names if n == DEPLOY or n in allowed]


class Executor:
    def __init__(self, run: RunContext) -> None:
        self.run = run
        self.report = RunReport(run.run_id)
        nodes = run.options.nodes
        self._allowed: set[str] | None = set(match_hosts(run.cluster, nodes)) if nodes else None

    # -- public --------------------------------------------------------------------------
    async def run_pipeline(self, pipeline: Pipeline) -> RunReport:
        opts = self.run.options
        return await self.run_tasks(pipeline.plan(self.run.cluster, opts.tags, opts.skip_tags), pipeline.name)

    async def run_tasks(self, items: Sequence[tuple[Module | None, Task]], name: str = "") -> RunReport:
        run = self.run
        run.plan = [task for _, task in items]
        run.emit(Event("run.start", message=name, data={
            "tasks": [t.name for _, t in items], "dry_run": run.options.dry_run,
            "offline": run.options.offline, "cluster": run.cluster.name}))
        current: Module | None = None
        try:
            for module, task in items:
                if module is not current:
                    if current is not None:
                        run.emit(Event("module.end", module=current.name))
                    current = module
                    if module is not None:
                        run.emit(Event("module.start", module=module.name, message=module.description))
                ok = await self._run_task(module, task)
                self.report.tasks_run.append(task.name)
                if not ok:
                    self.report.stopped_at = task.name
                    break
            if current is not None:
                run.emit(Event("module.end", module=current.name))
        finally:
            await run.close()
        run.emit(Event("run.end", status="ok" if self.report.ok else "failed",
                       message=self.report.summary(), data={"stopped_at": self.report.stopped_at}))
        return self.report

    # -- internals -----------------------------------------------------------------------
    def targets(self, task: Task) -> list[str]:
        return task_targets(self.run, task, self._allowed)

    async def _run_task(self, module: Module | None, task: Task) -> bool:
        run, mname = self.run, module.name if module else None
        hosts = self.targets(task)
        run.emit(Event("task.start", module=mname, task=task.name, message=task.description,
                       data={"hosts": hosts, "strategy": str(task.strategy)}))
        stop = asyncio.Event()
        failed_hosts: list[str] = []
        limit = task.strategy.limit or run.options.parallel
        sem = asyncio.Semaphore(max(1, limit))

        dials: dict[str, asyncio.Task[None]] = {}
        if not run.options.offline:
            # Dial every host of the task at once (handshakes are bounded by the dialer, not by task slots):
            # hosts that are down are found together in one connect timeout instead of holding slots in turn,
            # and each host starts its steps as soon as its own connection is there.
            dials = run.pool.dial_each([h for h in hosts if h != DEPLOY])

        async def walk(name: str) -> None:
            dial = dials.get(name)
            if dial is not None:
                await asyncio.wait([dial])  # before taking a slot: a dead host's dial never holds one
            async with sem:
                if stop.is_set():
                    self._record(mname, task, name, "(not started)", "(not started)", "skipped",
                                 f"not started: stopping after a failure on {', '.join(failed_hosts)}")
                    return
                ok = await self._walk_host(mname, task, run.host(name), stop)
                run.emit(Event("host.end", module=mname, task=task.name, host=name, status="ok" if ok else "failed"))
                if not ok:
                    failed_hosts.append(name)
                    if task.on_failure == "stop":
                        stop.set()

        try:
            if task.strategy.kind == "rolling":
                size = task.strategy.batch
                if task.strategy.batch_option:
                    size = max(1, int(run.options.extra.get(task.strategy.batch_option, size)))
                for i in range(0, len(hosts), size):
                    await asyncio.gather(*(walk(h) for h in hosts[i:i + size]))
                    if failed_hosts:
                        stop.set()  # never roll on to the next batch after a failure
            else:
                await asyncio.gather(*(walk(h) for h in hosts))
        finally:
            # Dials of hosts that never walked (a rolling task stopped early, an interrupted run) end with the task.
            pending = [d for d in dials.values() if not d.done()]
            for d in pending:
                d.cancel()
            if pending:
                await asyncio.wait(pending)

        if not failed_hosts and hosts:
            then = task.then_steps(run)
            if then:
                where = (task.then_on(run.cluster) if task.then_on else hosts)[:1] or hosts[:1]
                host = run.host(where[0])
                for step in then:
                    rec = await self._step(mname, task, host, step)
                    if rec.status == "failed":
                        failed_hosts.append(host.name)
                        break
        run.emit(Event("task.end", module=mname, task=task.name,
                       status="failed" if failed_hosts else "ok", data={"failed_hosts": failed_hosts}))
        return not failed_hosts

    async def _walk_host(self, mname: str | None, task: Task, host: HostContext, stop: asyncio.Event) -> bool:
        try:
            steps = task.steps_for(host)
        except KubexmError as exc:
            self._record(mname, task, host.name, "(prepare)", "prepare steps", "failed", exc.message)
            return False
        batched = await self._batched_checks(host, steps)
        for index, step in enumerate(steps):
            if stop.is_set() and task.on_failure == "stop":
                for later in steps[index:]:
                    self._record(mname, task, host.name, later.name, later.describe(), "skipped",
                                 "not started: the run is stopping after a failure elsewhere")
                return True
            rec = await self._step(mname, task, host, step, batched.get(index))
            if rec.status == "failed":
                return False
            if rec.status in ("changed", "would-change"):
                batched = {}  # the host changed: later answers may be stale, each step checks again
        return True

    async def _batched_checks(self, host: HostContext, steps: Sequence[Step]) -> dict[int, bool]:
        """Every step's check in one command; {step index: done}. Empty when there is nothing to batch."""
        if self.run.options.offline:
            return {}
        checks: dict[int, _Check] = {}
        for i, step in enumerate(steps):
            checker = _defined_in(step, "check")
            try:
                # The inherited check() answers from check_files; a check() refined next to it still means it.
                if checker in (Step, _defined_in(step, "check_files")) and (files := step.check_files(host)):
                    checks[i] = files
                elif checker is _defined_in(step, "check_digests") and (digests := step.check_digests(host)):
                    checks[i] = digests
                elif checker is _defined_in(step, "check_script") and (script := step.check_script(host)):
                    checks[i] = script
                # else: a subclass refined check(), so an inherited answer may no longer mean the same
            except Exception:  # a step that cannot say in advance checks on its own
                continue
        if len(checks) < 2:
            return {}
        answers: dict[int, bool] = {}
        as_root = host.spec is None or host.spec.user == "root"
        plain = {i: c for i, c in checks.items() if not as_root and steps[i].check_unprivileged}
        if plain:
            # sudo costs the host more than the checks themselves (tens of ms per call): what the login user
            # can confirm needs no root. Only "done" is taken from this round; the rest is asked as root.
            answers = {i: True for i, done in (await self._run_checks(host, plain, sudo=False)).items() if done}
        rest = {i: c for i, c in checks.items() if i not in answers}
        if rest:
            answers.update(await self._run_checks(host, rest, sudo=True))
        return answers

    @staticmethod
    async def _run_checks(host: HostContext, checks: dict[int, _Check], sudo: bool) -> dict[int, bool]:
        scripts = {i: c for i, c in checks.items() if isinstance(c, Cmd)}
        files = {i: c for i, c in checks.items() if not isinstance(c, Cmd)}
        parts = [shell("if {check} >/dev/null 2>&1; then echo {i}=0; else echo {i}=1; fi",
                       check=s.subshell(), i=i, readonly=True) for i, s in scripts.items()]
        paths = sorted({p for wanted in files.values() for p in wanted})
        if paths:
            # One sha256sum and one stat for every file of the host; missing or unreadable files print nothing.
            large = any(isinstance(w, FileWant) and w.large for wanted in files.values() for w in wanted.values())
            parts.append(shell("echo '#files'; {state}; true", state=file_state_command(paths, fast=large),
                               readonly=True))
        try:
            token = PLANNING.set(True)
            try:
                res = await host.run(seq(*parts), sudo=sudo, check=False, display="batched checks")
            finally:
                PLANNING.reset(token)
        except KubexmError:
            return {}  # e.g. a transport fault: the steps check one by one, with the usual retries
        answers: dict[int, bool] = {}
        head, in_files, tail = res.stdout.partition("#files\n")
        for line in head.splitlines():
            key, _, value = line.partition("=")
            if key.isdigit() and int(key) in scripts:
                answers[int(key)] = value == "0"
        if paths and in_files:
            digests, attrs = parse_file_states(tail)
            for i, wanted in files.items():
                if all(isinstance(w, FileWant) for w in wanted.values()):
                    answers[i] = files_match(cast("dict[str, FileWant]", wanted), digests, attrs)
                else:  # check_digests: content only
                    answers[i] = all(digests.get(p) == d for p, d in wanted.items())
        return answers

    async def _step(self, mname: str | None, task: Task, host: HostContext, step: Step,
                    batched: bool | None = None) -> StepRecord:
        run, opts = self.run, self.run.options
        desc = step.describe()
        run.emit(Event("step.start", module=mname, task=task.name, host=host.name, step=step.name, message=desc))
        start = time.monotonic()
        status: StepStatus
        message, command, exit_status, stderr = "", None, None, None
        attempt = 0
        started_run = False
        while True:
            try:
                if opts.offline:
                    status = "planned"
                    break
                try:
                    # A batched "done" is trusted; a batched "not done" is confirmed by the step itself,
                    # which may know more (e.g. not applicable on this host).
                    done = True if batched else await _planning(step.check(host))
                except (CommandFailed, StepFailed) as exc:
                    # An unreadable state means "not as wanted": let run() decide, and say why in a plan.
                    done, message = False, f"check: {exc}"
                if done:
                    status, message = "ok", ""
                elif opts.dry_run and step.mutates:
                    status = "would-change"
                    if run.observer is not None:
                        await _planning(run.observer(task, step, host))
                elif opts.dry_run:
                    await _planning(step.run(host))  # a read-only step's answer is part of the plan
                    status, message = "ok", ""
                else:
                    started_run = True
                    await step.run(host)
                    status, message = ("changed" if step.mutates else "ok"), ""
                break
            except NotApplicable as na:
                status, message = "not-applicable", na.reason
                break
            except HostUnreachable as exc:
                # The dial already retried what was transient within the host's connect budget; the host
                # is down or unreachable for this run, and waiting for it again would only hold others up.
                status, message = "failed", exc.message
                break
            except ConnectionFault as exc:
                attempt += 1
                if not step.retryable and started_run:
                    status, message = "failed", (
                        f"{exc.message} while '{desc}' was running; it is not retried automatically because the "
                        "first attempt may still be running on the host: check the host, then run the command again")
                    break
                if attempt > opts.retries:
                    status, message = "failed", f"{exc.message} (gave up after {opts.retries} retries)"
                    break
                delay = opts.retry_backoff * 2 ** (attempt - 1)
                run.emit(Event("host.retry", task=task.name, host=host.name, step=step.name,
                               message=f"{exc.message}; retry {attempt}/{opts.retries} in {delay:.1f}s"))
                await run.pool.reset(host.name)
                await asyncio.sleep(delay)
            except CommandFailed as exc:
                status, message = "failed", exc.message
                command, exit_status, stderr = exc.command, exc.exit_status, stderr_tail(exc.stderr or exc.stdout)
                break
            except KubexmError as exc:
                status, message = "failed", str(exc)
                break
            except Exception as exc:  # a bug in a step must still end as a report, not a traceback
                status, message = "failed", f"internal error in step {step.name}: {type(exc).__name__}: {exc}"
                break
        return self._record(mname, task, host.name, step.name, desc, status, message,
                            time.monotonic() - start, command, exit_status, stderr, step.mutates)

    def _record(self, mname: str | None, task: Task, host: str, step: str, desc: str, status: StepStatus,
                message: str = "", duration: float = 0.0, command: str | None = None,
                exit_status: int | None = None, stderr: str | None = None, mutates: bool = True) -> StepRecord:
        rec = StepRecord(mname, task.name, host, step, desc, status, message, duration, command,
                         exit_status, stderr, mutates)
        self.report.records.append(rec)
        self.run.emit(Event("step.end", module=mname, task=task.name, host=host, step=step, status=status,
                            message=message or desc, data={
                                "description": desc, "duration": round(duration, 3), "command": command,
                                "exit_status": exit_status, "stderr": stderr, "mutates": mutates}))
        return rec


async def _planning(work: Awaitable[T]) -> T:
    """Await ``work`` with the host side read-only: any command not declared read-only is refused."""
    token = PLANNING.set(True)
    try:
        return await work
    finally:
        PLANNING.reset(token)

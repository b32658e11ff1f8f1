"""A plan: the connected dry run of an operation, followed step by step and summarised as its impact.

The executor plans as it always does (every check read-only, mutating steps reported as "would change"); for
each step that would change its host it calls the planner (``RunContext.observer``), which

- for steps that render files from the spec and place them with ``HostContext.upload`` (``RENDERS``): runs the
  step with uploads captured (``UPLOAD_CAPTURE``) and still read-only (``PLANNING``), so every file it would
  write is compared with the node's copy, read with ``cat``; the first command that would change the host ends
  the step (refused as always), after its files were seen. The step marks changed files as it would in a real
  run, so a unit restarting on them is found by the unit's own check;
- for units, drains, etcd membership and restarts: records what the step would do, by its kind.

Nothing is written anywhere: on the nodes PLANNING refuses it, and the steps run this way do their work through
``upload`` and host commands alone.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from pathlib import Path

from kubexm.engine import DEPLOY, Executor, HostContext, Module, RunOptions, Step, Task
from kubexm.engine.context import UPLOAD_CAPTURE, file_attrs
from kubexm.engine.events import Listener
from kubexm.errors import KubexmError, NotApplicable, PlanViolation
from kubexm.governance.impact import FileChange, Impact, Masker, UnitAction, assess, text_change
from kubexm.hosts.digest import LARGE_FILE, sha256_file
from kubexm.hosts.pool import ConnectionFactory
from kubexm.spec.models import Cluster
from kubexm.steps.common import PutFile, Systemd, Template, restart_marker
from kubexm.steps.etcd_members import JoinEtcdCluster, LeaveEtcdCluster
from kubexm.steps.nodes import Drain, RestartComponent
from kubexm.steps.os import HostsFile, KernelModules, Sysctl
from kubexm.steps.runtime import ConfigFiles
from kubexm.steps.upgrade import RestartKubelet

# Steps whose run() renders files from the spec and places them with upload() before any other change, doing
# nothing on the deploy machine: run with uploads captured they show their files without side effects.
# Other steps are listed by their description.
RENDERS: tuple[type[Step], ...] = (PutFile, Template, ConfigFiles, Sysctl, KernelModules, HostsFile)
# Files larger than this are compared by checksum only; a diff of them would not be read.
DIFF_LIMIT = 256 * 1024
# A rendering step has this long to reach its files (its reads are checks; a step waiting on something is not
# one that renders).
CAPTURE_TIMEOUT = 60.0


class Planner:
    """The executor's observer during a plan: turns each would-change step into entries of ``impact``."""

    def __init__(self, cluster: Cluster, operation: str, masker: Masker) -> None:
        self.cluster = cluster
        self.masker = masker
        self.impact = Impact(cluster.name, operation)
        self.rolling: dict[str, bool] = {}

    def _node(self, host: HostContext) -> str:
        name = "deploy machine" if host.name == DEPLOY else host.name
        return self.impact.node(name, host.roles).name

    def _note_rolling(self, key: str, task: Task) -> None:
        one_by_one = task.strategy.kind == "rolling" and task.strategy.batch == 1
        self.rolling[key] = self.rolling.get(key, True) and one_by_one

    async def observe(self, task: Task, outer: Step, host: HostContext) -> None:
        node = self.impact.nodes[self._node(host)]
        # A step wrapping another (config sync's Synced) is judged by what it wraps, and run as itself.
        inner = getattr(outer, "inner", None)
        step = inner if isinstance(inner, Step) else outer
        if isinstance(step, Systemd):
            changed = sorted(set(host.vars.get("changed_files", set())) & set(step.restart_on))
            if changed:
                node.units.append(UnitAction(step.unit, step.on_change, "changed: " + ", ".join(changed)))
            elif await host.exists(restart_marker(step.unit)):
                node.units.append(UnitAction(step.unit, step.on_change, "a restart owed by an earlier run"))
            else:
                node.units.append(UnitAction(step.unit, "start", "not enabled and running"))
            self._note_rolling(step.unit, task)
        elif isinstance(step, RestartComponent):
            node.units.append(UnitAction(step.component, "restart", step.describe()))
            self._note_rolling(step.component, task)
        elif isinstance(step, RestartKubelet):
            node.units.append(UnitAction("kubelet", "restart", "new kubelet version"))
            self._note_rolling("kubelet", task)
        elif isinstance(step, Drain):
            node.drained = True
            self._note_rolling("drain", task)
            if self.impact.operation == "delete-nodes":
                self.rolling["drain"] = False  # removed for good: their pods never come back
        elif isinstance(step, JoinEtcdCluster):
            node.etcd.append("add")
        elif isinstance(step, LeaveEtcdCluster):
            node.etcd.append("remove")
        elif isinstance(step, RENDERS):
            await self._capture(outer, host)
        else:
            node.other.append(step.describe())

    async def _capture(self, step: Step, host: HostContext) -> None:
        node = self.impact.nodes[self._node(host)]

        async def capture(ctx: HostContext, source: Path | bytes, remote: str, mode: int, owner: str) -> bool:
            return await self._file(ctx, step, source, remote, mode, owner)

        token = UPLOAD_CAPTURE.set(capture)
        files = len(node.files)
        try:
            await asyncio.wait_for(step.run(host), CAPTURE_TIMEOUT)
        except PlanViolation:
            # The first change after its files (its files are known); with no file changed, the change is that
            # command (sysctl values applied live, modules loaded): listed by the step's description.
            if len(node.files) == files:
                node.other.append(step.describe())
        except NotApplicable:
            return  # the real run would end "not applicable" here: no change (the finally below still runs)
        except (KubexmError, TimeoutError) as exc:
            node.problems.append(f"{step.describe()}: {self.masker.text(str(exc))}")
        finally:
            UPLOAD_CAPTURE.reset(token)

    async def _file(self, host: HostContext, step: Step, source: Path | bytes, remote: str, mode: int,
                    owner: str) -> bool:
        data: bytes | None
        if isinstance(source, bytes):
            size, data = len(source), source
            want = hashlib.sha256(data).hexdigest()
        else:
            size = source.stat().st_size
            data = source.read_bytes() if size <= DIFF_LIMIT else None
            want = hashlib.sha256(data).hexdigest() if data is not None else sha256_file(source)
        got, got_attrs = await host.file_state(remote, large=size >= LARGE_FILE)
        attrs = file_attrs(mode, owner)
        if got == want and got_attrs == attrs:
            return False
        node = self.impact.nodes[self._node(host)]
        if got == want:
            node.files.append(FileChange(remote, step.describe(), "attributes", got_attrs, attrs))
            return False
        change = FileChange(remote, step.describe(), "create" if got is None and got_attrs is None else "modify",
                            got_attrs, attrs)
        new_text = _text(data)
        old_text = None
        if got is not None and new_text is not None:
            old_text = await host.read_text(remote)
        change.diff, change.note = text_change(self.masker, remote, old_text, new_text, exists=got is not None)
        node.files.append(change)
        return True


def _text(data: bytes | None) -> str | None:
    if data is None or len(data) > DIFF_LIMIT or b"\0" in data:
        return None
    try:
        return data.decode()
    except UnicodeDecodeError:
        return None


def plan_impact(cluster: Cluster, items: Sequence[tuple[Module | None, Task]], options: RunOptions, *,
                operation: str, name: str = "", masker: Masker | None = None,
                factory: ConnectionFactory | None = None, listeners: Sequence[Listener] = ()) -> Impact:
    """Run ``items`` as a connected dry run (``options.dry_run`` is forced) and return its impact.

    With ``options.offline`` nothing connects: the impact lists the planned steps per node, without diffs.
    """
    options.dry_run = True
    masker = masker or Masker.for_clusters(cluster)
    planner = Planner(cluster, operation, masker)
    from kubexm.api import run_context

    run = run_context(cluster, options, command=f"kubexm plan {operation}", listeners=listeners, factory=factory)
    run.observer = planner.observe
    report = asyncio.run(Executor(run).run_tasks(items, name or operation))
    impact = planner.impact
    impact.connected = not options.offline
    for rec in report.records:
        node = "deploy machine" if rec.host == DEPLOY else rec.host
        roles = [] if rec.host == DEPLOY else cluster.roles_of(rec.host)
        if rec.status == "failed":
            impact.failed += 1
            impact.node(node, roles).problems.append(f"{rec.task}: {rec.description}: {masker.text(rec.message)}")
        elif rec.status == "planned" and rec.mutates:
            impact.node(node, roles).other.append(f"{rec.task}: {rec.description}")
        elif rec.status == "would-change" and rec.message.startswith("check:"):
            impact.node(node, roles).problems.append(f"{rec.description}: {masker.text(rec.message)}")
    if report.stopped_at:
        impact.node("deploy machine", []).problems.append(
            f"the dry run stopped at task {report.stopped_at}: later tasks were not planned")
    impact.risks = assess(cluster, impact, planner.rolling)
    return impact

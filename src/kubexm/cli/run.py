"""``kubexm run command`` and ``kubexm run task``: ad-hoc work on a cluster's hosts."""

from __future__ import annotations

import shlex
from typing import TYPE_CHECKING, Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    NodesOpt,
    OfflineOpt,
    ParallelOpt,
    SetOpt,
    YesOpt,
    command_line,
    confirm,
    exit_with,
    finish,
    run_options,
    views,
)

if TYPE_CHECKING:
    from kubexm.engine import Task

app = typer.Typer(help="Run a shell command or a registered task on hosts.", no_args_is_help=True)


@app.command("command")
def run_command(
    command: Annotated[list[str], typer.Argument(help="the command, after --", show_default=False)],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    nodes: Annotated[str, typer.Option("--nodes", help="hosts: names, globs ('*'), addresses or roles")] = "*",
    no_sudo: Annotated[bool, typer.Option("--no-sudo", help="run as the login user, not root")] = False,
    timeout: Annotated[float | None, typer.Option("--timeout", help="seconds before a host's command is killed")] = None,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    parallel: ParallelOpt = 50,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Run one shell command on many hosts at once; exit 0 only if it succeeded everywhere.

    The command is yours and runs as given, without confirmation (as with ssh): scripts rely on it.
    """
    target = api.resolve_cluster(file, cluster, default_local=True)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, parallel=parallel,
                          command_timeout=command_timeout)
    listeners, view = views(log_format)
    text = command[0] if len(command) == 1 else " ".join(shlex.quote(c) for c in command)
    outcome = api.run_command(target, text, options, sudo=not no_sudo, timeout=timeout, listeners=listeners,
                              command_line=command_line())
    exit_with(finish(outcome, view, log_format))


@app.command("task")
def run_task(
    name: Annotated[str, typer.Argument(help="a task name, e.g. PreflightChecks")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    set_: SetOpt = None,
    nodes: NodesOpt = None,
    dry_run: DryRunOpt = False,
    offline: OfflineOpt = False,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="go on even when preflight checks fail")] = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Run one registered task (and its `then` steps) on its hosts."""
    target = api.resolve_cluster(file, cluster, set_ or ())
    options = run_options(dry_run=dry_run, offline=offline, nodes=nodes, skip_preflight=skip_preflight,
                          accept_keys=accept_new_host_key, command_timeout=command_timeout)
    from kubexm.engine import get_registry

    task = get_registry().task(name)  # a mistyped name is refused before anything is asked
    if not _only_reads(task):
        confirm(f"run task {task.name} on {target.name}", yes=yes, dry_run=dry_run)
    listeners, view = views(log_format)
    outcome = api.run_task(target, name, options, listeners=listeners, command_line=command_line())
    exit_with(finish(outcome, view, log_format))


def _only_reads(task: Task) -> bool:
    """True when every step of the task is declared read-only (steps built per host count as changing)."""
    if callable(task.steps) or callable(task.then):
        return False
    return not any(step.mutates for step in (*task.steps, *task.then))

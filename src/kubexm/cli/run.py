"""``kubexm run command`` and ``kubexm run task``: ad-hoc work on a cluster's hosts."""

from __future__ import annotations

import shlex
from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    NodesOpt,
    OfflineOpt,
    ParallelOpt,
    SetOpt,
    command_line,
    exit_with,
    finish,
    run_options,
    views,
)

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
) -> None:
    """Run one shell command on many hosts at once; exit 0 only if it succeeded everywhere."""
    target = api.resolve_cluster(file, cluster, default_local=True)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, parallel=parallel)
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
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Run one registered task (and its `then` steps) on its hosts."""
    target = api.resolve_cluster(file, cluster, set_ or ())
    options = run_options(dry_run=dry_run, offline=offline, nodes=nodes, accept_keys=accept_new_host_key)
    listeners, view = views(log_format)
    outcome = api.run_task(target, name, options, listeners=listeners, command_line=command_line())
    exit_with(finish(outcome, view, log_format))

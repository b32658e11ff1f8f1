"""``kubexm token rotate|list|create|delete``: the service-account signing key and bootstrap tokens."""

from __future__ import annotations

import sys
from typing import Annotated, Any

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
    OfflineOpt,
    Output,
    OutputOpt,
    YesOpt,
    command_line,
    confirm,
    emit,
    exit_with,
    finish,
    run_options,
    run_pipeline,
)
from kubexm.engine import RunOptions

app = typer.Typer(help="Service-account signing key rotation and bootstrap tokens.", no_args_is_help=True)


@app.command("rotate")
def token_rotate(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    grace: Annotated[str | None, typer.Option(
        "--grace", help="how long tokens signed by the old key stay valid after the switch (default 24h; "
                        "e.g. 90m, 7d)", show_default=False)] = None,
    finish_now: Annotated[bool, typer.Option(
        "--finish", help="retire the old key now instead of after the grace period (a leaked key)")] = False,
    dry_run: DryRunOpt = False,
    offline: OfflineOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Rotate the key that signs service-account tokens, control planes one at a time.

    A first run makes every API server accept the new key, then sign with it; a run after the grace period
    (or with --finish) retires the old key. An interrupted run resumes where it stopped.
    """
    from kubexm.steps.tokens import parse_duration

    grace_seconds = None if grace is None else parse_duration(grace, "--grace")
    target = api.resolve_cluster(file, cluster)
    question = (f"rotate the service-account key of {target.name}, restarting kube-apiserver and "
                "kube-controller-manager one control-plane node at a time")
    if finish_now:
        question += "; tokens signed by the old key stop working at once"
    confirm(question, yes=yes, dry_run=dry_run)
    options = run_options(dry_run=dry_run, offline=offline, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    options.extra.update({"grace": grace_seconds, "finish": finish_now})
    run_pipeline(target, "RotateServiceAccountKeyPipeline", options, log_format)


def _quiet_run(target: Any, pipeline: str, options: RunOptions, log_format: LogFormat) -> api.Outcome:
    """A run whose product is data on stdout: progress and the summary go to stderr."""
    from kubexm.cli.consoles import err_console
    from kubexm.render import ConsoleView, JsonLog

    view = None if log_format is LogFormat.json else ConsoleView(err_console)
    listeners: list[Any] = [JsonLog(sys.stderr)] if view is None else [view]
    outcome = api.run_pipeline(target, pipeline, options, command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))
    return outcome


@app.command("list")
def token_list(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    output: OutputOpt = Output.table,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Bootstrap tokens with their id, time left, usages and description (never their secret half)."""
    from kubexm.steps.tokens import TokenInfo

    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    outcome = _quiet_run(target, "ListBootstrapTokensPipeline", options, log_format)
    rows = outcome.shared.get("bootstrap-tokens", [])
    tokens = [TokenInfo(**r) for r in rows] if isinstance(rows, list) else []
    if output in (Output.json, Output.yaml):
        emit([{**vars(t), "ttl": t.ttl()} for t in tokens], output)
        return
    from rich.table import Table

    from kubexm.cli.common import console

    wide = output is Output.wide
    table = Table("ID", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", *(["EXTRA GROUPS"] if wide else []), box=None)
    for t in tokens:
        table.add_row(t.id, t.ttl(), t.expires or "-", t.usages, t.description or "<none>",
                      *([t.groups] if wide else []))
    console().print(table if tokens else "no bootstrap tokens")


@app.command("create")
def token_create(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    ttl: Annotated[str, typer.Option("--ttl", help="how long the token is valid (0: forever)")] = "24h",
    description: Annotated[str, typer.Option("--description", help="what the token is for")] = "",
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Create a bootstrap token and print it once on stdout (kubexm keeps no copy of it)."""
    from kubexm.errors import UsageError
    from kubexm.spec.fields import bad_character
    from kubexm.steps.tokens import parse_duration

    seconds = parse_duration(ttl, "--ttl")
    if (bad := bad_character(description)) is not None:
        raise UsageError(f"--description contains {bad}", hint="write it on one line of printable text")
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra.update({"ttl": seconds, "description": description})
    outcome = _quiet_run(target, "CreateBootstrapTokenPipeline", options, log_format)
    token = outcome.shared.get("bootstrap-token")
    if isinstance(token, str):
        sys.stdout.write(token + "\n")


@app.command("delete")
def token_delete(
    token_id: Annotated[str, typer.Argument(metavar="TOKEN-ID", help="the token's id (the part before the dot)")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Delete a bootstrap token by its id; nodes can no longer join with it."""
    from kubexm.steps.tokens import token_id as checked_id

    ident = checked_id(token_id)
    target = api.resolve_cluster(file, cluster)
    confirm(f"delete bootstrap token {ident} of {target.name}", yes=yes, dry_run=dry_run)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["token_id"] = ident
    run_pipeline(target, "DeleteBootstrapTokenPipeline", options, log_format)

"""``kubexm certs check|renew``."""

from __future__ import annotations

from typing import Annotated

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
    YesOpt,
    command_line,
    confirm,
    exit_with,
    finish,
    run_options,
    run_pipeline,
    views,
)

app = typer.Typer(help="Certificates: expiry everywhere, renewal without downtime.", no_args_is_help=True)


@app.command("check")
def certs_check(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    warn_days: Annotated[int, typer.Option("--warn-days", help="warn when fewer days are left")] = 30,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Every certificate on every node and on this machine with its CA and days left.

    Exit code: 0 all fine, 1 a host could not be read, 3 some expire within --warn-days, 4 some expired.
    """
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["warn_days"] = warn_days
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, "CheckCertsPipeline", options, command_line=command_line(), listeners=listeners)
    worst = outcome.shared.get("certs_worst")
    exit_with(finish(outcome, view, log_format) or {"expiring": 3, "expired": 4}.get(str(worst), 0))


@app.command("renew")
def certs_renew(
    which: Annotated[str, typer.Argument(help="all, etcd, or one certificate (e.g. etcd/nodes/node1/server)")] = "all",
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """New leaves from the same CA, distributed, then a rolling restart one member at a time."""
    target = api.resolve_cluster(file, cluster)
    confirm(f"renew {which} certificates of {target.name} and restart etcd member by member", yes=yes,
            dry_run=dry_run)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["renew"] = which
    run_pipeline(target, "RenewCertsPipeline", options, log_format)

"""``kubexm registry up|down``: the private image registry on the hosts of role registry."""

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
    confirm,
    run_options,
    run_pipeline,
)

app = typer.Typer(help="Run or stop the private image registry (spec.registry, role registry).", no_args_is_help=True)


@app.command("up")
def registry_up(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Install Debian's docker-registry on the registry hosts with TLS from kubexm's PKI, the users of the
    spec.registry.auths entry for its address (htpasswd) and storage in spec.registry.dataDir; idempotent."""
    from kubexm.steps.registry import check_enabled

    target = api.resolve_cluster(file, cluster)
    check_enabled(target)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    run_pipeline(target, "RegistryUpPipeline", options, log_format)


@app.command("down")
def registry_down(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    purge: Annotated[bool, typer.Option("--purge", help="also delete the registry's images (spec.registry.dataDir) "
                                                        "and kubexm's registry configuration")] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Stop and disable the registry on the registry hosts; its images stay unless --purge."""
    from kubexm.steps.registry import data_dir, registry_hosts

    target = api.resolve_cluster(file, cluster)
    hosts = registry_hosts(target)
    if not hosts:
        from kubexm.errors import UsageError

        raise UsageError("no host has the role registry", hint="list the registry hosts in spec.roleGroups.registry")
    what = f"stop the registry on {', '.join(hosts)}"
    if purge:
        what += f" and delete its images in {data_dir(target)}"
    confirm(what, yes=yes, dry_run=dry_run)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["purge"] = purge
    run_pipeline(target, "RegistryDownPipeline", options, log_format)

"""``kubexm restore cluster``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    YesOpt,
    confirm_and_run,
    run_options,
)

app = typer.Typer(help="Restore a cluster from a kubexm backup.", no_args_is_help=True)


@app.command("cluster")
def restore_cluster(
    from_file: Annotated[Path, typer.Option("--from", help="a .tar.gz written by `kubexm backup cluster`")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    yes: YesOpt = False,
    force: Annotated[bool, typer.Option("--force", help="restore a backup taken of another cluster")] = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Stop every etcd member, restore the snapshot on each, start them and wait for health."""
    target = api.resolve_cluster(file, cluster)
    from kubexm.steps.etcd_backup import open_backup

    open_backup(from_file)  # refuse a bad archive before asking anything
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.force = force
    options.extra["from_file"] = str(from_file)
    confirm_and_run(target, "RestoreClusterPipeline", f"replace all etcd data of cluster {target.name} with "
                    f"{from_file}", options, yes=yes, log_format=log_format)

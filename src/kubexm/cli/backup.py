"""``kubexm backup cluster``."""

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
    run_options,
    run_pipeline,
)

app = typer.Typer(help="Back up a cluster (etcd snapshot, optionally the PKI).", no_args_is_help=True)


@app.command("cluster")
def backup_cluster(
    to_location: Annotated[Path, typer.Option("--to-location", help="directory on this machine for the archive")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    include_pki: Annotated[bool, typer.Option("--include-pki", help="put the cluster's PKI in the archive too")] = False,
    prefix: Annotated[str, typer.Option("--prefix", help="archive name prefix")] = "",
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Snapshot etcd on a healthy member; keep the verified archive (and retention) in --to-location.

    Reads the cluster and writes only on this machine (and a temporary snapshot on the member): no confirmation.
    """
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra.update({"to_location": str(to_location), "include_pki": include_pki, "prefix": prefix})
    run_pipeline(target, "BackupClusterPipeline", options, log_format)

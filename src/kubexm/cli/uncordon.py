"""``kubexm uncordon node``."""

from __future__ import annotations

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

app = typer.Typer(help="Mark nodes schedulable again.", no_args_is_help=True)


@app.command("node")
def uncordon_node(
    nodes: Annotated[str, typer.Argument(help="node names or patterns, comma-separated")],
    file: FileOpt = None, cluster: ContextOpt = None, log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None, command_timeout: CommandTimeoutOpt = None,
) -> None:
    """kubectl uncordon, run on a control-plane node (no confirmation)."""
    target = api.resolve_cluster(file, cluster)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    run_pipeline(target, "UncordonNodePipeline", options, log_format)

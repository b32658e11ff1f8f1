"""``kubexm cordon node``."""

from __future__ import annotations

import typer

from kubexm.cli.common import node_command

app = typer.Typer(help="Mark nodes unschedulable.", no_args_is_help=True)

node_command(app, "CordonNodePipeline",
             "kubectl cordon, run on a control-plane node (undone by `kubexm uncordon node`; no confirmation).")

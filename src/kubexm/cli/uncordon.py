"""``kubexm uncordon node``."""

from __future__ import annotations

import typer

from kubexm.cli.common import node_command

app = typer.Typer(help="Mark nodes schedulable again.", no_args_is_help=True)

node_command(app, "UncordonNodePipeline", "kubectl uncordon, run on a control-plane node (no confirmation).")

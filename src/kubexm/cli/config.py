"""``kubexm config``: contexts (which stored cluster commands act on) and stored specs."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import ContextOpt, DocOutput, FileOpt, Output, OutputOpt, console, emit
from kubexm.spec.dump import cluster_data, dump_cluster
from kubexm.state.store import Store

app = typer.Typer(help="Contexts: which stored cluster commands act on.", no_args_is_help=True)


@app.command("get-contexts")
def get_contexts(output: OutputOpt = Output.table) -> None:
    """Stored clusters usable as contexts (* marks the current one)."""
    store = Store()
    current = store.current_context()
    rows: list[dict[str, Any]] = [{"name": r.name, "current": r.name == current, "status": r.status}
                                  for r in store.list_clusters()]
    if output in (Output.json, Output.yaml):
        emit(rows, output)
        return
    table = Table("CURRENT", "NAME", "STATUS", box=None)
    for r in rows:
        table.add_row("*" if r["current"] else "", r["name"], r["status"])
    console().print(table)


@app.command("use-context")
def use_context(name: Annotated[str, typer.Argument(help="a cluster name")]) -> None:
    """Make a stored cluster the one commands act on by default."""
    Store().use_context(name)
    console().print(f"switched to context {name}")


@app.command("current-context")
def current_context() -> None:
    """Print the current context."""
    name = Store().current_context()
    if name is None:
        from kubexm.errors import StateError

        raise StateError("no current context", hint="`kubexm config use-context NAME`")
    sys.stdout.write(name + "\n")


@app.command("view")
def view(name: Annotated[str | None, typer.Argument(help="cluster (default: current)")] = None,
         file: FileOpt = None, cluster: ContextOpt = None,
         output: Annotated[DocOutput, typer.Option("--output", "-o", help="format: yaml or json")] = DocOutput.yaml,
         ) -> None:
    """The spec of a cluster (stored, or read from -f FILE), secrets redacted."""
    if name and cluster and name != cluster:
        from kubexm.errors import UsageError

        raise UsageError(f"two clusters given: {name} and -c {cluster}", hint="name one")
    target = api.resolve_cluster(file, name or cluster)
    if output is DocOutput.json:
        emit(cluster_data(target, secrets=False), output)
    else:
        sys.stdout.write(dump_cluster(target, secrets=False))

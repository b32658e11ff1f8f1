"""``kubexm get clusters|nodes``: lists of what kubexm knows, as a table, or as JSON/YAML with ``-o``."""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import ContextOpt, FileOpt, Output, OutputOpt, console, emit, when
from kubexm.state.store import Store

app = typer.Typer(help="List clusters or nodes.", no_args_is_help=True)


@app.command("clusters")
def get_clusters(output: OutputOpt = Output.table) -> None:
    """Clusters in the state store; the current context is marked with *."""
    store = Store()
    current = store.current_context()
    rows: list[dict[str, Any]] = [{"name": c.name, "current": c.name == current, "status": c.status,
                                   "created": when(c.created), "updated": when(c.updated), "source": c.source}
                                  for c in store.list_clusters()]
    if output in (Output.json, Output.yaml):
        emit(rows, output)
        return
    table = Table("", "NAME", "STATUS", "UPDATED", *(["CREATED", "SOURCE"] if output is Output.wide else []),
                  box=None)
    for r in rows:
        table.add_row("*" if r["current"] else "", r["name"], r["status"], r["updated"],
                      *([r["created"], r["source"] or "-"] if output is Output.wide else []))
    console().print(table if rows else "no clusters yet: `kubexm create cluster -f FILE` adds one")


@app.command("nodes")
def get_nodes(file: FileOpt = None, cluster: ContextOpt = None, output: OutputOpt = Output.table) -> None:
    """Hosts of a cluster with their roles."""
    target = api.resolve_cluster(file, cluster)
    rows: list[dict[str, Any]] = []
    for h in target.spec.hosts:
        rows.append({"name": h.name, "roles": target.roles_of(h.name), "address": h.address,
                     "internalAddress": h.internal_ip, "port": h.port, "user": h.user,
                     "connection": h.connection, "arch": h.arch or "-", "labels": h.labels})
    if output in (Output.json, Output.yaml):
        emit(rows, output)
        return
    wide = output is Output.wide
    cols = ["NAME", "ROLES", "ADDRESS"] + (["INTERNAL", "PORT", "USER", "CONNECTION", "ARCH"] if wide else [])
    table = Table(*cols, box=None)
    for r in rows:
        table.add_row(r["name"], ",".join(r["roles"]) or "<none>", r["address"],
                      *([r["internalAddress"], str(r["port"]), r["user"], r["connection"], r["arch"]] if wide else []))
    console().print(table)

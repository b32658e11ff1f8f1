"""Read-only views of what kubexm knows: ``get``, ``describe``, ``config`` (contexts)."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import ContextOpt, FileOpt, Output, console
from kubexm.spec.dump import cluster_data, dump_cluster
from kubexm.state.store import Store

get_app = typer.Typer(help="List clusters or nodes.", no_args_is_help=True)
describe_app = typer.Typer(help="Show one cluster in detail.", no_args_is_help=True)
config_app = typer.Typer(help="Contexts: which stored cluster commands act on.", no_args_is_help=True)

OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="table, wide, yaml or json")]


def _when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _emit(data: Any, output: Output) -> None:
    if output is Output.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump(data, sys.stdout)


@get_app.command("clusters")
def get_clusters(output: OutputOpt = Output.table) -> None:
    """Clusters in the state store; the current context is marked with *."""
    store = Store()
    current = store.current_context()
    rows: list[dict[str, Any]] = [{"name": c.name, "current": c.name == current, "status": c.status, "created": _when(c.created),
             "updated": _when(c.updated), "source": c.source} for c in store.list_clusters()]
    if output in (Output.json, Output.yaml):
        _emit(rows, output)
        return
    table = Table("", "NAME", "STATUS", "UPDATED", *(["CREATED", "SOURCE"] if output is Output.wide else []),
                  box=None)
    for r in rows:
        table.add_row("*" if r["current"] else "", r["name"], r["status"], r["updated"],
                      *([r["created"], r["source"] or "-"] if output is Output.wide else []))
    console().print(table if rows else "no clusters yet: `kubexm create cluster -f FILE` adds one")
    return


@get_app.command("nodes")
def get_nodes(file: FileOpt = None, cluster: ContextOpt = None, output: OutputOpt = Output.table) -> None:
    """Hosts of a cluster with their roles."""
    target = api.resolve_cluster(file, cluster)
    rows: list[dict[str, Any]] = []
    for h in target.spec.hosts:
        rows.append({"name": h.name, "roles": target.roles_of(h.name), "address": h.address,
                     "internalAddress": h.internal_ip, "port": h.port, "user": h.user,
                     "connection": h.connection, "arch": h.arch or "-", "labels": h.labels})
    if output in (Output.json, Output.yaml):
        _emit(rows, output)
        return
    wide = output is Output.wide
    cols = ["NAME", "ROLES", "ADDRESS"] + (["INTERNAL", "PORT", "USER", "CONNECTION", "ARCH"] if wide else [])
    table = Table(*cols, box=None)
    for r in rows:
        table.add_row(r["name"], ",".join(r["roles"]) or "<none>", r["address"],
                      *([r["internalAddress"], str(r["port"]), r["user"], r["connection"], r["arch"]] if wide else []))
    console().print(table)
    return


@describe_app.command("cluster")
def describe_cluster(name: Annotated[str | None, typer.Argument(help="cluster name (default: current)")] = None,
                     file: FileOpt = None) -> None:
    """Spec summary, roles and the last runs of a cluster."""
    store = Store()
    target = api.resolve_cluster(file, name, store=store)
    spec = target.spec
    c = console()
    c.print(f"[bold]Cluster {target.name}[/]")
    row = store.get_cluster(target.name)
    if row:
        c.print(f"  status: {row.status}   updated: {_when(row.updated)}   source: {row.source or '-'}")
    c.print(f"  kubernetes {spec.kubernetes.version}  etcd {spec.etcd.version} ({spec.etcd.type})  "
            f"runtime {spec.container_runtime.type}  network {spec.network.plugin}")
    ep = spec.control_plane_endpoint
    c.print(f"  endpoint {ep.domain}:{ep.port} ({ep.load_balancer}{', ' + ep.address if ep.address else ''})  "
            f"pods {spec.kubernetes.pod_cidr}  services {spec.kubernetes.service_cidr}")
    table = Table("HOST", "ADDRESS", "ROLES", box=None)
    for h in spec.hosts:
        table.add_row(h.name, h.address, ",".join(target.roles_of(h.name)) or "<none>")
    c.print(table)
    runs = store.runs(target.name, limit=10)
    if runs:
        t = Table("RUN", "STARTED", "STATUS", "DRY", "COMMAND", "SUMMARY", title="Recent runs", title_justify="left",
                  box=None)
        for r in runs:
            t.add_row(r.run_id, _when(r.started), r.status, "yes" if r.dry_run else "", r.command,
                      r.summary + (f" (stopped at {r.stopped_at})" if r.stopped_at else ""))
        c.print(t)
    return


@config_app.command("get-contexts")
def get_contexts() -> None:
    """Stored clusters usable as contexts (* marks the current one)."""
    store = Store()
    current = store.current_context()
    table = Table("CURRENT", "NAME", "STATUS", box=None)
    for row in store.list_clusters():
        table.add_row("*" if row.name == current else "", row.name, row.status)
    console().print(table)
    return


@config_app.command("use-context")
def use_context(name: Annotated[str, typer.Argument(help="a cluster name")]) -> None:
    """Make a stored cluster the one commands act on by default."""
    Store().use_context(name)
    console().print(f"switched to context {name}")
    return


@config_app.command("current-context")
def current_context() -> None:
    """Print the current context."""
    name = Store().current_context()
    if name is None:
        from kubexm.errors import StateError

        raise StateError("no current context", hint="`kubexm config use-context NAME`")
    sys.stdout.write(name + "\n")
    return


@config_app.command("view")
def view(name: Annotated[str | None, typer.Argument(help="cluster (default: current)")] = None,
         output: OutputOpt = Output.yaml) -> None:
    """The stored spec of a cluster, secrets redacted."""
    target = api.resolve_cluster(None, name)
    if output is Output.json:
        _emit(cluster_data(target, secrets=False), output)
    else:
        sys.stdout.write(dump_cluster(target, secrets=False))
    return

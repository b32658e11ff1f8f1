"""``kubexm describe cluster``: one cluster in detail."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import ContextOpt, FileOpt, Output, OutputOpt, console, emit, when
from kubexm.state.store import Store

app = typer.Typer(help="Show one cluster in detail.", no_args_is_help=True)


@app.command("cluster")
def describe_cluster(name: Annotated[str | None, typer.Argument(help="cluster name (default: current)")] = None,
                     file: FileOpt = None, cluster: ContextOpt = None, output: OutputOpt = Output.table) -> None:
    """Spec summary, roles and the last runs of a cluster (wide: the last 50 runs instead of 10)."""
    if name and cluster and name != cluster:
        from kubexm.errors import UsageError

        raise UsageError(f"two clusters given: {name} and -c {cluster}", hint="name one")
    store = Store()
    target = api.resolve_cluster(file, name or cluster, store=store)
    spec = target.spec
    row = store.get_cluster(target.name)
    runs = store.runs(target.name, limit=50 if output is Output.wide else 10)
    ep = spec.control_plane_endpoint
    if output in (Output.json, Output.yaml):
        data: dict[str, Any] = {
            "name": target.name, "status": row.status if row else None, "updated": when(row.updated) if row else None,
            "source": row.source if row else None, "kubernetes": spec.kubernetes.version,
            "etcd": {"version": spec.etcd.version, "type": spec.etcd.type},
            "containerRuntime": spec.container_runtime.type, "network": spec.network.plugin,
            "endpoint": {"domain": ep.domain, "port": ep.port, "loadBalancer": ep.load_balancer, "address": ep.address},
            "podCidr": spec.kubernetes.pod_cidr, "serviceCidr": spec.kubernetes.service_cidr,
            "hosts": [{"name": h.name, "address": h.address, "roles": target.roles_of(h.name)} for h in spec.hosts],
            "runs": [{"id": r.run_id, "started": when(r.started), "status": r.status, "dryRun": bool(r.dry_run),
                      "command": r.command, "summary": r.summary, "stoppedAt": r.stopped_at} for r in runs],
        }
        emit(data, output)
        return
    c = console()
    c.print(f"[bold]Cluster {target.name}[/]")
    if row:
        c.print(f"  status: {row.status}   updated: {when(row.updated)}   source: {row.source or '-'}")
    c.print(f"  kubernetes {spec.kubernetes.version}  etcd {spec.etcd.version} ({spec.etcd.type})  "
            f"runtime {spec.container_runtime.type}  network {spec.network.plugin}")
    c.print(f"  endpoint {ep.domain}:{ep.port} ({ep.load_balancer}{', ' + ep.address if ep.address else ''})  "
            f"pods {spec.kubernetes.pod_cidr}  services {spec.kubernetes.service_cidr}")
    table = Table("HOST", "ADDRESS", "ROLES", box=None)
    for h in spec.hosts:
        table.add_row(h.name, h.address, ",".join(target.roles_of(h.name)) or "<none>")
    c.print(table)
    if runs:
        t = Table("RUN", "STARTED", "STATUS", "DRY", "COMMAND", "SUMMARY", title="Recent runs", title_justify="left",
                  box=None)
        for r in runs:
            t.add_row(r.run_id, when(r.started), r.status, "yes" if r.dry_run else "", r.command,
                      r.summary + (f" (stopped at {r.stopped_at})" if r.stopped_at else ""))
        c.print(t)

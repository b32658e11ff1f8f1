"""``kubexm config``: contexts (which stored cluster commands act on), stored specs, and `config diff`/`config sync`
(the cluster file's settings applied to a running cluster, node by node)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    DocOutput,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    NodesOpt,
    Output,
    OutputOpt,
    YesOpt,
    command_line,
    confirm_and_run,
    console,
    emit,
    exit_with,
    run_options,
)
from kubexm.spec.dump import cluster_data, dump_cluster
from kubexm.state.store import Store

app = typer.Typer(help="Contexts, stored specs, and settings synced to a running cluster.", no_args_is_help=True)


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


@app.command("diff")
def config_diff(
    file: FileOpt = None, cluster: ContextOpt = None, nodes: NodesOpt = None,
    output: Annotated[Output, typer.Option("--output", "-o", help="format: table (unified diffs) or json")] = Output.table,
    accept_new_host_key: AcceptKeyOpt = None, command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Per node, what `config sync` would change: a unified diff of each file against the node's copy and the
    settings no file shows (live sysctl values, node labels), secrets masked. Connects, changes nothing."""
    from kubexm.pipelines.config_sync import diff_rows
    from kubexm.render.console import print_failures

    target = api.resolve_cluster(file, cluster)
    options = run_options(dry_run=True, nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    outcome = api.run_pipeline(target, "ConfigSyncPipeline", options, command_line=command_line())
    rows = diff_rows(outcome.shared)
    if output in (Output.json, Output.yaml):
        emit({"cluster": target.name, "ok": outcome.ok, "nodes": rows}, output)
    else:
        write = sys.stdout.write
        for node, changes in rows.items():
            write(f"== {node}\n")
            for change in changes:
                write(change["diff"] if change.get("diff") else f"~ {change.get('note') or change['step']}\n")
        sys.stdout.flush()
        out = console()
        print_failures(out, outcome.report)
        if outcome.ok:
            out.print("no changes: every node is as the cluster file says" if not rows else
                      f"{len(rows)} node(s) would change; apply with `kubexm config sync`", highlight=False)
    exit_with(0 if outcome.ok else 1)


@app.command("sync")
def config_sync(
    file: FileOpt = None, cluster: ContextOpt = None, nodes: NodesOpt = None, dry_run: DryRunOpt = False,
    yes: YesOpt = False, log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Apply the cluster file's settings to a running cluster: registry mirrors and auths, runtime config,
    kubelet unit, sysctls, kernel modules, etcd flags, addon values, node labels. One node at a time, with a
    health check after each; the run stops at the first unhealthy node."""
    target = api.resolve_cluster(file, cluster)
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    where = f" on {nodes}" if nodes else ""
    confirm_and_run(target, "ConfigSyncPipeline", f"apply the settings of {target.name}'s cluster file{where}, one "
                    "node at a time", options, yes=yes, log_format=log_format, remember=not nodes, source=file)

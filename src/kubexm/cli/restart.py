"""``kubexm restart component``."""

from __future__ import annotations

from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    YesOpt,
    confirm_and_run,
    run_options,
)
from kubexm.errors import UsageError

app = typer.Typer(help="Rolling restart of a component, health-checked between nodes.", no_args_is_help=True)


@app.command("component")
def restart_component(
    name: Annotated[str, typer.Argument(help="kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, "
                                             "containerd, docker, cri-docker, crio, etcd, haproxy, keepalived")],
    nodes: Annotated[str | None, typer.Option("--nodes", help="limit to these nodes")] = None,
    file: FileOpt = None, cluster: ContextOpt = None, dry_run: DryRunOpt = False, yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Restart NAME on every node that runs it, one node at a time, waiting for health in between."""
    from kubexm.engine import SERIAL, Module, Pipeline, Task, role
    from kubexm.steps.nodes import STATIC_PODS, UNITS, RestartComponent

    if name not in STATIC_PODS + UNITS:
        raise UsageError(f"unknown component {name!r}", hint="one of: " + ", ".join(STATIC_PODS + UNITS))
    target = api.resolve_cluster(file, cluster)
    where = {"etcd": role("etcd"), "haproxy": role("loadbalancer") | role("control-plane") | role("worker"),
             "keepalived": role("loadbalancer") | role("control-plane")}.get(
        name, role("control-plane") if name in STATIC_PODS else role("control-plane") | role("worker"))
    task = Task(f"Restart-{name}", [RestartComponent(name)], hosts=where, strategy=SERIAL,
                description=f"restart {name} one node at a time, healthy before the next")
    pipeline = Pipeline("RestartComponentPipeline", [Module("RestartComponent", [task])])
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    confirm_and_run(target, pipeline, f"restart {name} on {target.name}, one node at a time", options, yes=yes,
                    log_format=log_format)

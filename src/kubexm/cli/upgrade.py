"""``kubexm upgrade cluster``, ``cordon|uncordon node``, ``restart component``, ``delete cluster``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    run_options,
)
from kubexm.cli.etcd_ops import YesOpt, nodes_delete_app, run_pipeline
from kubexm.errors import UsageError

upgrade_app = typer.Typer(help="Upgrade Kubernetes one minor version at a time.", no_args_is_help=True)
cordon_app = typer.Typer(help="Mark nodes unschedulable.", no_args_is_help=True)
uncordon_app = typer.Typer(help="Mark nodes schedulable again.", no_args_is_help=True)
restart_app = typer.Typer(help="Rolling restart of a component, health-checked between nodes.",
                          no_args_is_help=True)


@upgrade_app.command("cluster")
def upgrade_cluster(
    to_version: Annotated[str, typer.Option("--to-version", help="target Kubernetes version, e.g. v1.34.3")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="print the ordered plan and change nothing")] = False,
    node_concurrency: Annotated[int, typer.Option("--node-concurrency", min=1, help="workers upgraded at once")] = 1,
    control_plane_only: Annotated[bool, typer.Option("--control-plane-only")] = False,
    workers_only: Annotated[bool, typer.Option("--workers-only")] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Control planes first, one at a time (kubeadm upgrade apply, then node); then workers
    --node-concurrency at a time with cordon, drain, upgrade, kubelet restart and uncordon."""
    if control_plane_only and workers_only:
        raise UsageError("--control-plane-only and --workers-only exclude each other", hint="pick one")
    target = api.resolve_cluster(file, cluster)
    from pydantic import ValidationError

    from kubexm.spec.models import Kubernetes

    try:
        version = Kubernetes.model_validate({"version": to_version}).version
    except ValidationError:
        raise UsageError(f"--to-version {to_version} is not a version", hint="write it like v1.34.3") from None
    upgraded = target.model_copy(deep=True)
    upgraded.spec.kubernetes.version = version
    tags = "plan" if plan else ("control-plane" if control_plane_only else "worker" if workers_only else None)
    options = run_options(dry_run=dry_run or plan, offline=plan, tags=tags, accept_keys=accept_new_host_key)
    options.extra.update({"node_concurrency": node_concurrency, "control_plane_only": control_plane_only,
                          "workers_only": workers_only})
    if not (plan or dry_run or yes) and sys.stdin.isatty() and \
            not typer.confirm(f"upgrade {target.name} to {upgraded.spec.kubernetes.version}?", default=False):
        raise typer.Exit(1)
    run_pipeline(upgraded, "UpgradeClusterPipeline", options, log_format)


def _node_command(pipeline: str, nodes: str, file: FileOpt, cluster: ContextOpt, log_format: LogFormat,
                  accept: list[str] | None) -> None:
    target = api.resolve_cluster(file, cluster)
    run_pipeline(target, pipeline, run_options(nodes=nodes, accept_keys=accept), log_format)


@cordon_app.command("node")
def cordon_node(
    nodes: Annotated[str, typer.Argument(help="node names or patterns, comma-separated")],
    file: FileOpt = None, cluster: ContextOpt = None, log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """kubectl cordon, run on a control-plane node."""
    _node_command("CordonNodePipeline", nodes, file, cluster, log_format, accept_new_host_key)


@uncordon_app.command("node")
def uncordon_node(
    nodes: Annotated[str, typer.Argument(help="node names or patterns, comma-separated")],
    file: FileOpt = None, cluster: ContextOpt = None, log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """kubectl uncordon, run on a control-plane node."""
    _node_command("UncordonNodePipeline", nodes, file, cluster, log_format, accept_new_host_key)


@restart_app.command("component")
def restart_component(
    name: Annotated[str, typer.Argument(help="kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, "
                                             "containerd, docker, cri-docker, crio, etcd, haproxy, keepalived")],
    nodes: Annotated[str | None, typer.Option("--nodes", help="limit to these nodes")] = None,
    file: FileOpt = None, cluster: ContextOpt = None, dry_run: DryRunOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Restart NAME on every node that runs it, one node at a time, waiting for health in between."""
    from kubexm.engine import SERIAL, Module, Pipeline, Task, role
    from kubexm.steps.kube_ops import STATIC_PODS, UNITS, RestartComponent

    if name not in STATIC_PODS + UNITS:
        raise UsageError(f"unknown component {name!r}", hint="one of: " + ", ".join(STATIC_PODS + UNITS))
    target = api.resolve_cluster(file, cluster)
    where = {"etcd": role("etcd"), "haproxy": role("loadbalancer") | role("control-plane") | role("worker"),
             "keepalived": role("loadbalancer") | role("control-plane")}.get(
        name, role("control-plane") if name in STATIC_PODS else role("control-plane") | role("worker"))
    task = Task(f"Restart-{name}", [RestartComponent(name)], hosts=where, strategy=SERIAL,
                description=f"restart {name} one node at a time, healthy before the next")
    pipeline = Pipeline("RestartComponentPipeline", [Module("RestartComponent", [task])])
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key)
    from kubexm.cli.common import command_line, exit_with, finish, views

    listeners, view = views(log_format)
    outcome = api.execute(target, pipeline.plan(target, set(), set()), options, name=pipeline.name,
                          command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))


@nodes_delete_app.command("cluster")
def delete_cluster(
    file: FileOpt = None, cluster: ContextOpt = None, yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Reset every node in parallel (kubeadm reset, etcd, balancers); etcd backups and kubexm's PKI are kept."""
    target = api.resolve_cluster(file, cluster)
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(f"deleting cluster {target.name} needs --yes when not run from a terminal",
                             hint="add --yes")
        if not typer.confirm(f"delete cluster {target.name} from all {len(target.spec.hosts)} hosts?",
                             default=False):
            raise typer.Exit(1)
    run_pipeline(target, "DeleteClusterPipeline", run_options(accept_keys=accept_new_host_key), log_format)


@nodes_delete_app.command("addon")
def delete_addon(
    name: Annotated[str, typer.Argument(help="the addon's name (spec.addons[].name, or e.g. local-path)")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="its namespace (charts)")] = "default",
    file: FileOpt = None, cluster: ContextOpt = None, yes: YesOpt = False, dry_run: DryRunOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Uninstall an addon kubexm installed: helm uninstall, or kubectl delete of the applied manifest."""
    from kubexm.engine import Module, Pipeline, Task, first, role
    from kubexm.steps.addons import RemoveAddon

    target = api.resolve_cluster(file, cluster)
    if not (yes or dry_run) and sys.stdin.isatty() and \
            not typer.confirm(f"uninstall addon {name} from {target.name}?", default=False):
        raise typer.Exit(1)
    task = Task("RemoveAddon", [RemoveAddon(name, namespace)], hosts=first(role("control-plane")),
                description=f"uninstall {name}")
    pipeline = Pipeline("DeleteAddonPipeline", [Module("Addons", [task])])
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key)
    from kubexm.cli.common import command_line, exit_with, finish, views

    listeners, view = views(log_format)
    outcome = api.execute(target, pipeline.plan(target, set(), set()), options, name=pipeline.name,
                          command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))

"""``kubexm backup cluster``, ``kubexm restore cluster``, ``kubexm certs check|renew``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kubexm import api
from kubexm.api import Outcome
from kubexm.cli.common import (
    AcceptKeyOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    command_line,
    exit_with,
    finish,
    run_options,
    views,
)
from kubexm.engine import RunOptions
from kubexm.spec.models import Cluster


def run_pipeline(target: Cluster, pipeline: str, options: RunOptions, log_format: LogFormat) -> Outcome:
    """Run a registered pipeline with the chosen view; exits non-zero when it failed."""
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, pipeline, options, command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))
    return outcome


backup_app = typer.Typer(help="Back up a cluster (etcd snapshot, optionally the PKI).", no_args_is_help=True)
restore_app = typer.Typer(help="Restore a cluster from a kubexm backup.", no_args_is_help=True)
certs_app = typer.Typer(help="Certificates: expiry everywhere, renewal without downtime.", no_args_is_help=True)

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation")]


@backup_app.command("cluster")
def backup_cluster(
    to_location: Annotated[Path, typer.Option("--to-location", help="directory on this machine for the archive")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    include_pki: Annotated[bool, typer.Option("--include-pki", help="put the cluster's PKI in the archive too")] = False,
    prefix: Annotated[str, typer.Option("--prefix", help="archive name prefix")] = "",
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Snapshot etcd on a healthy member; keep the verified archive (and retention) in --to-location."""
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key)
    options.extra.update({"to_location": str(to_location), "include_pki": include_pki, "prefix": prefix})
    run_pipeline(target, "BackupClusterPipeline", options, log_format)


@restore_app.command("cluster")
def restore_cluster(
    from_file: Annotated[Path, typer.Option("--from", help="a .tar.gz written by `kubexm backup cluster`")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    yes: YesOpt = False,
    force: Annotated[bool, typer.Option("--force", help="restore a backup taken of another cluster")] = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Stop every etcd member, restore the snapshot on each, start them and wait for health."""
    target = api.resolve_cluster(file, cluster)
    from kubexm.steps.etcd_backup import open_backup

    open_backup(from_file)  # refuse a bad archive before asking anything
    if not yes and sys.stdin.isatty() and not typer.confirm(
            f"replace all etcd data of cluster {target.name} with {from_file}?", default=False):
        raise typer.Exit(1)
    options = run_options(accept_keys=accept_new_host_key)
    options.force = force
    options.extra["from_file"] = str(from_file)
    run_pipeline(target, "RestoreClusterPipeline", options, log_format)


@certs_app.command("check")
def certs_check(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    warn_days: Annotated[int, typer.Option("--warn-days", help="warn when fewer days are left")] = 30,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Every certificate on every node and on this machine with its CA and days left.

    Exit code: 0 all fine, 1 a host could not be read, 3 some expire within --warn-days, 4 some expired.
    """
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key)
    options.extra["warn_days"] = warn_days
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, "CheckCertsPipeline", options, command_line=command_line(), listeners=listeners)
    worst = outcome.shared.get("certs_worst")
    exit_with(finish(outcome, view, log_format) or {"expiring": 3, "expired": 4}.get(str(worst), 0))


@certs_app.command("renew")
def certs_renew(
    which: Annotated[str, typer.Argument(help="all, etcd, or one certificate (e.g. etcd/nodes/node1/server)")] = "all",
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """New leaves from the same CA, distributed, then a rolling restart one member at a time."""
    target = api.resolve_cluster(file, cluster)
    if not dry_run and not yes and sys.stdin.isatty() and not typer.confirm(
            f"renew {which} certificates of {target.name} and restart etcd member by member?", default=False):
        raise typer.Exit(1)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key)
    options.extra["renew"] = which
    run_pipeline(target, "RenewCertsPipeline", options, log_format)


nodes_add_app = typer.Typer(help="Add nodes to a cluster (workers, control planes, etcd members).",
                            no_args_is_help=True)
nodes_delete_app = typer.Typer(help="Delete nodes, or the whole cluster.", no_args_is_help=True)

ROLES = ("worker", "control-plane", "etcd")


@nodes_add_app.command("nodes")
def add_nodes(
    nodes: Annotated[str, typer.Option("--nodes", help="hosts of the cluster file to add, comma-separated")],
    role: Annotated[str, typer.Option("--role", help="worker, control-plane or etcd")] = "worker",
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Add hosts listed in the cluster file: OS, runtime and kubeadm join for workers and control planes
    (control planes also become etcd members when listed there, and balancers are updated); etcd members
    join one at a time with health checks in between."""
    from kubexm.errors import UsageError

    if role not in ROLES:
        raise UsageError(f"--role {role}: not a role kubexm adds", hint="use worker, control-plane or etcd")
    target = api.resolve_cluster(file, cluster)
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key)
    members = {h.name for h in target.hosts_with_role(role)}
    missing = [n for n in api_match(target, nodes) if n not in members]
    if missing:
        raise UsageError(f"{', '.join(missing)} not listed in spec.roleGroups.{role} of the cluster file",
                         hint=f"add them to roleGroups.{role} (and spec.hosts) first")
    pipeline = "AddNodesPipeline" if role == "etcd" else "AddKubernetesNodesPipeline"
    run_pipeline(target, pipeline, options, log_format)


@nodes_delete_app.command("nodes")
def delete_nodes(
    nodes: Annotated[str, typer.Option("--nodes", help="hosts to remove, comma-separated")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    force: Annotated[bool, typer.Option("--force", help="etcd: remove even below quorum; drain: delete pods "
                                                          "no controller manages")] = False,
    grace_period: Annotated[int, typer.Option("--grace-period", help="seconds pods get to stop (-1: their own)")]
    = -1,
    drain_timeout: Annotated[int, typer.Option("--drain-timeout", help="seconds before drain gives up")] = 300,
    skip_cleanup: Annotated[bool, typer.Option("--skip-cleanup", help="leave the node's files (no kubeadm reset)")]
    = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
) -> None:
    """Remove nodes: cordon, drain (--ignore-daemonsets), delete the Node, kubeadm reset, one at a time;
    etcd members leave etcd too. Refuses the last control-plane node and the last etcd member."""
    target = api.resolve_cluster(file, cluster)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"remove {nodes} from {target.name}?", default=False):
        raise typer.Exit(1)
    names = api_match(target, nodes)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key)
    options.force = force
    options.extra.update({"removing": names, "grace_period": grace_period, "drain_timeout": drain_timeout,
                          "force_drain": force, "skip_cleanup": skip_cleanup})
    kube = {h.name for h in target.hosts_with_role("control-plane") + target.hosts_with_role("worker")}
    pipeline = "DeleteKubernetesNodesPipeline" if kube & set(names) else "DeleteNodesPipeline"
    run_pipeline(target, pipeline, options, log_format)


def api_match(cluster: object, nodes: str) -> list[str]:
    from kubexm.engine import match_hosts
    from kubexm.spec.models import Cluster

    assert isinstance(cluster, Cluster)
    return match_hosts(cluster, [nodes])

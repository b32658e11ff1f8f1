"""``kubexm add nodes``."""

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
    match_nodes,
    run_options,
)

app = typer.Typer(help="Add nodes to a cluster (workers, control planes, etcd members).", no_args_is_help=True)

ROLES = ("worker", "control-plane", "etcd")


@app.command("nodes")
def add_nodes(
    nodes: Annotated[str, typer.Option("--nodes", help="hosts of the cluster file to add, comma-separated")],
    role: Annotated[str, typer.Option("--role", help="worker, control-plane or etcd")] = "worker",
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Add hosts listed in the cluster file: OS, runtime and kubeadm join for workers and control planes
    (control planes also become etcd members when listed there, and balancers are updated); etcd members
    join one at a time with health checks in between."""
    from kubexm.errors import UsageError

    if role not in ROLES:
        raise UsageError(f"--role {role}: not a role kubexm adds", hint="use worker, control-plane or etcd")
    target = api.resolve_cluster(file, cluster)
    from kubexm.pki.rotation import refuse_during_rotation

    refuse_during_rotation(target, "add nodes to")
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    members = {h.name for h in target.hosts_with_role(role)}
    names = match_nodes(target, nodes)
    missing = [n for n in names if n not in members]
    if missing:
        raise UsageError(f"{', '.join(missing)} not listed in spec.roleGroups.{role} of the cluster file",
                         hint=f"add them to roleGroups.{role} (and spec.hosts) first")
    pipeline = "AddNodesPipeline" if role == "etcd" else "AddKubernetesNodesPipeline"
    confirm_and_run(target, pipeline, f"add {', '.join(names)} to {target.name} as {role} (this prepares and "
                    "reconfigures them)", options, yes=yes, log_format=log_format)

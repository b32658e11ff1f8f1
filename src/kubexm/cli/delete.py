"""``kubexm delete nodes|cluster|addon``: every sub-command of ``delete`` lives here."""

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
    checked,
    confirm_and_run,
    match_nodes,
    run_options,
)

app = typer.Typer(help="Delete nodes, an addon, or the whole cluster.", no_args_is_help=True)


@app.command("nodes")
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
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Remove nodes: cordon, drain (--ignore-daemonsets), delete the Node, kubeadm reset, one at a time;
    etcd members leave etcd too. Refuses the last control-plane node and the last etcd member."""
    target = api.resolve_cluster(file, cluster)
    names = match_nodes(target, nodes)
    options = run_options(dry_run=dry_run, nodes=nodes, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    options.force = force
    options.extra.update({"removing": names, "grace_period": grace_period, "drain_timeout": drain_timeout,
                          "force_drain": force, "skip_cleanup": skip_cleanup})
    kube = {h.name for h in target.hosts_with_role("control-plane") + target.hosts_with_role("worker")}
    pipeline = "DeleteKubernetesNodesPipeline" if kube & set(names) else "DeleteNodesPipeline"
    confirm_and_run(target, pipeline, f"remove {', '.join(names)} from {target.name}", options, yes=yes,
                    log_format=log_format)


@app.command("cluster")
def delete_cluster(
    file: FileOpt = None, cluster: ContextOpt = None, dry_run: DryRunOpt = False, yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Reset every node in parallel (kubeadm reset, etcd, balancers); etcd backups and kubexm's PKI are kept."""
    target = api.resolve_cluster(file, cluster)
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    confirm_and_run(target, "DeleteClusterPipeline", f"delete cluster {target.name} from all "
                    f"{len(target.spec.hosts)} hosts", options, yes=yes, log_format=log_format)


@app.command("addon")
def delete_addon(
    name: Annotated[str, typer.Argument(help="the addon's name (spec.addons[].name, or e.g. local-path)")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="its namespace (charts)")] = "default",
    file: FileOpt = None, cluster: ContextOpt = None, yes: YesOpt = False, dry_run: DryRunOpt = False,
    log_format: LogFormatOpt = LogFormat.text, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Uninstall an addon kubexm installed: helm uninstall, or kubectl delete of the applied manifest."""
    from kubexm.spec.fields import DnsLabel

    # Both reach helm and kubectl on a node: refused here as the cluster file refuses them.
    name = checked(name, DnsLabel, "NAME")
    namespace = checked(namespace, DnsLabel, "--namespace")
    from kubexm.engine import Module, Pipeline, Task, first, role
    from kubexm.steps.addons import RemoveAddon

    target = api.resolve_cluster(file, cluster)
    task = Task("RemoveAddon", [RemoveAddon(name, namespace)], hosts=first(role("control-plane")),
                description=f"uninstall {name}")
    pipeline = Pipeline("DeleteAddonPipeline", [Module("Addons", [task])])
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    confirm_and_run(target, pipeline, f"uninstall addon {name} from {target.name}", options, yes=yes,
                    log_format=log_format)

"""``kubexm rollback``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    YesOpt,
    confirm_and_run,
    console,
    run_options,
    when,
)

app = typer.Typer(help="Undo a failed upgrade from what the upgrade kept.", no_args_is_help=True)


@app.command("cluster")
def rollback_cluster(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    restore_etcd_data: Annotated[bool, typer.Option(
        "--restore-etcd-data", help="also restore etcd's data from the snapshot taken right before the upgrade "
        "(writes made since then are lost)")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="print what would be rolled back and change nothing")] = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Put back, node by node with a health check between nodes, the binaries and configs the last upgrade
    kept; etcd's data only with --restore-etcd-data."""
    from kubexm.errors import StateError
    from kubexm.steps.rollback import load_point

    target = api.resolve_cluster(file, cluster)
    point = load_point(target.name)
    if not point or point.get("state") != "ready":
        used = f" (the last one, {point['id']}, was already rolled back)" if point else ""
        raise StateError(f"nothing to roll back: cluster {target.name} has no upgrade rollback point{used}; "
                         "`kubexm upgrade cluster` and `kubexm upgrade etcd` keep one")
    if restore_etcd_data and not point.get("snapshot"):
        raise StateError(f"the rollback point {point['id']} has no etcd snapshot; roll back without "
                         "--restore-etcd-data")
    before, after = point.get("from") or "the previous version", point["to"]
    if plan:
        table = Table("WHAT", "VALUE", box=None)
        for key, value in (("rollback point", point["id"]), ("component", point["component"]),
                           ("from", after), ("back to", before), ("kept", when(point.get("created"))),
                           ("nodes, one at a time", ", ".join(point.get("nodes", []))),
                           ("etcd snapshot", point.get("snapshot") or "-"),
                           ("etcd data", "restored from the snapshot" if restore_etcd_data else "kept as it is")):
            table.add_row(key, str(value))
        console().print(table)
        return
    options = run_options(skip_tags=None if restore_etcd_data else "etcd-data", accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    options.extra["rollback"] = point
    if restore_etcd_data:
        options.extra["from_file"] = point["snapshot"]
    # The store keeps the previous version as the one applied again, so the next upgrade starts from there.
    rolled = target.model_copy(deep=True)
    if point.get("from"):
        if point["component"] == "etcd":
            rolled.spec.etcd.version = point["from"]
        else:
            rolled.spec.kubernetes.version = point["from"]
    data = " and etcd's data (writes since the upgrade are lost)" if restore_etcd_data else ""
    confirm_and_run(rolled, "RollbackClusterPipeline",
                    f"roll {point['component']} of {target.name} back from {after} to {before}{data}", options,
                    yes=yes, log_format=log_format, remember=bool(point.get("from")), source=file)

"""``kubexm create config`` and ``kubexm create cluster``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    NodesOpt,
    OfflineOpt,
    ParallelOpt,
    SetOpt,
    SkipTagsOpt,
    TagsOpt,
    YesOpt,
    command_line,
    confirm,
    console,
    exit_with,
    finish,
    run_options,
    views,
)
from kubexm.spec.default import default_local_cluster
from kubexm.spec.loader import load_cluster, parse_cluster
from kubexm.spec.sample import sample_config

app = typer.Typer(help="Create things: a sample cluster file, a cluster.", no_args_is_help=True)


@app.command("config")
def create_config(
    name: Annotated[str, typer.Option("--name", help="cluster name")] = "mycluster",
    with_ha: Annotated[bool, typer.Option("--with-ha", help="3 control-plane nodes behind haproxy+keepalived")] = False,
    # The product of this command is a file: -o names it (its meaning since the first release; see
    # `kubexm generate docs` for the rule that -o is a format everywhere else).
    output: Annotated[Path | None, typer.Option("--output", "-o", metavar="FILE",
                                                help="write to FILE instead of stdout")] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite an existing FILE")] = False,
) -> None:
    """Write a commented sample cluster file to edit."""
    text = sample_config(name, with_ha)
    parse_cluster(text, source="<sample>")  # a sample that does not load would be a bug: fail loudly
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists() and not force:
        from kubexm.errors import UsageError

        raise UsageError(f"{output} already exists", hint="pass --force to overwrite it, or another -o FILE")
    output.write_text(text)
    console().print(f"wrote {output}; edit the hosts, then `kubexm create cluster -f {output} --dry-run`")


@app.command("cluster")
def create_cluster(
    file: FileOpt = None,
    set_: SetOpt = None,
    dry_run: DryRunOpt = False,
    offline: OfflineOpt = False,
    tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None,
    nodes: NodesOpt = None,
    skip_preflight: Annotated[bool, typer.Option("--skip-preflight", help="go on even when preflight checks fail")] = False,
    local: Annotated[bool, typer.Option("--local", help="no cluster file: make THIS machine a one-node cluster "
                                                         "(changes its hostname, swap and firewall)")] = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    parallel: ParallelOpt = 50,
    command_timeout: CommandTimeoutOpt = None,
    offline_bundle: Annotated[Path | None, typer.Option(
        "--offline-bundle", metavar="BUNDLE", help="install from this bundle (`kubexm offline package`) and nothing "
        "else: checked against the cluster file before any node is contacted")] = None,
) -> None:
    """Create (or converge) a cluster from a cluster file (-f), or this machine alone (--local)."""
    from kubexm.errors import UsageError

    if file is not None and local:
        raise UsageError("-f and --local exclude each other", hint="-f FILE for the hosts of a cluster file, "
                         "--local for this machine alone")
    if file is None and not local:
        # Without a file the hosts would be this machine: reconfiguring it must be asked for by name.
        raise UsageError("create cluster needs -f FILE, or --local to make this machine a one-node cluster",
                         hint="`kubexm create config -o cluster.yaml` writes a sample cluster file")
    if file is None:
        cluster = default_local_cluster() if not set_ else parse_cluster(
            _default_text(), source="<built-in local cluster>", overrides=set_)
        source = None
    else:
        cluster = load_cluster(file, set_ or ())
        source = file
    options = run_options(dry_run=dry_run, offline=offline, tags=tags, skip_tags=skip_tags, nodes=nodes,
                          skip_preflight=skip_preflight, accept_keys=accept_new_host_key, parallel=parallel,
                          command_timeout=command_timeout, pipeline="CreateClusterPipeline")
    if offline_bundle is not None:  # coverage, then verify and unpack: before the prompt and before any node
        from kubexm.offline.install import prepare

        cluster = prepare(cluster, offline_bundle)
    confirm(f"create cluster {cluster.name} on {', '.join(h.name for h in cluster.spec.hosts)}", yes=yes,
            dry_run=dry_run)
    listeners, view = views(log_format)
    outcome = api.create_cluster(cluster, options, command_line=command_line(), listeners=listeners, source=source)
    exit_with(finish(outcome, view, log_format))


def _default_text() -> str:
    from kubexm.spec.default import default_local_cluster_yaml

    return default_local_cluster_yaml()

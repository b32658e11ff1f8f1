"""``kubexm health cluster``."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    command_line,
    console,
    exit_with,
    run_options,
)

if TYPE_CHECKING:
    from rich.console import Console

    from kubexm.diagnostics.health_checks import Report

app = typer.Typer(help="Cluster health: one report of nodes, etcd, certificates and Kubernetes.", no_args_is_help=True)


class HealthOutput(StrEnum):
    table = "table"
    json = "json"
    yaml = "yaml"


SECTIONS = (("node", "Nodes"), ("unit", "Units kubexm manages"), ("etcd", "etcd"), ("certificates", "Certificates"),
            ("kubernetes", "Kubernetes"))
COLOURS = {"ok": "green", "warn": "yellow", "fail": "red"}


@app.command("cluster")
def health_cluster(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    nodes: Annotated[str | None, typer.Option("--nodes", help="only these hosts: names, globs or roles, "
                                              "comma-separated")] = None,
    output: Annotated[HealthOutput, typer.Option("--output", "-o", help="table, json or yaml (stable keys, "
                                                 "kind HealthReport)")] = HealthOutput.table,
    watch: Annotated[float | None, typer.Option("--watch", min=1.0, metavar="SECONDS", show_default=False,
                                                help="take the report again every SECONDS until Ctrl-C")] = None,
    no_sudo: Annotated[bool, typer.Option("--no-sudo", help="probe as the login user (root-only files such as "
                                          "certificates and etcd's client key are then not read)")] = False,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """One report from one parallel round of connections: per node (reachable and handshake time, OS and kernel,
    uptime, load, memory, disk and inode use of /, the etcd data dir and the runtime's and kubelet's roots, clock
    offset from this machine, swap, kernel modules and sysctls, state and restart count of every unit kubexm
    manages, failed units), etcd (members, leader, raft index spread, DB size against the quota, alarms,
    per-member latency, learners, version skew), certificates (days left, as `certs check`) and Kubernetes
    (node conditions, control-plane pods, CoreDNS, pending and crash-looping kube-system pods) when an API server
    answers through the admin kubeconfig.

    Every check is ok, warn or fail with a one-line reason and the fix. Only reads: takes no lock, so it runs
    while another kubexm command works on the cluster.

    -o json prints one document: {"kind": "HealthReport", "apiVersion": "kubexm.io/health/v1", "cluster",
    "generated_at", "duration_seconds", "status": ok|warn|fail, "summary": {"ok", "warn", "fail"}, "all_nodes",
    "nodes": [{"name", "address", "roles", "reachable", "error", "connect_ms", "os", "kernel", "uptime_seconds",
    "container", "status", "units": [{"unit", "load_state", "active_state", "restarts"}], "filesystems": [{"path",
    "mount", "size_kb", "available_kb", "used_percent", "inodes_used_percent"}]}], "etcd": {"type", "members",
    "leader", "raft_index_spread", "db_size_bytes", "quota_bytes", "alarms", "versions", "learners",
    "latency_ms"} or null, "kubernetes": {"reachable", "via", "message", ...}, "certificates": [rows of `certs
    check -o json`], "checks": [{"section", "id", "target", "status", "reason", "fix", "data"}]}.

    Exit code: 0 all ok, 3 warnings, 4 failures (an unreachable node is a failure).
    """
    from kubexm.diagnostics.health_checks import take_report

    target = api.resolve_cluster(file, cluster)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    line = command_line()
    out = console()
    code = 130  # interrupted before the first report was taken
    # --watch ends with Ctrl-C: the exit code is then the last report's.
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            report = take_report(target, options, sudo=not no_sudo, command=line)
            code = report.exit_code
            if watch and output is HealthOutput.table and sys.stdout.isatty():
                out.clear()
            show(report, output, out)
            if not watch:
                break
            time.sleep(watch)
    exit_with(code)


def show(report: Report, output: HealthOutput | str, out: Console) -> None:
    if str(output) == "json":
        # Indented for a person at a terminal; one compact line for a pipe or a file (jq, monitoring), which
        # Python encodes in C: the indented form is pure Python, ~1 ms a node, and a report covers every node.
        sys.stdout.write(json.dumps(report.document(), indent=2 if sys.stdout.isatty() else None) + "\n")
        sys.stdout.flush()
        return
    if str(output) == "yaml":
        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump(report.document(), sys.stdout)
        sys.stdout.write("---\n")
        return
    from rich.table import Table
    from rich.text import Text

    out.print(f"[bold]Health of {report.cluster}[/] [dim]({report.generated_at}, {report.seconds:.1f} s)[/]")
    for key, title in SECTIONS:
        rows = [c for c in report.checks if c.section == key]
        if key == "kubernetes" and not rows:
            out.print(Text.assemble((f"{title}: ", "bold"), str(report.kubernetes.get("message"))))
            continue
        if not rows:
            continue
        table = Table(title=title, title_justify="left", show_lines=False)
        for col in ("status", "target", "check", "reason", "fix"):
            table.add_column(col, overflow="fold")
        for c in rows:
            table.add_row(Text(c.status, style=COLOURS[c.status]), Text(c.target), Text(c.id), Text(c.reason),
                          Text(c.fix or ""))
        out.print(table)
    counts = report.counts()
    colour = COLOURS[report.status]
    out.print(f"[{colour}]{report.status}[/]: {counts['ok']} ok, {counts['warn']} warning(s), "
              f"{counts['fail']} failure(s)")

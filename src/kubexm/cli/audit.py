"""``kubexm audit``: the keyed hash chain of every mutating run; list, verify, export."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from kubexm.cli.common import Output, OutputOpt, console, emit
from kubexm.cli.consoles import err_console
from kubexm.state.audit import AuditLog

app = typer.Typer(help="The audit log: list entries, verify the keyed hash chain, export it as JSON lines.",
                  invoke_without_command=True)


@app.callback()
def audit(ctx: typer.Context,
          cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="only this cluster")] = None,
          limit: Annotated[int, typer.Option("--limit", help="last N entries")] = 50,
          output: OutputOpt = Output.table) -> None:
    """List audit entries (who, what, which cluster, outcome).

    Each run has a `started` entry, written before it touches a host, and an entry for how it ended;
    a run that never ended (killed) shows as `incomplete/killed`.
    """
    if ctx.invoked_subcommand is not None:
        return
    entries = AuditLog().entries(cluster, limit)
    if output in (Output.json, Output.yaml):
        emit([e.record() for e in entries], output)
        return
    wide = output is Output.wide
    table = Table("ID", "TIME", "USER", "CLUSTER", "STATUS", *(["RUN", "HOSTS"] if wide else []), "ACTION", box=None)
    for e in entries:
        hosts = e.details.get("hosts")
        extra = [e.run_id or "-", ",".join(map(str, hosts)) if isinstance(hosts, list) else "-"] if wide else []
        table.add_row(str(e.id), e.when, escape(e.user), escape(e.target), e.state or e.status,
                      *map(escape, extra), escape(e.action))
    console().print(table if entries else "the audit log is empty")


@app.command("verify")
def verify() -> None:
    """Recompute the keyed chain and check it against the head kept outside the database; exit 1 and name
    every altered, missing or reordered entry."""
    log = AuditLog()
    problems = log.verify()
    count = len(log.entries())
    if problems:
        for p in problems:
            err_console.print(f"[red]{escape(p)}[/]", soft_wrap=True)
        err_console.print(f"audit log is NOT intact: {len(problems)} problem(s) in {count} entries")
        raise typer.Exit(1)
    console().print(f"audit log intact: {count} entries, keyed hash chain verified")


@app.command("export")
def export(output: Annotated[Path | None, typer.Option(
        "--output", "-o", metavar="FILE", help="write to FILE (created 0600) instead of stdout",
        show_default=False)] = None) -> None:
    """Every entry, oldest first, as JSON lines (all fields, MACs included) for retention elsewhere."""
    log = AuditLog()
    if output is None:
        log.export(sys.stdout)
        return
    fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)
        count = log.export(fh)
    err_console.print(f"wrote {count} audit entries to {output}")

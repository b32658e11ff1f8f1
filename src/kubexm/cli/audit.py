"""``kubexm audit``: the hash-chained log of every mutating run, and its verification."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from rich.table import Table

from kubexm.cli.common import console
from kubexm.cli.consoles import err_console
from kubexm.state.audit import AuditLog

app = typer.Typer(help="The audit log: list entries, verify the hash chain.", invoke_without_command=True)


@app.callback()
def audit(ctx: typer.Context,
          cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="only this cluster")] = None,
          limit: Annotated[int, typer.Option("--limit", help="last N entries")] = 50,
          json_out: Annotated[bool, typer.Option("--json", help="JSON lines")] = False) -> None:
    """List audit entries (who, what, which cluster, outcome)."""
    if ctx.invoked_subcommand is not None:
        return
    entries = AuditLog().entries(cluster, limit)
    if json_out:
        for e in entries:
            sys.stdout.write(json.dumps({"id": e.id, "time": e.when, "user": e.user, "action": e.action,
                                         "target": e.target, "status": e.status, "details": e.details,
                                         "hash": e.hash}) + "\n")
        return
    table = Table("ID", "TIME", "USER", "CLUSTER", "STATUS", "ACTION", box=None)
    for e in entries:
        table.add_row(str(e.id), e.when, e.user, e.target, e.status, e.action)
    console().print(table if entries else "the audit log is empty")


@app.command("verify")
def verify() -> None:
    """Recompute the hash chain; exit 1 and name every altered, missing or reordered entry."""
    log = AuditLog()
    problems = log.verify()
    count = len(log.entries())
    if problems:
        for p in problems:
            err_console.print(f"[red]{p}[/]")
        err_console.print(f"audit log is NOT intact: {len(problems)} problem(s) in {count} entries")
        raise typer.Exit(1)
    console().print(f"audit log intact: {count} entries, hash chain verified")
    return

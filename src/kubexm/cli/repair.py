"""``kubexm repair``."""

from __future__ import annotations

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    YesOpt,
    command_line,
    confirm,
    console,
    exit_with,
    finish,
    run_options,
    views,
)

app = typer.Typer(invoke_without_command=True)  # `kubexm repair` is the command itself; its help is the docstring


@app.callback()
def repair(
    ctx: typer.Context,
    file: FileOpt = None,
    cluster: ContextOpt = None,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Conservative repair from the health report: a plan first, applied with --yes.

    Takes the health report, plans the known remediations and shows the plan; with --yes (or a yes at the
    prompt) applies them, then takes the report again and shows it.

    Applied: stopped or failed units kubexm manages are started (etcd members one at a time); a node whose
    sysctls, modules or swap drifted gets PrepareNodesOS again, one whose clock is off SyncTime; certificates
    expired or expiring within 30 days are renewed (`certs renew`). Only planned, with the command to run: a
    broken etcd member is replaced (`delete nodes`, then `add nodes --role etcd`) while quorum holds; a
    component missing on one node is installed again (`create cluster`).

    Exit code: the report taken after the repair (0 ok, 3 warnings, 4 failures); 1 when a repair failed and the
    report shows nothing worse; 2 when the plan needs confirmation and stdin is not a terminal.
    """
    if ctx.invoked_subcommand is not None:
        return
    from kubexm.cli.health import HealthOutput, show
    from kubexm.diagnostics.health_checks import take_report
    from kubexm.diagnostics.repair import plan, run_action

    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    line = command_line()
    out = console()
    report = take_report(target, options, command=line)
    actions = plan(report, target, line)
    if not actions:
        show(report, HealthOutput.table, out)
        out.print("nothing to repair" if report.status == "ok" else
                  "no known remediation applies: see the fixes in the report")
        exit_with(report.exit_code)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Repair plan for {target.name}", title_justify="left")
    for col in ("#", "action", "why", "same as"):
        table.add_column(col, overflow="fold")
    for i, a in enumerate(actions, 1):
        label = a.describe() + ("" if a.automatic else " (planned only: run it yourself)")
        table.add_row(str(i), Text(label), Text(a.reason), Text(a.command or "-"))
    out.print(table)
    automatic = [a for a in actions if a.automatic]
    if not automatic:
        out.print("nothing kubexm applies by itself here: run the commands named above")
        exit_with(report.exit_code)
        return
    confirm(f"apply the {len(automatic)} repair(s) above to {target.name}", yes=yes)
    failed = False
    for a in automatic:
        listeners, view = views(log_format)
        outcome = run_action(target, a, options, command_line=line, listeners=listeners)
        if finish(outcome, view, log_format):
            failed = True
            out.print(Text(f"repair failed: {a.describe()}", style="red"))
    out.print("health after the repair:")
    after = take_report(target, options, command=line)
    show(after, HealthOutput.table, out)
    exit_with(after.exit_code or (1 if failed else 0))

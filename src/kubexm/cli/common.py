"""Flags shared by commands, and turning them into RunOptions and views."""

from __future__ import annotations

import re
import shlex
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from kubexm.api import Outcome
from kubexm.engine import RunOptions
from kubexm.engine.events import Listener
from kubexm.hosts.base import ConnectOptions
from kubexm.hosts.keeper import persist_seconds
from kubexm.render import ConsoleView, JsonLog
from kubexm.render.console import print_failures


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class Output(StrEnum):
    table = "table"
    wide = "wide"
    yaml = "yaml"
    json = "json"


FileOpt = Annotated[Path | None, typer.Option("--file", "-f", help="cluster file", show_default=False)]
ContextOpt = Annotated[str | None, typer.Option("--cluster", "-c", help="a cluster from the state store "
                                                "(default: the current context)", show_default=False)]
SetOpt = Annotated[list[str] | None, typer.Option("--set", "-e", help="override a field: key.path=value "
                                                  "(repeatable)", show_default=False)]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="show what would change, per task and host; change nothing")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="with --dry-run: plan without connecting to hosts")]
TagsOpt = Annotated[str | None, typer.Option("--tags", help="only tasks with these tags/names (comma-separated)")]
SkipTagsOpt = Annotated[str | None, typer.Option("--skip-tags", help="skip tasks with these tags/names")]
NodesOpt = Annotated[str | None, typer.Option("--nodes", help="limit to hosts: names, globs, addresses or roles")]
LogFormatOpt = Annotated[LogFormat, typer.Option("--log-format", help="text for people, json for machines")]
AcceptKeyOpt = Annotated[list[str] | None, typer.Option(
    "--accept-new-host-key", help="trust the new SSH host key of this host (repeatable)", show_default=False)]
ParallelOpt = Annotated[int, typer.Option("--parallel", min=1, help="hosts worked on at once")]



def console() -> Console:
    # Not a terminal (CI logs, pipes): a wide page so tables and paths are not cut at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def split(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def run_options(*, dry_run: bool = False, offline: bool = False, tags: str | None = None,
                skip_tags: str | None = None, nodes: str | None = None, skip_preflight: bool = False,
                accept_keys: list[str] | None = None, parallel: int = 50) -> RunOptions:
    if offline and not dry_run:
        from kubexm.errors import UsageError

        raise UsageError("--offline only makes sense with --dry-run", hint="add --dry-run")
    return RunOptions(
        dry_run=dry_run, offline=offline, tags=split(tags), skip_tags=split(skip_tags),
        nodes=[nodes] if nodes else None, skip_preflight=skip_preflight, parallel=parallel,
        connect=ConnectOptions(replace_host_keys=frozenset(accept_keys or ()), persist=persist_seconds()),
    )


def views(log_format: LogFormat) -> tuple[list[Listener], ConsoleView | None]:
    if log_format is LogFormat.json:
        return [JsonLog()], None
    view = ConsoleView(console())
    return [view], view


_SECRET = re.compile(r"pass(word|phrase)?|secret|token|key", re.I)


def command_line(argv: list[str] | None = None) -> str:
    """The invocation for the run history and audit log, with secret-looking `-e key=value` values redacted."""
    out = []
    for arg in (sys.argv[1:] if argv is None else argv):
        key, sep, _ = arg.partition("=")
        if sep and _SECRET.search(key.rsplit(".", 1)[-1]):
            arg = f"{key}=<redacted>"
        out.append(shlex.quote(arg))
    return " ".join(["kubexm", *out])


def exit_with(code: int) -> None:
    """End the command with ``code`` (Typer ignores return values)."""
    if code:
        raise typer.Exit(code)


def finish(outcome: Outcome, view: ConsoleView | None, log_format: LogFormat) -> int:
    """Print the summary (and failure report) of a run; return the exit code."""
    report = outcome.report
    if view is not None:
        view.stop()
        c = view.console
        print_failures(c, report)
        failed = outcome.shared.get("preflight_failed")
        if isinstance(failed, list) and failed:
            c.print(f"[yellow]A real run would stop at PreflightChecks: {len(failed)} check(s) failed "
                    f"(see the table); fix them or pass --skip-preflight.[/]")
        colour = "green" if report.ok else "red"
        c.print(f"[{colour}]{'done' if report.ok else 'failed'}[/]: {report.summary()} [dim](run {report.run_id})[/]")
        mutating = [r for r in report.records if r.mutates and r.status != "not-applicable"]
        if report.ok and mutating and all(r.status == "ok" for r in mutating):
            c.print("[dim]nothing to change: every host is already as wanted[/]")
    return 0 if report.ok else 1

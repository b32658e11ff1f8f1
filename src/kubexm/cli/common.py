"""Flags shared by commands, and turning them into RunOptions and views.

Only helpers live here: every verb's Typer app and all of its sub-commands are defined in the verb's own
module (``kubexm.cli.<verb>``), so importing that one module registers the whole verb.
"""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from kubexm import api
from kubexm.api import Outcome
from kubexm.engine import RunOptions
from kubexm.engine.events import Listener
from kubexm.hosts.base import ConnectOptions
from kubexm.hosts.dial import connect_timeout
from kubexm.hosts.keeper import persist_seconds
from kubexm.render import ConsoleView, JsonLog
from kubexm.render.console import print_failures

if TYPE_CHECKING:
    from kubexm.engine import Pipeline
    from kubexm.spec.models import Cluster


class LogFormat(StrEnum):
    text = "text"
    json = "json"


class Output(StrEnum):
    """``-o/--output`` of every command that prints data: always a format, never a file."""

    table = "table"
    wide = "wide"
    yaml = "yaml"
    json = "json"


class DocOutput(StrEnum):
    """``-o/--output`` of commands that print one document (a spec), which has no table form."""

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
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="do not ask for confirmation (needed when stdin is "
                                      "not a terminal)")]
CommandTimeoutOpt = Annotated[float | None, typer.Option(
    "--command-timeout", min=1.0, metavar="SECONDS", show_default=False,
    help="seconds any one remote command may run before it is stopped (default: per kind of work)")]
OutputOpt = Annotated[Output, typer.Option("--output", "-o", help="format: table, wide, yaml or json")]

def console() -> Console:
    # Not a terminal (CI logs, pipes): a wide page so tables and paths are not cut at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def split(value: str | None) -> set[str]:
    return {v.strip() for v in (value or "").split(",") if v.strip()}


def run_options(*, dry_run: bool = False, offline: bool = False, tags: str | None = None,
                skip_tags: str | None = None, nodes: str | None = None, skip_preflight: bool = False,
                accept_keys: list[str] | None = None, parallel: int = 50, command_timeout: float | None = None,
                pipeline: str | None = None) -> RunOptions:
    """RunOptions from the shared flags. With ``pipeline``, ``tags``/``skip_tags`` came from the user and
    must name tags (or module/task names) of that pipeline; without it they are the command's own."""
    if offline and not dry_run:
        from kubexm.errors import UsageError

        raise UsageError("--offline only makes sense with --dry-run", hint="add --dry-run")
    wanted, skipped = split(tags), split(skip_tags)
    if pipeline is not None and (wanted or skipped):
        check_tags(pipeline, wanted, skipped)
    return RunOptions(
        dry_run=dry_run, offline=offline, tags=wanted, skip_tags=skipped,
        nodes=[nodes] if nodes else None, skip_preflight=skip_preflight, parallel=parallel,
        connect=ConnectOptions(replace_host_keys=frozenset(accept_keys or ()), persist=persist_seconds(),
                               command_timeout=command_timeout, connect_timeout=connect_timeout()),
    )


def pipeline_tags(pipeline: str) -> tuple[set[str], set[str]]:
    """(tags, module and task names) that ``--tags``/``--skip-tags`` can select in a registered pipeline."""
    from kubexm.engine import get_registry

    tags: set[str] = set()
    names: set[str] = set()
    for module in get_registry().pipeline(pipeline).modules:
        tags |= module.tags
        names.add(module.name)
        for task in module.tasks:
            tags |= task.tags
            names.add(task.name)
    return tags, names


def check_tags(pipeline: str, *selections: set[str]) -> None:
    """Refuse tags that select nothing in ``pipeline``: a mistyped tag would otherwise run only the
    always-tasks and report success."""
    tags, names = pipeline_tags(pipeline)
    unknown = sorted(t for sel in selections for t in sel if t not in tags and t not in names)
    if unknown:
        from kubexm.errors import UsageError

        raise UsageError(f"unknown tag{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; known tags: "
                         f"{', '.join(sorted(tags - {'always'}))} (or a module or task name, "
                         f"see `kubexm generate docs`)")


def confirm(question: str, *, yes: bool, dry_run: bool = False) -> None:
    """Ask before a command changes hosts. Without a terminal nobody can answer: refuse unless --yes.

    Called before anything is touched (no lock, no run record, no connection), so a refusal changes nothing.
    """
    if yes or dry_run:
        return
    if not sys.stdin.isatty():
        from kubexm.errors import UsageError

        raise UsageError(f"refusing to {question} without confirmation: stdin is not a terminal; pass --yes (-y)")
    if not typer.confirm(f"{question}?", default=False):
        from kubexm.cli.consoles import err_console

        err_console.print("not confirmed; nothing was changed")
        raise typer.Exit(1)


def views(log_format: LogFormat) -> tuple[list[Listener], ConsoleView | None]:
    if log_format is LogFormat.json:
        return [JsonLog()], None
    view = ConsoleView(console())
    return [view], view


def command_line(argv: list[str] | None = None) -> str:
    """The invocation for the run history, the audit log and the lock file, secrets redacted by the state
    layer's own rule (``--set``/``-e`` settings of secret fields, any secret-looking ``key=value``)."""
    from kubexm.state.redact import redact_argv

    return shlex.join(["kubexm", *redact_argv(sys.argv[1:] if argv is None else list(argv))])


def when(ts: float | None) -> str:
    return "-" if ts is None else datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def emit(data: Any, output: Output | DocOutput) -> None:
    """Print data as JSON or YAML (``-o json|yaml``)."""
    if output.value == "json":
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    else:
        from ruamel.yaml import YAML

        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump(data, sys.stdout)


def match_nodes(cluster: Cluster, nodes: str) -> list[str]:
    from kubexm.engine import match_hosts

    return match_hosts(cluster, [nodes])


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


def run_pipeline(target: Cluster, pipeline: str, options: RunOptions, log_format: LogFormat, *,
                 remember: bool = False, source: Path | None = None) -> Outcome:
    """Run a registered pipeline with the chosen view; exits non-zero when it failed. ``remember``: on
    success the state store keeps ``target``'s spec as the one applied (see api.execute)."""
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, pipeline, options, command_line=command_line(), listeners=listeners,
                               remember=remember, source=source)
    exit_with(finish(outcome, view, log_format))
    return outcome


def execute(target: Cluster, name: str, items: Sequence[Any], options: RunOptions, log_format: LogFormat) -> None:
    """Run tasks built by the command itself (not a registered pipeline) with the chosen view."""
    listeners, view = views(log_format)
    outcome = api.execute(target, items, options, name=name, command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))


def confirm_and_run(target: Cluster, pipeline: str | Pipeline, question: str, options: RunOptions, *, yes: bool,
                    log_format: LogFormat, remember: bool = False, source: Path | None = None) -> None:
    """The end of every command that changes hosts: ask ``question`` (see confirm; a dry run asks nothing),
    then run ``pipeline``, a registered one by name or one the command built."""
    confirm(question, yes=yes, dry_run=options.dry_run)
    if isinstance(pipeline, str):
        run_pipeline(target, pipeline, options, log_format, remember=remember, source=source)
    else:
        execute(target, pipeline.name, pipeline.plan(target, set(), set()), options, log_format)


def checked(value: str, kind: Any, argument: str) -> str:
    """A command-line value checked as the spec type ``kind`` (kubexm.spec.fields): what the cluster file
    would refuse is refused here too, before anything else, in one line naming ``argument``."""
    from pydantic import TypeAdapter, ValidationError

    try:
        return str(TypeAdapter(kind).validate_python(value))
    except ValidationError as exc:
        from kubexm.errors import UsageError

        problem = str(exc.errors()[0]["msg"]).removeprefix("Value error, ")
        raise UsageError(f"{argument}: {problem}") from None


def node_command(app: typer.Typer, pipeline: str, doc: str) -> None:
    """Add ``node NODES`` to ``app`` (``kubexm cordon node``, ``kubexm uncordon node``): run ``pipeline``,
    a kubectl call on a control-plane node about the named nodes. Asks nothing: it is undone as easily."""

    @app.command("node", help=doc)
    def node(
        nodes: Annotated[str, typer.Argument(help="node names or patterns, comma-separated")],
        file: FileOpt = None, cluster: ContextOpt = None, log_format: LogFormatOpt = LogFormat.text,
        accept_new_host_key: AcceptKeyOpt = None, command_timeout: CommandTimeoutOpt = None,
    ) -> None:
        target = api.resolve_cluster(file, cluster)
        options = run_options(nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
        run_pipeline(target, pipeline, options, log_format)

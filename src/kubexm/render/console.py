"""The terminal view: a line per step result, tables for reports, a spinner on a TTY.

Dry-run results read as a plan: ``+`` would change, ``=`` already in place, ``~`` not
applicable, ``?`` planned without connecting.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.text import Text

from kubexm.engine.events import Event
from kubexm.engine.executor import RunReport

if TYPE_CHECKING:
    # Loaded where used: the bar only on a terminal, tables only for reports. A run's output elsewhere (CI logs,
    # pipes, the benchmark) does not pay for them before its first connection.
    from rich.progress import Progress, TaskID
    from rich.table import Table

# (symbol, its style, the word): the line of a step result.
MARKS = {
    "changed": ("✓", "green", "changed"),
    "ok": ("=", "green", "in place"),
    "would-change": ("+", "yellow", "would change"),
    "planned": ("?", "cyan", "planned"),
    "not-applicable": ("~", "magenta", "not applicable"),
    "failed": ("✗", "red", "FAILED"),
    "skipped": ("-", "dim", "skipped"),
}
Part = str | tuple[str, str]  # text, or (text, style): never parsed as markup, whatever a host name holds


def report_table(title: str, columns: list[str], rows: list[list[str]]) -> Table:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for col in columns:
        table.add_column(col, overflow="fold")
    colours = {"pass": "green", "warn": "yellow", "fail": "bold red"}
    for row in rows:
        table.add_row(*[f"[{colours[c]}]{c}[/]" if c in colours else escape(str(c)) for c in row])
    return table


class ConsoleView:
    """Prints results as they come; on a terminal also a live bar per task (hosts done / hosts)."""

    def __init__(self, console: Console | None = None, verbose: bool = False) -> None:
        self.console = console or Console(highlight=False)
        self.verbose = verbose
        self.progress: Progress | None = None
        self.bar: TaskID | None = None
        self.current: dict[str, str] = {}  # host -> what it is doing now
        self._plain: bool | None = None  # not a terminal: lines are written as plain text (see _say)

    def _live(self) -> Progress | None:
        if not self.console.is_terminal:
            return None  # quiet when not a terminal: only the result lines
        if self.progress is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

            self.progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), console=self.console, transient=True)
            self.progress.start()
        return self.progress

    def _describe_hosts(self, task: str) -> str:
        busy = ", ".join(f"{h}: {s}" for h, s in list(self.current.items())[:3])
        more = f" (+{len(self.current) - 3})" if len(self.current) > 3 else ""
        return f"{task}  [dim]{escape(busy)}{more}[/]"

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def _say(self, *parts: Part, soft_wrap: bool = False) -> None:
        """One line of output. On a terminal Rich styles (and wraps) it; elsewhere (a pipe, a CI log) it is written
        as plain text: at a thousand hosts Rich's rendering of every result line was a tenth of a run's CPU."""
        text = Text.assemble(*parts)
        if self._plain is None:
            self._plain = not self.console.is_terminal
        if self._plain:
            self.console.file.write(text.plain + "\n")
        else:
            self.console.print(text, soft_wrap=soft_wrap)

    def __call__(self, e: Event) -> None:
        if e.kind == "module.start":
            self._say((e.module or "", "bold"), " ", (e.message, "dim"))
        elif e.kind == "task.start":
            hosts = e.data.get("hosts", [])
            self._say("  ", (e.task or "", "bold cyan"), " ", (f"on {len(hosts)} host(s), {e.data.get('strategy', '')}", "dim"))
            live = self._live()
            if live is not None:
                if self.bar is not None:
                    live.remove_task(self.bar)
                self.current = {}
                self.bar = live.add_task(e.task or "", total=max(1, len(hosts)))
        elif e.kind == "step.start" and self.progress is not None and self.bar is not None:
            self.current[e.host or ""] = e.step or ""
            self.progress.update(self.bar, description=self._describe_hosts(e.task or ""))
        elif e.kind == "host.end" and self.progress is not None and self.bar is not None:
            self.current.pop(e.host or "", None)
            self.progress.update(self.bar, advance=1, description=self._describe_hosts(e.task or ""))
        elif e.kind == "step.end":
            mark, style, word = MARKS.get(e.status or "", ("?", "", e.status or ""))
            if e.status == "ok" and not e.data.get("mutates", True):
                word = "done"
            if e.step == "Command" and e.status in ("changed", "failed"):
                return  # its output block (a "message" event) already said everything
            if e.status == "ok" and not self.verbose and e.step in ("Greeting", "PreflightReport"):
                return
            desc = e.data.get("description") or e.step or ""
            parts: list[Part] = ["    ", (mark, style), f" {e.host or ''}: {desc} ", (f"({word})", "dim")]
            if e.status in ("failed", "not-applicable", "skipped") and e.message and e.message != desc:
                parts.append(f"\n        {e.message}")
            self._say(*parts)
        elif e.kind == "host.retry":
            self._say("    ", ("↻", "yellow"), f" {e.host or ''}: {e.message}")
        elif e.kind == "report":
            d = e.data
            self.console.print(report_table(d.get("title", ""), d.get("columns", []), d.get("rows", [])))
        elif e.kind == "message" and e.data.get("command") is not None:
            status = e.data.get("exit_status")
            self._say((f"== {e.host or ''}", "bold"), " ", (f"(exit {status})", "green" if status == 0 else "red"))
            out = (e.data.get("stdout") or "").rstrip("\n")
            err = (e.data.get("stderr") or "").rstrip("\n")
            if out:
                self._say(out, soft_wrap=True)
            if err:
                self._say((err, "red"), soft_wrap=True)
        elif e.kind == "message" and e.message:
            self._say("    ", ("!", "yellow"), f" {e.message}")
        elif e.kind == "run.end":
            self.stop()


def print_failures(console: Console, report: RunReport) -> None:
    """The failure report: where it stopped and, per failed step, the command, exit code and stderr tail."""
    failures = report.failures
    if not failures:
        return
    where = f" — the run stopped after task {report.stopped_at}" if report.stopped_at else ""
    console.print(f"[bold red]{len(failures)} failure(s){where}[/]")
    for r in failures:
        console.print(f"  [red]✗[/] [bold]{escape(r.host)}[/] {escape(r.task)} / {escape(r.step)}: "
                      f"{escape(r.message)}", soft_wrap=True)
        if r.command:
            console.print(f"      command: {escape(r.command)}  (exit {r.exit_status})", soft_wrap=True)
        if r.stderr:
            console.print(f"      stderr:  {escape(r.stderr)}", soft_wrap=True)

"""The result lines a run prints: verbatim text in a pipe (no markup read from host output, no wrapping), styled
on a terminal, and the same words either way."""

from __future__ import annotations

import io
import re

from rich.console import Console

from kubexm.engine.events import Event
from kubexm.render.console import ConsoleView

TRICKY = "[bold]not markup[/] " + "x" * 120  # what a command's output or a host's error may well contain


def events() -> list[Event]:
    return [
        Event(kind="step.end", host="n1", step="Sysctl", status="failed", message=TRICKY,
              data={"description": "set [kernel] sysctls"}),
        Event(kind="message", host="n2", data={"command": "cat f", "exit_status": 0, "stdout": TRICKY + "\n",
                                               "stderr": "warn [x]\n"}),
        Event(kind="host.retry", host="n3", message="retrying [1/3]"),
    ]


def test_a_pipe_gets_every_line_verbatim() -> None:
    out = io.StringIO()
    view = ConsoleView(Console(file=out, highlight=False))
    for e in events():
        view(e)
    assert out.getvalue().splitlines() == [
        "    ✗ n1: set [kernel] sysctls (FAILED)",
        f"        {TRICKY}",
        "== n2 (exit 0)",
        TRICKY,
        "warn [x]",
        "    ↻ n3: retrying [1/3]",
    ]


def test_a_terminal_gets_the_same_words_styled() -> None:
    out = io.StringIO()
    view = ConsoleView(Console(file=out, highlight=False, force_terminal=True, width=300, color_system="standard"))
    for e in events():
        view(e)
    text = out.getvalue()
    assert "\x1b[" in text  # styled
    words = re.sub(r"\x1b\[[0-9;]*m", "", text)
    for expected in ("n1: set [kernel] sysctls", "(FAILED)", TRICKY, "warn [x]", "n3: retrying [1/3]", "== n2"):
        assert expected in words, expected

"""Events the engine emits; the terminal view, JSON log, state recorder and audit log listen.

Nothing in a step prints: a step that has something to show (a preflight table) emits a
``report`` event and the listeners decide how to render it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

EventKind = Literal[
    "run.start", "run.end",
    "module.start", "module.end",
    "task.start", "task.end",
    "step.start", "step.end",
    "host.end", "host.retry", "report", "message",
]

# Outcome of one step on one host.
#   ok: already as wanted (check passed), nothing done     changed: run() made a change
#   would-change: dry-run, check says a change is needed     planned: offline plan, not checked
#   not-applicable: the step cannot act on this host          failed: the step failed
#   skipped: not attempted because the run is stopping
StepStatus = Literal["ok", "changed", "would-change", "planned", "not-applicable", "failed", "skipped"]


@dataclass
class Event:
    kind: EventKind
    run_id: str = ""
    module: str | None = None
    task: str | None = None
    host: str | None = None
    step: str | None = None
    status: str | None = None
    message: str = ""
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "", {})}


Listener = Callable[[Event], None]


class EventBus:
    """Synchronous fan-out; a listener that raises is dropped from nothing and breaks nothing."""

    def __init__(self, listeners: list[Listener] | None = None) -> None:
        self._listeners: list[Listener] = list(listeners or [])

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def emit(self, event: Event) -> None:
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:  # a broken view must never break a deployment
                continue

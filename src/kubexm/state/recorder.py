"""An event listener that writes runs and step results to the state store as they happen."""

from __future__ import annotations

import getpass
from types import SimpleNamespace

from kubexm.engine.events import Event
from kubexm.state.store import Store


class StateRecorder:
    """Subscribe to a RunContext's EventBus; ``command`` is the user's command line (no secrets)."""

    def __init__(self, store: Store, cluster: str, command: str, dry_run: bool = False) -> None:
        self.store, self.cluster, self.command, self.dry_run = store, cluster, command, dry_run
        self.run_id: str | None = None

    def __call__(self, event: Event) -> None:
        if event.kind == "run.start":
            self.run_id = event.run_id
            self.store.start_run(event.run_id, self.cluster, self.command, _user(), self.dry_run)
        elif event.kind == "step.end" and self.run_id:
            d = event.data
            self.store.record_step(self.run_id, SimpleNamespace(
                module=event.module, task=event.task, host=event.host, step=event.step,
                status=event.status, message=event.message, duration=d.get("duration", 0.0),
                command=d.get("command"), exit_status=d.get("exit_status"), stderr=d.get("stderr")))
        elif event.kind == "run.end" and self.run_id:
            self.store.finish_run(self.run_id, event.status or "unknown", event.message,
                                  event.data.get("stopped_at"))


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

"""An event listener that writes runs and step results to the state store while the run goes on."""

from __future__ import annotations

import getpass
import time
from types import SimpleNamespace

from kubexm.engine.events import Event
from kubexm.state.store import Store

# Step results are written in batches at most this many seconds apart: a commit (and its sync) per step
# held the event loop ~1 ms per host and step. A crash loses at most the results of this last interval; the
# run itself stays recorded as unfinished.
FLUSH_EVERY = 0.25


class StateRecorder:
    """Subscribe to a RunContext's EventBus; ``command`` is the user's command line (no secrets)."""

    def __init__(self, store: Store, cluster: str, command: str, dry_run: bool = False) -> None:
        self.store, self.cluster, self.command, self.dry_run = store, cluster, command, dry_run
        self.run_id: str | None = None
        self.finished = False
        self._pending: list[SimpleNamespace] = []
        self._flushed = time.monotonic()

    def flush(self) -> None:
        if self._pending and self.run_id:
            self.store.record_steps(self.run_id, self._pending)
        self._pending = []
        self._flushed = time.monotonic()

    def __call__(self, event: Event) -> None:
        if event.kind == "run.start":
            self.run_id = event.run_id
            self.store.start_run(event.run_id, self.cluster, self.command, _user(), self.dry_run)
        elif event.kind == "step.end" and self.run_id:
            d = event.data
            self._pending.append(SimpleNamespace(
                module=event.module, task=event.task, host=event.host, step=event.step,
                status=event.status, message=event.message, duration=d.get("duration", 0.0),
                command=d.get("command"), exit_status=d.get("exit_status"), stderr=d.get("stderr")))
            if time.monotonic() - self._flushed >= FLUSH_EVERY:
                self.flush()
        elif event.kind == "run.end" and self.run_id:
            self.finish(event.status or "unknown", event.message, event.data.get("stopped_at"))

    def finish(self, status: str, summary: str, stopped_at: str | None = None) -> None:
        """Close the run's history row (once): from run.end, or by the caller when the run was interrupted
        and never reached run.end (a row left `running` would read as killed)."""
        if self.run_id is None or self.finished:
            return
        self.flush()  # what finished before an interruption stays on record
        self.store.finish_run(self.run_id, status, summary, stopped_at)
        self.finished = True


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"

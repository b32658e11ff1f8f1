"""A run records its intent before it touches a host; a run stopped by Ctrl-C, SIGTERM or SIGHUP is recorded
as interrupted (run history and audit); a run killed by SIGKILL reads as started and never completed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubexm.state.audit import AuditLog
from kubexm.state.lock import holder
from kubexm.state.store import Store

TESTS = Path(__file__).resolve().parents[1]

# A `run command` on in-memory hosts whose commands hang: the run is mid-way when the signal comes.
RUNNER = """
import sys
sys.path.insert(0, sys.argv[1])
from support.memory import MemoryFleet
from kubexm import api
from kubexm.engine import RunOptions
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config

fleet = MemoryFleet(["master1", "worker1", "worker2"])
for name in ("master1", "worker1", "worker2"):
    fleet[name].delay = 120
try:
    api.run_command(parse_cluster(sample_config("demo")), "sleep 1", RunOptions(),
                    command_line="kubexm run command -- sleep 1", factory=fleet.factory)
except KeyboardInterrupt:
    sys.exit(130)
"""


def _start_and_wait_until_running() -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(TESTS)], stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        assert proc.poll() is None, (proc.stderr.read() if proc.stderr else b"").decode()
        store = Store()
        try:
            runs, entries = store.runs("demo"), AuditLog(store).entries()
        finally:
            store.close()
        if runs and entries:
            # Intent on record before any host answered: the hosts' commands hang for 120 s.
            assert runs[0].status == "running" and [e.status for e in entries] == ["started"]
            assert entries[0].details["hosts"] == ["master1", "worker1", "worker2"]
            assert entries[0].state == "running"
            time.sleep(0.3)  # well inside the hanging host commands
            return proc
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the run never started")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=lambda s: s.name)
def test_a_stopped_run_is_recorded_as_interrupted(sig: signal.Signals) -> None:
    proc = _start_and_wait_until_running()
    proc.send_signal(sig)
    try:
        code = proc.wait(20)
    finally:
        proc.kill()
    assert code == 130, (proc.stderr.read() if proc.stderr else b"").decode()
    store = Store()
    (run,) = store.runs("demo")
    assert run.status == "interrupted" and run.finished is not None and sig.name in run.summary
    log = AuditLog(store)
    started, ended = log.entries()
    assert (started.status, started.state, ended.status) == ("started", "started", "interrupted")
    assert ended.details["completes"] == started.id and ended.details["reason"] == sig.name
    assert ended.run_id == started.run_id == run.run_id
    assert log.verify() == []
    assert holder("demo") is None  # the lock went with the run
    store.close()


def test_a_killed_run_reads_started_and_never_completed(capsys: pytest.CaptureFixture[str]) -> None:
    proc = _start_and_wait_until_running()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    store = Store()
    (run,) = store.runs("demo")
    assert run.status == "incomplete/killed" and run.finished is None
    log = AuditLog(store)
    (started,) = log.entries()
    assert (started.status, started.state) == ("started", "incomplete/killed")
    assert log.verify() == []
    store.close()
    from kubexm.cli.main import run_cli

    assert run_cli(["audit"]) == 0
    assert "incomplete/killed" in capsys.readouterr().out

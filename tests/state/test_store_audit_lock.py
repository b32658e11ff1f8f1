"""State store, hash-chained audit log, cluster lock across processes, run recorder."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubexm.engine.events import Event
from kubexm.errors import LockedError, StateError
from kubexm.state.audit import AuditLog
from kubexm.state.lock import cluster_lock
from kubexm.state.recorder import StateRecorder
from kubexm.state.store import Store


def test_clusters_and_contexts() -> None:
    store = Store()
    assert store.current_context() is None
    with pytest.raises(StateError, match="no cluster named 'a'"):
        store.use_context("a")
    store.save_cluster("a", "spec: 1", "ok", "/tmp/a.yaml")
    store.save_cluster("b", "spec: 2", "failed")
    store.use_context("a")
    assert store.current_context() == "a"
    store.save_cluster("a", "spec: 3", "ok")  # an update keeps the source it was created from
    row = store.get_cluster("a")
    assert row is not None and row.spec_yaml == "spec: 3" and row.source == "/tmp/a.yaml"
    assert [c.name for c in store.list_clusters()] == ["a", "b"]
    assert store.delete_cluster("a") and store.current_context() is None


def test_runs_and_steps() -> None:
    store = Store()
    rec = StateRecorder(store, "c1", "kubexm create cluster -f c.yaml", dry_run=False)
    rec(Event("run.start", run_id="r1"))
    rec(Event("step.end", run_id="r1", module="M", task="T", host="n1", step="S", status="failed",
              message="boom", data={"duration": 0.5, "command": "false", "exit_status": 1, "stderr": "bad"}))
    rec(Event("run.end", run_id="r1", status="failed", message="1 failed", data={"stopped_at": "T"}))
    (run,) = store.runs("c1")
    assert (run.status, run.summary, run.stopped_at, run.dry_run) == ("failed", "1 failed", "T", False)
    (step,) = store.steps_of("r1")
    assert (step.host, step.status, step.exit_status, step.stderr) == ("n1", "failed", 1, "bad")


def test_interrupted_run_is_closed_once_and_a_vanished_one_reads_incomplete() -> None:
    store = Store()
    rec = StateRecorder(store, "c1", "kubexm run command", dry_run=False)
    rec(Event("run.start", run_id="r2"))
    rec.finish("interrupted", "interrupted (SIGTERM)")
    rec.finish("failed", "must not overwrite")
    assert store.runs("c1")[0].status == "interrupted"
    # started under no lock and never finished: the process that ran it is gone
    StateRecorder(store, "c1", "kubexm run command")(Event("run.start", run_id="r3"))
    assert store.run("r3") is not None and store.run("r3").status == "incomplete/killed"  # type: ignore[union-attr]
    with cluster_lock("c1", "kubexm run command", "r3"):  # the same run, alive: running
        assert store.run("r3").status == "running"  # type: ignore[union-attr]


def test_newer_schema_is_refused(kubexm_home: Path) -> None:
    Store().close()
    db = sqlite3.connect(kubexm_home / "state.db")
    db.execute("PRAGMA user_version=99")
    db.commit()
    db.close()
    with pytest.raises(StateError, match="newer kubexm"):
        Store()


def test_audit_chain_detects_edit_and_delete(kubexm_home: Path) -> None:
    log = AuditLog()
    for i in range(5):
        log.append("alice", f"kubexm create cluster #{i}", "prod", "ok", {"run_id": str(i)})
    assert log.verify() == []
    db = sqlite3.connect(kubexm_home / "state.db")
    db.execute("UPDATE audit SET status='failed' WHERE id=3")
    db.commit()
    problems = log.verify()
    assert problems == ["audit entry 3 (prod: kubexm create cluster #2, failed): altered after it was written "
                        "(MAC mismatch)"]
    db.execute("UPDATE audit SET status='ok' WHERE id=3")
    db.execute("DELETE FROM audit WHERE id=4")
    db.commit()
    assert log.verify() == ["audit entry 4 is missing from the log: deleted"]
    db.close()


def test_audit_redacts_secrets() -> None:
    entry = AuditLog().append("bob", "kubexm x", "c", "ok", {"hosts": [{"name": "n", "password": "pw-9"}],
                                                             "sudoPassword": "pw-8", "token": "t"})
    assert "pw-9" not in str(entry.details) and "pw-8" not in str(entry.details) and "'t'" not in str(entry.details)
    assert entry.details["hosts"][0]["name"] == "n"
    (stored,) = AuditLog().entries()
    assert stored.details == entry.details


def test_lock_blocks_a_second_process_and_frees_when_holder_dies(kubexm_home: Path) -> None:
    holder = subprocess.Popen([sys.executable, "-c", (
        "import time; from kubexm.state.lock import cluster_lock\n"
        "with cluster_lock('prod', 'kubexm create cluster -f prod.yaml'):\n"
        "    print('held', flush=True); time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(LockedError) as err, cluster_lock("prod", "kubexm delete cluster"):
            pass
        assert f"pid {holder.pid}" in str(err.value) and "kubexm create cluster -f prod.yaml" in str(err.value)
        with cluster_lock("other", "x"):  # other clusters are not blocked
            pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.05)
    with cluster_lock("prod", "kubexm delete cluster"):
        pass

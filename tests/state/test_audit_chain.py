"""The keyed audit chain: every kind of tampering an attacker with the database (not the key) can do is named
by `audit verify` in one line; runs that never completed read as such; export writes JSON lines."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.cli.main import run_cli
from kubexm.errors import StateError
from kubexm.state.audit import GENESIS, AuditLog, _digest
from kubexm.state.lock import cluster_lock
from kubexm.state.store import Store


@pytest.fixture
def log() -> Iterator[AuditLog]:
    audit = AuditLog()
    for i in range(1, 6):
        audit.append("alice", f"kubexm create cluster #{i}", "prod", "ok", {"run_id": f"r{i}"})
    assert audit.verify() == []
    yield audit
    audit.store.close()


@pytest.fixture
def db(kubexm_home: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(kubexm_home / "state.db", isolation_level=None)
    conn.row_factory = sqlite3.Row
    yield conn
    conn.close()


def _rehash_forward(db: sqlite3.Connection, start: int, alg: str | None = None) -> None:
    """What an attacker without the key can do: recompute every hash from ``start`` on with plain SHA-256."""
    prev = db.execute("SELECT hash FROM audit WHERE id=?", (start - 1,)).fetchone()
    prev_hash = prev[0] if prev else GENESIS
    for r in db.execute("SELECT * FROM audit WHERE id>=? ORDER BY id", (start,)).fetchall():
        digest = _digest(r["id"], r["time"], r["user"], r["action"], r["target"], r["status"], r["details"], prev_hash)
        db.execute("UPDATE audit SET prev_hash=?, hash=?, alg=COALESCE(?, alg) WHERE id=?",
                   (prev_hash, digest, alg, r["id"]))
        prev_hash = digest


def _verify_cli(capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str]]:
    code = run_cli(["audit", "verify"])
    _, err = capsys.readouterr()
    return code, [line for line in err.splitlines() if line.strip()]


def test_edited_entry_is_named(log: AuditLog, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    db.execute("UPDATE audit SET user='mallory' WHERE id=2")
    assert log.verify() == ["audit entry 2 (prod: kubexm create cluster #2, ok): altered after it was written "
                            "(MAC mismatch)"]
    code, lines = _verify_cli(capsys)
    assert code == 1 and lines[0].startswith("audit entry 2 (") and "altered" in lines[0]
    assert lines[-1] == "audit log is NOT intact: 1 problem(s) in 5 entries"


def test_rewritten_and_rehashed_entry_is_named(log: AuditLog, db: sqlite3.Connection) -> None:
    db.execute("UPDATE audit SET status='failed' WHERE id=3")
    _rehash_forward(db, 3)
    problems = log.verify()
    assert problems[0] == "audit entry 3 (prod: kubexm create cluster #3, failed): altered after it was written " \
                          "(MAC mismatch)"
    assert [p.split(" (")[0] for p in problems] == ["audit entry 3", "audit entry 4", "audit entry 5",
                                                    "audit entry 5: is not the entry the head recorded: replaced"]


def test_rewritten_as_old_unkeyed_entries_is_named(log: AuditLog, db: sqlite3.Connection) -> None:
    # Downgrade: pretend the whole log predates the key and re-hash it without one.
    db.execute("UPDATE audit SET status='failed' WHERE id=3")
    _rehash_forward(db, 1, alg="sha256")
    problems = log.verify()
    assert problems[0] == "audit entry 1 (prod: kubexm create cluster #1, ok): unkeyed entry inside the keyed " \
                          "chain: rewritten without the key"
    assert any(p.startswith("audit entry 3 (prod: kubexm create cluster #3, failed): unkeyed") for p in problems)


def test_deleted_tail_is_named(log: AuditLog, db: sqlite3.Connection, capsys: pytest.CaptureFixture[str]) -> None:
    db.execute("DELETE FROM audit WHERE id>=4")
    assert log.verify() == ["audit entries 4-5 are missing from the end of the log (the head records entry 5): deleted"]
    db.execute("DELETE FROM audit WHERE id>=2")
    code, lines = _verify_cli(capsys)
    assert code == 1 and lines[0] == "audit entries 2-5 are missing from the end of the log (the head records " \
                                     "entry 5): deleted"
    db.execute("DELETE FROM audit")
    assert log.verify() == ["audit entries 1-5 are missing from the end of the log (the head records entry 5): deleted"]


def test_deleted_tail_stays_on_record_after_the_next_append(log: AuditLog, db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM audit WHERE id=5")
    log.append("bob", "kubexm run command", "prod", "ok")  # rewrites the head: the evidence must not go with it
    assert log.verify() == ["audit entry 5 (prod: kubexm run command, ok): when it was written, entry 5 is "
                            "missing from the end of the log: deleted"]


def test_deleted_middle_and_reordered_entries_are_named(log: AuditLog, db: sqlite3.Connection) -> None:
    db.execute("DELETE FROM audit WHERE id=2")
    assert log.verify() == ["audit entry 2 is missing from the log: deleted"]
    db.execute("DELETE FROM audit")
    log.store.db.execute("DELETE FROM audit")  # same file; start over for the reorder case
    fresh = AuditLog(Store(log.store.path))
    for i in range(1, 4):
        fresh.append("alice", f"#{i}", "prod", "ok")
    a, b = (dict(r) for r in db.execute("SELECT * FROM audit WHERE id IN (1, 2) ORDER BY id"))
    db.execute("DELETE FROM audit WHERE id IN (1, 2)")
    for row, new_id in ((a, 2), (b, 1)):
        row["id"] = new_id
        db.execute(f"INSERT INTO audit({', '.join(row)}) VALUES ({', '.join('?' * len(row))})", list(row.values()))
    problems = fresh.verify()
    assert problems and problems[0].startswith("audit entry 1 (prod: #2, ok): ")


def test_head_file_removed_or_forged_is_named(log: AuditLog, kubexm_home: Path) -> None:
    head = kubexm_home / "audit.head"
    data = json.loads(head.read_text())
    head.write_text(json.dumps({**data, "seq": 3}))  # point the head at an earlier entry without the key
    assert log.verify() == [f"audit head {head} was altered (MAC mismatch)"]
    head.unlink()
    assert log.verify() == [f"audit head {head} is missing: entries deleted from the end of the log cannot be "
                            "ruled out"]
    log.append("bob", "kubexm run command", "prod", "ok")
    assert log.verify() == ["audit entry 6 (prod: kubexm run command, ok): when it was written, the audit head "
                            "file was missing"]


def test_missing_key_is_named_and_never_silently_replaced(log: AuditLog, kubexm_home: Path) -> None:
    key = kubexm_home / "audit.key"
    key.unlink()
    assert log.verify()[0] == f"audit key {key} is missing: the keyed entries cannot be verified"
    with pytest.raises(StateError, match=r"audit key .* is missing, but the audit log has keyed entries"):
        log.append("bob", "kubexm run command", "prod", "ok")
    assert not key.exists()


def test_a_forged_key_does_not_pass(log: AuditLog, kubexm_home: Path) -> None:
    (kubexm_home / "audit.key").write_bytes(b"k" * 32)
    problems = log.verify()
    assert problems[0].startswith("audit entry 1 (") and problems[0].endswith("(MAC mismatch)")


def test_unkeyed_entries_from_before_the_key_still_verify(kubexm_home: Path) -> None:
    store = Store()
    prev = GENESIS
    for i in (1, 2):  # as an older kubexm wrote them
        digest = _digest(i, float(i), "old", f"#{i}", "prod", "ok", "{}", prev)
        store.db.execute("INSERT INTO audit(id, time, user, action, target, status, details, prev_hash, hash) "
                         "VALUES (?,?,?,?,?,?,?,?,?)", (i, float(i), "old", f"#{i}", "prod", "ok", "{}", prev, digest))
        prev = digest
    log = AuditLog(store)
    assert log.verify() == []
    log.append("alice", "#3", "prod", "ok")
    assert log.verify() == [] and [e.alg for e in log.entries()] == ["sha256", "sha256", "hmac-sha256"]
    store.db.execute("UPDATE audit SET user='mallory' WHERE id=1")
    assert log.verify()[0] == "audit entry 1 (prod: #1, ok): altered after it was written (hash mismatch)"


def test_started_without_completion_reads_incomplete(capsys: pytest.CaptureFixture[str]) -> None:
    log = AuditLog()
    done = log.begin("alice", "kubexm create cluster -f c.yaml", "prod", "run-a", ["n1", "n2"])
    log.complete(done, "ok", {"summary": "3 ok"})
    log.begin("alice", "kubexm upgrade cluster -f c.yaml", "prod", "run-b", ["n1"])
    entries = log.entries()
    assert [(e.status, e.state) for e in entries] == [("started", "started"), ("ok", "ok"),
                                                      ("started", "incomplete/killed")]
    assert entries[1].details["completes"] == entries[0].id and entries[0].details["hosts"] == ["n1", "n2"]
    with cluster_lock("prod", "kubexm upgrade cluster", "run-b"):  # its process alive and holding the cluster
        assert log.entries()[-1].state == "running"
    assert log.verify() == []
    assert run_cli(["audit"]) == 0
    out = capsys.readouterr().out
    assert "incomplete/killed" in out and out.count("started") == 1
    assert run_cli(["audit", "-o", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["state"] for r in rows] == ["started", "ok", "incomplete/killed"]


def test_export_writes_every_entry_as_json_lines(log: AuditLog, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "audit.jsonl"
    assert run_cli(["audit", "export", "-o", str(target)]) == 0
    lines = target.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [1, 2, 3, 4, 5]
    first = json.loads(lines[0])
    assert first["alg"] == "hmac-sha256" and first["prev_hash"] == GENESIS and first["details"] == {"run_id": "r1"}
    assert json.loads(lines[1])["prev_hash"] == first["hash"]
    assert target.stat().st_mode & 0o777 == 0o600
    capsys.readouterr()
    assert run_cli(["audit", "export"]) == 0
    assert capsys.readouterr().out.splitlines() == lines

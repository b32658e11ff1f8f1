"""The SQLite state store. One file, WAL mode, schema versioned with ``PRAGMA user_version``.

The database holds the run history and the audit log (and stored specs, secrets redacted): it and its
``-wal``/``-shm`` files are 0600 and its directory 0700, whatever the umask and whatever mode they had.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm import paths
from kubexm.errors import StateError
from kubexm.state.files import private_dir, private_file, tighten
from kubexm.state.lock import run_in_progress
from kubexm.state.redact import redact_command_line

# A run whose row still says "running" but whose process is gone (killed, power lost) reads as this.
INCOMPLETE = "incomplete/killed"

# Each entry upgrades the schema by one version; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE clusters (
        name TEXT PRIMARY KEY, spec_yaml TEXT NOT NULL, status TEXT NOT NULL,
        created REAL NOT NULL, updated REAL NOT NULL, source TEXT);
    CREATE TABLE settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE runs (
        run_id TEXT PRIMARY KEY, cluster TEXT NOT NULL, command TEXT NOT NULL, user TEXT NOT NULL,
        dry_run INTEGER NOT NULL, started REAL NOT NULL, finished REAL, status TEXT NOT NULL,
        summary TEXT NOT NULL DEFAULT '', stopped_at TEXT);
    CREATE INDEX runs_cluster ON runs(cluster, started);
    CREATE TABLE step_results (
        id INTEGER PRIMARY KEY AUTOINCREMENT, run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
        module TEXT, task TEXT NOT NULL, host TEXT NOT NULL, step TEXT NOT NULL, status TEXT NOT NULL,
        message TEXT NOT NULL DEFAULT '', duration REAL NOT NULL DEFAULT 0, command TEXT,
        exit_status INTEGER, stderr TEXT);
    CREATE INDEX step_results_run ON step_results(run_id);
    CREATE TABLE audit (
        id INTEGER PRIMARY KEY, time REAL NOT NULL, user TEXT NOT NULL, action TEXT NOT NULL,
        target TEXT NOT NULL, status TEXT NOT NULL, details TEXT NOT NULL,
        prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
    """,
    # Audit entries from here on are HMAC-SHA256 with the key under $KUBEXM_HOME; older ones stay plain SHA-256.
    """
    ALTER TABLE audit ADD COLUMN alg TEXT NOT NULL DEFAULT 'sha256';
    """,
]


@dataclass(frozen=True)
class ClusterRow:
    name: str
    spec_yaml: str
    status: str
    created: float
    updated: float
    source: str | None = None  # the cluster file it was created from (re-read for secrets)


@dataclass(frozen=True)
class RunRow:
    run_id: str
    cluster: str
    command: str
    user: str
    dry_run: bool
    started: float
    finished: float | None
    status: str
    summary: str
    stopped_at: str | None


@dataclass(frozen=True)
class StepRow:
    module: str | None
    task: str
    host: str
    step: str
    status: str
    message: str
    duration: float
    command: str | None
    exit_status: int | None
    stderr: str | None


class Store:
    """Open (creating or migrating) the state database. Cheap to construct; one per command."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or paths.state_db()
        if path is None:
            private_dir(self.path.parent)  # $KUBEXM_HOME: keys, kubeconfigs, this database
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            # Created 0600 before SQLite opens it: SQLite makes -wal and -shm with the database file's mode.
            private_file(self.path)
            for extra in self._companions():
                tighten(extra)
            self.db = sqlite3.connect(self.path, timeout=10, isolation_level=None)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
            for extra in self._companions():
                tighten(extra)
        except OSError as exc:
            raise StateError(f"state database {self.path} cannot be used: {exc}",
                             hint=f"check the owner and permissions of {self.path.parent}") from None
        except sqlite3.DatabaseError as exc:
            raise StateError(
                f"state database {self.path} cannot be used: {exc}",
                hint="move the file aside to start afresh, or restore it from a backup",
            ) from None

    def _companions(self) -> list[Path]:
        return [self.path.with_name(self.path.name + suffix) for suffix in ("-wal", "-shm", "-journal")]

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise StateError(
                f"state database {self.path} was written by a newer kubexm (schema {version})",
                hint="upgrade kubexm",
            )
        for index in range(version, len(MIGRATIONS)):
            with self.tx():
                self.db.executescript("BEGIN;" + MIGRATIONS[index] + f";PRAGMA user_version={index + 1};")

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """An immediate transaction: writers serialise instead of failing half-way."""
        if self.db.in_transaction:
            yield self.db
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()

    # -- clusters -------------------------------------------------------------------------
    def save_cluster(self, name: str, spec_yaml: str, status: str, source: str | None = None) -> None:
        """Store the cluster's spec; callers pass YAML with secrets already redacted."""
        now = time.time()
        with self.tx() as db:
            db.execute(
                "INSERT INTO clusters(name, spec_yaml, status, created, updated, source) VALUES (?,?,?,?,?,?) "
                "ON CONFLICT(name) DO UPDATE SET spec_yaml=excluded.spec_yaml, status=excluded.status, "
                "updated=excluded.updated, source=COALESCE(excluded.source, clusters.source)",
                (name, spec_yaml, status, now, now, source),
            )

    def get_cluster(self, name: str) -> ClusterRow | None:
        row = self.db.execute("SELECT * FROM clusters WHERE name=?", (name,)).fetchone()
        return ClusterRow(**dict(row)) if row else None

    def list_clusters(self) -> list[ClusterRow]:
        return [ClusterRow(**dict(r)) for r in self.db.execute("SELECT * FROM clusters ORDER BY name")]

    def delete_cluster(self, name: str) -> bool:
        with self.tx() as db:
            gone = db.execute("DELETE FROM clusters WHERE name=?", (name,)).rowcount > 0
            if self.current_context() == name:
                db.execute("DELETE FROM settings WHERE key='current-context'")
        return gone

    # -- contexts -------------------------------------------------------------------------
    def use_context(self, name: str) -> None:
        if self.get_cluster(name) is None:
            known = ", ".join(c.name for c in self.list_clusters()) or "none yet"
            raise StateError(f"no cluster named '{name}' (known: {known})",
                             hint="`kubexm get clusters` lists them")
        with self.tx() as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES ('current-context', ?)", (name,))

    def current_context(self) -> str | None:
        row = self.db.execute("SELECT value FROM settings WHERE key='current-context'").fetchone()
        return str(row[0]) if row else None

    # -- runs -----------------------------------------------------------------------------
    def start_run(self, run_id: str, cluster: str, command: str, user: str, dry_run: bool) -> None:
        with self.tx() as db:
            db.execute(
                "INSERT INTO runs(run_id, cluster, command, user, dry_run, started, status) "
                "VALUES (?,?,?,?,?,?, 'running')",
                (run_id, cluster, redact_command_line(command), user, int(dry_run), time.time()),
            )

    def finish_run(self, run_id: str, status: str, summary: str, stopped_at: str | None) -> None:
        with self.tx() as db:
            db.execute(
                "UPDATE runs SET finished=?, status=?, summary=?, stopped_at=? WHERE run_id=?",
                (time.time(), status, summary, stopped_at, run_id),
            )

    def record_steps(self, run_id: str, records: Sequence[Any]) -> None:
        """Store step results (engine StepRecords or anything with the same fields) in one transaction: one
        sync of the database file for all of them."""
        with self.tx() as db:
            db.executemany(
                "INSERT INTO step_results(run_id, module, task, host, step, status, message, duration, "
                "command, exit_status, stderr) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                [(run_id, r.module, r.task, r.host, r.step, r.status, r.message or "", r.duration or 0.0,
                  r.command, r.exit_status, r.stderr) for r in records],
            )

    def runs(self, cluster: str | None = None, limit: int = 20) -> list[RunRow]:
        sql = "SELECT * FROM runs" + (" WHERE cluster=?" if cluster else "") + " ORDER BY started DESC LIMIT ?"
        args: tuple[Any, ...] = (cluster, limit) if cluster else (limit,)
        return [_run_row(r) for r in self.db.execute(sql, args)]

    def run(self, run_id: str) -> RunRow | None:
        row = self.db.execute("SELECT * FROM runs WHERE run_id=?", (run_id,)).fetchone()
        return _run_row(row) if row else None

    def steps_of(self, run_id: str) -> list[StepRow]:
        rows = self.db.execute(
            "SELECT module, task, host, step, status, message, duration, command, exit_status, stderr "
            "FROM step_results WHERE run_id=? ORDER BY id", (run_id,))
        return [StepRow(**dict(r)) for r in rows]


def _run_row(row: sqlite3.Row) -> RunRow:
    data = dict(row)
    data["dry_run"] = bool(data["dry_run"])
    if data["status"] == "running" and not run_in_progress(data["cluster"], data["run_id"]):
        data["status"] = INCOMPLETE  # started, never finished, and its process is gone
    return RunRow(**data)

"""Append-only, keyed hash chain of what was done to which cluster, by whom, and how it ended.

A mutating run writes an entry with status ``started`` before it touches a host (command, user, cluster,
hosts, run id) and a second entry when it ends (``ok``, ``failed`` or ``interrupted``, naming the run id).
A ``started`` entry that no later entry completes is a run that died on the way (SIGKILL, power loss):
it reads as ``incomplete/killed`` once its process is gone.

Integrity. Each entry carries HMAC-SHA256(key, its fields + the previous entry's MAC). The key is
``audit.key`` next to the database (0600, 32 random bytes, created on first use). The newest entry's
number and MAC (the head) are also kept outside the database, in ``audit.head`` (0600, replaced
atomically, itself MAC'd). ``verify()`` then names:

- an entry edited in place (its MAC no longer matches);
- an entry rewritten and every later one re-hashed: without the key nobody can compute a valid MAC,
  so the first rewritten entry fails (so does a rewrite as an old unkeyed entry inside the keyed chain);
- entries deleted in the middle (gap in the numbers) or at the end (the head names a later entry);
- a head file that was removed or altered, a key that is missing.

Threat model: someone who can read and write ``state.db`` (a restored backup, a careless script, a
user with access to the database only) but can neither read ``audit.key`` nor write ``audit.head``.
Whoever can read the key can forge the whole log, and whoever can put back an older genuine
``audit.head`` together with a truncated database hides the deleted tail: for records that must
outlive this machine, ship ``kubexm audit export`` to storage the deploy machine cannot rewrite.
An append that finds the head inconsistent with the database (head missing, or naming a later entry)
records that in the new entry, so the evidence survives the head being rewritten by that append.

Entries written before the log was keyed (plain SHA-256, ``alg = 'sha256'``) are still checked as
before; no unkeyed entry may follow a keyed one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import hmac
import json
import os
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import IO, Any

from kubexm.errors import StateError
from kubexm.state.files import FILE_MODE, private_file, write_atomic
from kubexm.state.lock import run_in_progress
from kubexm.state.redact import redact, redact_command_line
from kubexm.state.store import INCOMPLETE, Store

__all__ = ["ALG", "GENESIS", "INCOMPLETE", "AuditEntry", "AuditLog", "redact"]

GENESIS = "0" * 64
ALG = "hmac-sha256"
LEGACY_ALG = "sha256"
STARTED = "started"
KEY_BYTES = 32


@dataclass(frozen=True)
class AuditEntry:
    id: int
    time: float
    user: str
    action: str
    target: str
    status: str
    details: dict[str, Any]
    prev_hash: str
    hash: str
    alg: str = ALG
    # What the entry means now (not part of the chain): a `started` entry no later entry completed reads
    # `running` while its process holds the cluster, else `incomplete/killed`; other entries: their status.
    state: str = field(default="", compare=False)

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    @property
    def run_id(self) -> str | None:
        value = self.details.get("run_id")
        return str(value) if value is not None else None

    def record(self) -> dict[str, Any]:
        """Every field, as written (JSON lines of `audit export`), plus its current state."""
        return {"id": self.id, "time": self.time, "when": self.when, "user": self.user, "action": self.action,
                "target": self.target, "status": self.status, "state": self.state or self.status,
                "details": self.details, "alg": self.alg, "prev_hash": self.prev_hash, "hash": self.hash}


def _canonical(id_: int, time_: float, user: str, action: str, target: str, status: str, details: str,
               prev_hash: str, *extra: str) -> bytes:
    return json.dumps([id_, repr(time_), user, action, target, status, details, prev_hash, *extra],
                      separators=(",", ":"), ensure_ascii=False).encode()


def _digest(id_: int, time_: float, user: str, action: str, target: str, status: str, details: str,
            prev_hash: str) -> str:
    """The unkeyed hash of entries written before the log was keyed."""
    return hashlib.sha256(_canonical(id_, time_, user, action, target, status, details, prev_hash)).hexdigest()


def _mac(key: bytes, id_: int, time_: float, user: str, action: str, target: str, status: str, details: str,
         prev_hash: str) -> str:
    message = _canonical(id_, time_, user, action, target, status, details, prev_hash, ALG)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


@dataclass(frozen=True)
class _Head:
    seq: int
    mac: str
    keyed_from: int
    seal: str

    def valid(self, key: bytes) -> bool:
        return hmac.compare_digest(self.seal, _head_seal(key, self.seq, self.mac, self.keyed_from))


def _head_seal(key: bytes, seq: int, mac: str, keyed_from: int) -> str:
    message = json.dumps(["audit-head", seq, mac, keyed_from], separators=(",", ":")).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


class AuditLog:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()
        self.key_path = self.store.path.with_name("audit.key")
        self.head_path = self.store.path.with_name("audit.head")

    # -- key and head -------------------------------------------------------------------
    def _read_key(self) -> bytes | None:
        try:
            fd = os.open(self.key_path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StateError(f"audit key {self.key_path} cannot be read: {exc}") from None
        with os.fdopen(fd, "rb") as fh:
            if os.fstat(fd).st_mode & 0o777 != FILE_MODE:
                os.fchmod(fd, FILE_MODE)
            key = fh.read()
        if len(key) < KEY_BYTES:
            raise StateError(f"audit key {self.key_path} is damaged ({len(key)} bytes)",
                             hint="restore it from a backup; without it the audit log cannot be verified")
        return key

    def _has_keyed_entries(self) -> bool:
        return self.store.db.execute("SELECT 1 FROM audit WHERE alg=? LIMIT 1", (ALG,)).fetchone() is not None

    def _key(self) -> bytes:
        """The chain's key, created (0600) on first use; a lost key is not silently replaced."""
        key = self._read_key()
        if key is not None:
            return key
        if self._has_keyed_entries():
            raise StateError(
                f"audit key {self.key_path} is missing, but the audit log has keyed entries",
                hint="restore the key from a backup (a new key would hide what happened to the old one); "
                     "or move state.db and audit.head aside to start a new log")
        tmp = self.key_path.with_name(f".audit.key.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            os.fchmod(fd, FILE_MODE)
            fh.write(secrets.token_bytes(KEY_BYTES))
            fh.flush()
            os.fsync(fd)
        try:
            os.link(tmp, self.key_path)  # atomic and exclusive: two first appends agree on one key
        except FileExistsError:
            pass
        finally:
            tmp.unlink(missing_ok=True)
        key = self._read_key()
        assert key is not None
        return key

    def _read_head(self) -> _Head | str | None:
        """The head, None when there is no head file, or a one-line reason it cannot be read."""
        try:
            raw = json.loads(self.head_path.read_bytes())
            return _Head(int(raw["seq"]), str(raw["mac"]), int(raw["keyed_from"]), str(raw["seal"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return f"audit head {self.head_path} is unreadable ({type(exc).__name__})"

    def _write_head(self, key: bytes, seq: int, mac: str, keyed_from: int) -> None:
        seal = _head_seal(key, seq, mac, keyed_from)
        write_atomic(self.head_path, json.dumps({"seq": seq, "mac": mac, "keyed_from": keyed_from,
                                                 "seal": seal}).encode())

    @contextlib.contextmanager
    def _serialised(self) -> Iterator[None]:
        """One appender at a time from the insert to the head write, so heads are written in order."""
        path = private_file(self.store.path.with_name("audit.lock"))
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _head_note(self, key: bytes, last_id: int) -> str | None:
        """Why the head does not vouch for the database as it is now (recorded in the next entry), or None."""
        head = self._read_head()
        if head is None:
            return "the audit head file was missing" if self._has_keyed_entries() else None
        if isinstance(head, str):
            return head
        if not head.valid(key):
            return "the audit head file was altered (MAC mismatch)"
        if last_id < head.seq:
            return f"{_missing(last_id + 1, head.seq).removeprefix('audit ')} from the end of the log: deleted"
        row = self.store.db.execute("SELECT hash FROM audit WHERE id=?", (head.seq,)).fetchone()
        if row is None or row[0] != head.mac:
            return f"entry {head.seq} was not the entry the head recorded (replaced)"
        return None

    # -- writing ------------------------------------------------------------------------
    def append(self, user: str, action: str, target: str, status: str,
               details: dict[str, Any] | None = None) -> AuditEntry:
        action = redact_command_line(action)
        data = dict(redact(details or {}))
        with self._serialised():
            key = self._key()
            with self.store.tx() as db:
                last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
                id_, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
                note = self._head_note(key, id_ - 1)
                if note:
                    data["chain_note"] = note
                body = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
                now = time.time()
                mac = _mac(key, id_, now, user, action, target, status, body, prev)
                db.execute("INSERT INTO audit(id, time, user, action, target, status, details, prev_hash, hash, alg) "
                           "VALUES (?,?,?,?,?,?,?,?,?,?)", (id_, now, user, action, target, status, body, prev, mac, ALG))
                first_keyed = db.execute("SELECT MIN(id) FROM audit WHERE alg=?", (ALG,)).fetchone()[0]
            # After the commit: a crash in between leaves the database one entry ahead of the head, which
            # verify accepts (that entry's MAC still proves it genuine); the reverse would read as a deletion.
            self._write_head(key, id_, mac, int(first_keyed or id_))
        return AuditEntry(id_, now, user, action, target, status, json.loads(body), prev, mac, ALG, status)

    def begin(self, user: str, action: str, target: str, run_id: str, hosts: list[str],
              details: dict[str, Any] | None = None) -> AuditEntry:
        """The intent of a run, written before it touches a host."""
        return self.append(user, action, target, STARTED,
                           {"run_id": run_id, "hosts": hosts, "pid": os.getpid(), **(details or {})})

    def complete(self, started: AuditEntry, status: str, details: dict[str, Any] | None = None) -> AuditEntry:
        """How the run ``started`` announced ended: ok, failed or interrupted."""
        return self.append(started.user, started.action, started.target, status,
                           {"run_id": started.run_id, "completes": started.id, **(details or {})})

    # -- reading ------------------------------------------------------------------------
    def entries(self, target: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit" + (" WHERE target=?" if target else "") + " ORDER BY id DESC"
        args: list[Any] = [target] if target else []
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        rows = list(reversed(self.store.db.execute(sql, args).fetchall()))
        out = [_entry(r) for r in rows]
        # A completion always follows its start (same cluster), so it is inside any window holding the start.
        completed = {(e.target, e.run_id) for e in out if e.status != STARTED and e.run_id is not None}
        return [_with_state(e, completed) for e in out]

    def export(self, out: IO[str]) -> int:
        """Write every entry as one JSON line (oldest first); the number written."""
        count = 0
        for entry in self.entries():
            out.write(json.dumps(entry.record(), ensure_ascii=False, sort_keys=True) + "\n")
            count += 1
        return count

    def verify(self) -> list[str]:
        """One line per problem, each naming the entry (or file) concerned; an empty list means intact."""
        problems: list[str] = []
        key = self._read_key()
        head = self._read_head()
        keyed_from = head.keyed_from if isinstance(head, _Head) and key and head.valid(key) else None
        prev_hash, prev_id, seen_keyed = GENESIS, 0, False
        hashes: dict[int, str] = {}
        for r in self.store.db.execute("SELECT * FROM audit ORDER BY id"):
            label = f"audit entry {r['id']} ({r['target']}: {r['action']}, {r['status']})"
            if r["id"] != prev_id + 1:
                problems.append(f"{_missing(prev_id + 1, r['id'] - 1)} from the log: deleted")
            elif r["prev_hash"] != prev_hash:
                problems.append(f"{label}: does not follow entry {prev_id} (prev_hash mismatch): reordered or replaced")
            fields = (r["id"], r["time"], r["user"], r["action"], r["target"], r["status"], r["details"], r["prev_hash"])
            if r["alg"] == ALG:
                seen_keyed = True
                if key is not None and not hmac.compare_digest(_mac(key, *fields), r["hash"]):
                    problems.append(f"{label}: altered after it was written (MAC mismatch)")
            elif r["alg"] == LEGACY_ALG:
                if seen_keyed or (keyed_from is not None and r["id"] >= keyed_from):
                    problems.append(f"{label}: unkeyed entry inside the keyed chain: rewritten without the key")
                elif _digest(*fields) != r["hash"]:
                    problems.append(f"{label}: altered after it was written (hash mismatch)")
            else:
                problems.append(f"{label}: unknown algorithm {r['alg']!r}: rewritten")
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                note = json.loads(r["details"]).get("chain_note")
                if note:
                    problems.append(f"{label}: when it was written, {note}")
            prev_hash, prev_id = r["hash"], r["id"]
            hashes[r["id"]] = r["hash"]
        if key is None and (seen_keyed or head is not None):
            problems.insert(0, f"audit key {self.key_path} is missing: the keyed entries cannot be verified")
            return problems
        if head is None:
            if seen_keyed:
                problems.append(f"audit head {self.head_path} is missing: entries deleted from the end of the log "
                                "cannot be ruled out")
        elif isinstance(head, str):
            problems.append(head)
        elif key is not None and not head.valid(key):
            problems.append(f"audit head {self.head_path} was altered (MAC mismatch)")
        elif prev_id < head.seq:
            problems.append(f"{_missing(prev_id + 1, head.seq)} from the end of the log (the head records entry "
                            f"{head.seq}): deleted")
        elif head.seq in hashes and not hmac.compare_digest(hashes[head.seq], head.mac):
            problems.append(f"audit entry {head.seq}: is not the entry the head recorded: replaced")
        return problems


def _missing(first: int, last: int) -> str:
    return f"audit entry {first} is missing" if first == last else f"audit entries {first}-{last} are missing"


def _entry(r: Any) -> AuditEntry:
    try:
        details = json.loads(r["details"])
    except ValueError:
        details = {"unreadable": r["details"]}
    if not isinstance(details, dict):
        details = {"unreadable": r["details"]}
    return AuditEntry(r["id"], r["time"], r["user"], r["action"], r["target"], r["status"], details,
                      r["prev_hash"], r["hash"], r["alg"], r["status"])


def _with_state(entry: AuditEntry, completed: set[tuple[str, str]]) -> AuditEntry:
    run_id = entry.run_id
    if entry.status != STARTED or (run_id is not None and (entry.target, run_id) in completed):
        return entry
    running = run_id is not None and run_in_progress(entry.target, run_id)
    return dataclasses.replace(entry, state="running" if running else INCOMPLETE)

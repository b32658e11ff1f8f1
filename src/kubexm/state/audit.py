"""Append-only, hash-chained audit log: who did what to which cluster, and whether it worked.

Each entry's hash covers its fields and the previous entry's hash, so editing, deleting or
reordering a row breaks the chain at that row and ``verify()`` names it.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from kubexm.state.store import Store

GENESIS = "0" * 64
_SECRET_KEY = re.compile(r"pass(word|phrase)?|secret|token|private[_-]?key|credential|auth", re.I)


def redact(value: Any) -> Any:
    """Replace values under secret-looking keys, at any depth, before they reach the log."""
    if isinstance(value, dict):
        return {k: ("<redacted>" if _SECRET_KEY.search(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


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

    @property
    def when(self) -> str:
        return datetime.fromtimestamp(self.time, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _digest(id_: int, time_: float, user: str, action: str, target: str, status: str, details: str,
            prev_hash: str) -> str:
    canonical = json.dumps([id_, repr(time_), user, action, target, status, details, prev_hash],
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


class AuditLog:
    def __init__(self, store: Store | None = None) -> None:
        self.store = store or Store()

    def append(self, user: str, action: str, target: str, status: str,
               details: dict[str, Any] | None = None) -> AuditEntry:
        body = json.dumps(redact(details or {}), sort_keys=True, separators=(",", ":"), default=str)
        with self.store.tx() as db:
            last = db.execute("SELECT id, hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
            id_, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
            now = time.time()
            digest = _digest(id_, now, user, action, target, status, body, prev)
            db.execute("INSERT INTO audit VALUES (?,?,?,?,?,?,?,?,?)",
                       (id_, now, user, action, target, status, body, prev, digest))
        return AuditEntry(id_, now, user, action, target, status, json.loads(body), prev, digest)

    def entries(self, target: str | None = None, limit: int | None = None) -> list[AuditEntry]:
        sql = "SELECT * FROM audit" + (" WHERE target=?" if target else "") + " ORDER BY id DESC"
        args: list[Any] = [target] if target else []
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        out = []
        for r in self.store.db.execute(sql, args):
            try:
                details = json.loads(r["details"])
            except ValueError:
                details = {"unreadable": r["details"]}
            out.append(AuditEntry(r["id"], r["time"], r["user"], r["action"], r["target"], r["status"],
                                  details, r["prev_hash"], r["hash"]))
        return list(reversed(out))

    def verify(self) -> list[str]:
        """One line per broken link of the chain; an empty list means the log is intact."""
        problems: list[str] = []
        prev_hash, prev_id = GENESIS, 0
        for r in self.store.db.execute("SELECT * FROM audit ORDER BY id"):
            label = f"audit entry {r['id']} ({r['action']} {r['target']})"
            if r["id"] != prev_id + 1:
                missing = f"{prev_id + 1}" if r["id"] == prev_id + 2 else f"{prev_id + 1}-{r['id'] - 1}"
                problems.append(f"audit entries {missing} are missing: deleted from the log")
            if r["prev_hash"] != prev_hash and r["id"] == prev_id + 1:
                problems.append(f"{label}: does not follow entry {prev_id} (prev_hash mismatch): reordered or replaced")
            expected = _digest(r["id"], r["time"], r["user"], r["action"], r["target"], r["status"],
                               r["details"], r["prev_hash"])
            if expected != r["hash"]:
                problems.append(f"{label}: altered after it was written (hash mismatch)")
            prev_hash, prev_id = r["hash"], r["id"]
        return problems

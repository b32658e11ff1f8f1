"""kubexm's own memory: clusters, contexts, run history, step results and the audit log (SQLite).

The names below load on first use: ``kubexm.state.files`` (owner-only files) is imported by the connection
keeper and the parse cache, which must not pay for SQLite and the audit chain on every start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubexm.state.audit import AuditLog
    from kubexm.state.lock import cluster_lock
    from kubexm.state.store import ClusterRow, RunRow, Store

__all__ = ["AuditLog", "ClusterRow", "RunRow", "Store", "cluster_lock"]

_HOMES = {"AuditLog": "audit", "cluster_lock": "lock", "ClusterRow": "store", "RunRow": "store", "Store": "store"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"kubexm.state.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""kubexm's own memory: clusters, contexts, run history, step results and the audit log (SQLite)."""

from kubexm.state.audit import AuditLog
from kubexm.state.lock import cluster_lock
from kubexm.state.store import ClusterRow, RunRow, Store

__all__ = ["AuditLog", "ClusterRow", "RunRow", "Store", "cluster_lock"]

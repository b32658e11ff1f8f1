"""Connections to hosts (SSH and local), host facts, and the per-run connection pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubexm.hosts.base import CommandResult, Connection, ConnectOptions

__all__ = ["CommandResult", "ConnectOptions", "Connection"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: a command that reaches hosts imports kubexm.hosts.keeper first thing to start the
    # connection keeper, and should not wait for the connection classes to start it.
    if name in __all__:
        from kubexm.hosts import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

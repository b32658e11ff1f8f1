"""Connections to hosts (SSH and local), host facts, and the per-run connection pool."""

from kubexm.hosts.base import CommandResult, Connection, ConnectOptions

__all__ = ["CommandResult", "ConnectOptions", "Connection"]

"""Views of a run: the terminal (Rich) and a JSON event log; both are event listeners."""

from kubexm.render.console import ConsoleView
from kubexm.render.jsonlog import JsonLog

__all__ = ["ConsoleView", "JsonLog"]

"""The CLI's error console, apart from common.py so the entry point can report errors without loading the
engine (common.py pulls in the API, the spec models and pydantic)."""

from __future__ import annotations

from rich.console import Console

err_console = Console(stderr=True, highlight=False)

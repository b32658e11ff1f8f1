"""kubexm as a user runs it: the installed console script in a process of its own, with a private home."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

KUBEXM = str(Path(sys.executable).with_name("kubexm"))


def cli_env(home: Path) -> dict[str, str]:
    """This environment with ``home`` as KUBEXM_HOME, no connection keeper, and plain wide output."""
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KUBEXM_DEBUG", None)
    return env


def run_kubexm(*args: str, home: Path, stdin: str | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """One kubexm command line; stdin is not a terminal (like CI), and empty unless given."""
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=cli_env(home), timeout=timeout,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)

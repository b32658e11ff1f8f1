"""Where kubexm keeps its own files on the deploy machine."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """``$KUBEXM_HOME``, or ``~/.kubexm``. Created on first use with mode 0700 (it holds keys)."""
    path = Path(os.environ.get("KUBEXM_HOME") or Path.home() / ".kubexm").expanduser()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def cluster_dir(name: str) -> Path:
    path = home() / "clusters" / name
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def known_hosts_file() -> Path:
    return home() / "known_hosts"


def state_db() -> Path:
    return home() / "state.db"


def locks_dir() -> Path:
    path = home() / "locks"
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path

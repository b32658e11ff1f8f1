"""Where kubexm keeps its own files on the deploy machine.

Every directory made here is the owner's alone (0700, whatever the umask): they hold keys, kubeconfigs, the
run history and lock files naming commands.
"""

from __future__ import annotations

import os
from pathlib import Path

from kubexm.state.files import private_dir


def home() -> Path:
    """``$KUBEXM_HOME``, or ``~/.kubexm``: created if missing and kept 0700 (it holds keys)."""
    return private_dir(Path(os.environ.get("KUBEXM_HOME") or Path.home() / ".kubexm").expanduser())


def cluster_dir(name: str) -> Path:
    clusters = private_dir(home() / "clusters")
    return private_dir(clusters / name)


def known_hosts_file() -> Path:
    return home() / "known_hosts"


def state_db() -> Path:
    return home() / "state.db"


def locks_dir() -> Path:
    return private_dir(home() / "locks")

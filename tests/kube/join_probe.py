"""Answers KubeadmJoin's read-only probe the way a node would: the probe itself runs in bash and in dash,
with ``test`` and ``systemctl`` answered from a fake node's files and kubelet state instead of this machine's."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterable

from support.memory import MemoryHost

# The probe's own marker line: how a handler recognises it among a node's commands.
PROBE = r"echo kubelet-active"
_PRELUDE = ('test() { grep -qxF -- "$2" "$KX_PRESENT"; }\n'
            'systemctl() { [ "$KX_ACTIVE" = 1 ]; }\n')


def answer(command: str, present: Iterable[str], kubelet_active: bool) -> tuple[int, str, str]:
    """What ``command`` prints on a node holding exactly ``present`` (files or directories)."""
    outputs = []
    with tempfile.NamedTemporaryFile("w", suffix=".present") as listing:
        listing.write("".join(f"{p}\n" for p in present))
        listing.flush()
        env = {"PATH": os.environ["PATH"], "KX_PRESENT": listing.name, "KX_ACTIVE": "1" if kubelet_active else "0"}
        for shell in ("bash", "dash"):
            res = subprocess.run([shell, "-c", _PRELUDE + command], env=env, capture_output=True, text=True,
                                 check=False)
            outputs.append((res.returncode, res.stdout, res.stderr))
    assert outputs[0] == outputs[1], outputs
    return outputs[0]


Handler = Callable[[MemoryHost, "re.Match[str]", "bytes | None"], tuple[int, str, str]]


def node_answers(present: Callable[[MemoryHost], Iterable[str]], kubelet_active: Callable[[MemoryHost], bool]) -> Handler:
    """A MemoryHost handler for the probe (register it with ``host.on(PROBE, ...)``)."""
    def handler(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        return answer(m.string, present(host), kubelet_active(host))
    return handler

"""Parsed cluster files kept between runs, keyed by their text.

ruamel's round-trip parser is pure Python: about 70 ms for a 50-host file on our machines, growing with
the file, paid by every command. The same text always parses to the same data, so the data is kept
(as JSON) after the first parse and read back with the C json parser next time. Only the parse is
cached: validation runs on every load with the models of the running kubexm, and any problem sends
the loader back to ruamel for errors with line numbers.

The entries hold whatever the file holds (passwords included), so they live under ``$KUBEXM_HOME``
(0700, where kubexm already keeps keys and kubeconfigs) in 0700 directories, each 0600 whatever the umask.
A missing, unreadable or corrupt entry is simply a miss.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from kubexm.paths import home
from kubexm.state.files import private_dir, write_atomic

MAX_ENTRIES = 32


def _parser_stamp() -> str:
    # A ruamel upgrade may parse some text differently: its installed files are part of the key.
    spec = importlib.util.find_spec("ruamel.yaml")
    origin = spec.origin if spec and spec.origin else ""
    with contextlib.suppress(OSError):
        st = os.stat(origin)
        return f"{origin}:{st.st_mtime_ns}:{st.st_size}"
    return origin


def entry(text: str) -> Path:
    """Where the data ``text`` parses to is kept."""
    key = hashlib.sha256(f"v1\0{_parser_stamp()}\0{text}".encode()).hexdigest()
    return home() / "cache" / "spec" / f"{key[:32]}.json"


def load(path: Path) -> dict[str, Any] | None:
    """The data kept at ``path`` (from ``entry``), or None."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _plain(value: Any) -> Any:
    """ruamel's node types as JSON's; raises TypeError for what JSON cannot hold as it is."""
    if isinstance(value, dict):
        if not all(isinstance(k, str) for k in value):
            raise TypeError("non-text key")
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if value is None:
        return None
    if isinstance(value, str):
        return str(value)
    if isinstance(value, bool) or type(value).__name__ == "ScalarBoolean":  # ruamel's anchored booleans are ints
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    raise TypeError(type(value).__name__)  # timestamps, tagged values: not cached


def _holds_secret(value: Any) -> bool:
    from kubexm.state.redact import secret_field_names

    names = secret_field_names()

    def walk(v: Any) -> bool:
        if isinstance(v, dict):
            return any(str(k).lower() in names or walk(x) for k, x in v.items())
        if isinstance(v, list):
            return any(walk(x) for x in v)
        return False

    return walk(value)


def store(path: Path, data: Any) -> None:
    """Keep ``data`` (freshly parsed from the text of ``path``) for the next load; best effort."""
    try:
        plain = _plain(data)
    except TypeError:
        return
    if _holds_secret(plain):
        return  # a cluster file with passwords is parsed each time rather than kept on disk in plain text
    with contextlib.suppress(OSError):
        private_dir(path.parent.parent)  # cache/: other caches may have made it first, wider
        private_dir(path.parent)
        # A lost entry is only a miss: no fsync.
        write_atomic(path, json.dumps(plain).encode(), durable=False)
        entries = sorted(path.parent.glob("*.json"), key=lambda p: p.stat().st_mtime)
        for old in entries[:-MAX_ENTRIES]:
            old.unlink(missing_ok=True)

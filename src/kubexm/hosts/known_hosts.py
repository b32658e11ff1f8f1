"""kubexm's own known-hosts file: trust on first use, then pin.

Kept apart from ~/.ssh/known_hosts so kubexm never edits the user's file and a lab that
is rebuilt on the same addresses can be re-trusted with one flag. One line per endpoint:
``NAME [ADDRESS]:PORT KEYTYPE BASE64``.
"""

from __future__ import annotations

import fcntl
from dataclasses import dataclass
from pathlib import Path

from kubexm.state.files import open_private, write_atomic


@dataclass(frozen=True)
class KnownKey:
    name: str
    endpoint: str  # "[addr]:port"
    key: str  # "ssh-ed25519 AAAA..."


def endpoint(address: str, port: int) -> str:
    return f"[{address}]:{port}"


# Parsed files by path, with the (inode, mtime, size) they were parsed at and an index by endpoint (its first
# line, as a scan would find): a run connecting to N hosts looks N times into the same file, which should be read
# once unless it changed (another run pinned a key), and each look should not walk all N lines.
_PARSED: dict[Path, tuple[tuple[int, int, int], list[KnownKey], dict[str, KnownKey]]] = {}


class KnownHosts:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _parsed(self) -> tuple[list[KnownKey], dict[str, KnownKey]]:
        """The file's keys and their index, shared: callers copy before they change anything."""
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return [], {}
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = _PARSED.get(self.path)
        if cached is not None and cached[0] == stamp:
            return cached[1], cached[2]
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return [], {}
        out = []
        for line in lines:
            parts = line.split()
            if len(parts) >= 4 and not line.startswith("#"):
                out.append(KnownKey(parts[0], parts[1], f"{parts[2]} {parts[3]}"))
        index: dict[str, KnownKey] = {}
        for k in out:
            index.setdefault(k.endpoint, k)
        _PARSED[self.path] = (stamp, out, index)
        return out, index

    def _read(self) -> list[KnownKey]:
        return list(self._parsed()[0])

    def lookup(self, address: str, port: int) -> KnownKey | None:
        return self._parsed()[1].get(endpoint(address, port))

    def forget(self, address: str, port: int = 22) -> bool:
        """Drop the remembered key of an endpoint (a machine that was rebuilt on purpose)."""
        ep = endpoint(address, port)
        if not self.path.exists():
            return False
        with open_private(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            known = self._read()
            kept = [k for k in known if k.endpoint != ep]
            if len(kept) == len(known):
                return False
            self._write(kept)
        return True

    def _write(self, keys: list[KnownKey]) -> None:
        # Durable: a pin lost in a crash would be trusted anew on first use. Written only when a host is first met.
        write_atomic(self.path, "".join(f"{k.name} {k.endpoint} {k.key}\n" for k in keys).encode())

    def remember(self, name: str, address: str, port: int, key: str) -> None:
        """Store (or replace) the key of an endpoint; concurrent runs serialise on a lock file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        ep = endpoint(address, port)
        with open_private(self.path.with_suffix(".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = [k for k in self._read() if k.endpoint != ep]
            kept.append(KnownKey(name, ep, key.strip()))
            self._write(kept)

"""kubexm's own known-hosts file: remember, replace, forget; never the user's ~/.ssh."""

from __future__ import annotations

from pathlib import Path

from kubexm.hosts.known_hosts import KnownHosts


def test_remember_replace_forget(tmp_path: Path) -> None:
    known = KnownHosts(tmp_path / "known_hosts")
    assert known.lookup("10.0.0.1", 22) is None
    known.remember("n1", "10.0.0.1", 22, "ssh-ed25519 AAAA1")
    known.remember("n2", "10.0.0.1", 2222, "ssh-ed25519 AAAA2")
    known.remember("n1", "10.0.0.1", 22, "ssh-ed25519 AAAA3")
    entry = known.lookup("10.0.0.1", 22)
    assert entry is not None and entry.key == "ssh-ed25519 AAAA3" and entry.name == "n1"
    assert (tmp_path / "known_hosts").stat().st_mode & 0o777 == 0o600
    assert known.forget("10.0.0.1", 22) is True
    assert known.forget("10.0.0.1", 22) is False
    assert known.lookup("10.0.0.1", 22) is None
    other = known.lookup("10.0.0.1", 2222)
    assert other is not None and other.key == "ssh-ed25519 AAAA2"

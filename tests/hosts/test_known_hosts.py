"""kubexm's own known-hosts file: remember, replace, forget; never the user's ~/.ssh."""

from __future__ import annotations

import os
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


def test_a_key_pinned_or_edited_elsewhere_is_seen_at_once(tmp_path: Path) -> None:
    # The parsed file is reused between lookups of one run; a change by another run must still show.
    path = tmp_path / "known_hosts"
    ours, theirs = KnownHosts(path), KnownHosts(path)
    ours.remember("n1", "10.0.0.1", 22, "ssh-ed25519 AAAA1")
    assert ours.lookup("10.0.0.2", 22) is None
    theirs.remember("n2", "10.0.0.2", 22, "ssh-ed25519 BBBB1")
    found = ours.lookup("10.0.0.2", 22)
    assert found is not None and found.key == "ssh-ed25519 BBBB1"
    # Edited by hand in place, same length: the key must not come from the cache.
    text = path.read_text().replace("BBBB1", "BBBB2")
    before = path.stat()
    with open(path, "r+") as fh:
        fh.write(text)
    # A person edits seconds later; within one clock tick (~4 ms) the kernel can keep the mtime.
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    found = ours.lookup("10.0.0.2", 22)
    assert found is not None and found.key == "ssh-ed25519 BBBB2"


def test_a_hand_edited_file_with_two_lines_for_one_endpoint_answers_with_the_first(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    path.write_text("# kubexm known hosts\nn1 [10.0.0.1]:22 ssh-ed25519 FIRST\nn1 [10.0.0.1]:22 ssh-ed25519 SECOND\n"
                    "short line\nn2 [10.0.0.2]:22 ssh-ed25519 OTHER\n")
    known = KnownHosts(path)
    first = known.lookup("10.0.0.1", 22)
    assert first is not None and first.key == "ssh-ed25519 FIRST"
    other = known.lookup("10.0.0.2", 22)
    assert other is not None and other.name == "n2"
    assert known.lookup("10.0.0.3", 22) is None

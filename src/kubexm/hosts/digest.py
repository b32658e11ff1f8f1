"""Hashing files on a host with one command, and reading its answer.

coreutils' ``sha256sum`` (Debian 12, RHEL 9) does not use the CPU's SHA extensions: about 120 MB/s on our
machines, where OpenSSL's ``dgst`` reaches about 1 GB/s. For large files (assets, image archives, relayed
copies) ``fast=True`` uses openssl when the host has it and sha256sum otherwise. Small files keep
sha256sum: it starts in a third of openssl's time, which is what dominates for config files.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from kubexm.hosts.shell import Cmd, shell

# From this size on, hashing costs more than openssl's slower start (~6 ms): worth ``fast``.
LARGE_FILE = 4 << 20


def sha256_file(path: Path) -> str:
    """A local file's sha256 (OpenSSL-backed in hashlib), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _operand(path: str) -> str:
    # openssl 1.0 does not know "--": a path that could read as an option is made relative-explicit instead.
    return path if path.startswith("/") else f"./{path}"


def sha256_command(paths: Iterable[str], *, fast: bool = False) -> Cmd:
    """A command printing ``<sha256> <space><space or *><path>`` per readable file; missing files print nothing.
    No paths: the digest of standard input."""
    operands = [_operand(p) for p in paths]
    if not fast:
        return shell("sha256sum {paths} 2>/dev/null", paths=operands, readonly=True)
    return shell("if command -v openssl >/dev/null 2>&1; then openssl dgst -sha256 -r {paths}; "
                 "else sha256sum {paths}; fi 2>/dev/null", paths=operands, readonly=True)


def parse_sha256(stdout: str) -> dict[str, str]:
    """{path: digest} from either tool's output. Names sha256sum had to escape (a newline or backslash in
    them) are left out: such a file reads as "not as wanted" and is written again."""
    found: dict[str, str] = {}
    for line in stdout.splitlines():
        if len(line) < 67 or line[64] != " " or line[65] not in " *" or line.startswith("\\"):
            continue
        digest, path = line[:64], line[66:]
        found[path[2:] if path.startswith("./") else path] = digest
    return found

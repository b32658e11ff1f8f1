"""Hashing files on a host: the command really runs in sh, with openssl and without it."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubexm.hosts.digest import parse_sha256, sha256_command


def files(tmp_path: Path) -> dict[str, bytes]:
    data = {str(tmp_path / "big.bin"): os.urandom(3 << 20), str(tmp_path / "with space"): b"x\n",
            "rel-file": b"relative\n"}
    for path, content in data.items():
        (tmp_path / path).write_bytes(content)
    return data


def run_sh(command: str, cwd: Path, path: str | None = None) -> str:
    env = dict(os.environ, PATH=path) if path else None
    return subprocess.run(["/bin/sh", "-c", command], cwd=cwd, env=env, capture_output=True, text=True).stdout


@pytest.mark.parametrize("fast", [False, True])
def test_digests_of_present_files_and_nothing_for_missing_ones(tmp_path: Path, fast: bool) -> None:
    data = files(tmp_path)
    out = run_sh(sha256_command([*data, str(tmp_path / "missing")], fast=fast).text, tmp_path)
    assert parse_sha256(out) == {p: hashlib.sha256(c).hexdigest() for p, c in data.items()}


def test_fast_form_falls_back_to_sha256sum_where_openssl_is_missing(tmp_path: Path) -> None:
    tools = tmp_path / "bin"
    tools.mkdir()
    for tool in ("sha256sum",):  # only coreutils' tool: no openssl on this "host"
        (tools / tool).symlink_to(shutil.which(tool) or "/usr/bin/sha256sum")
    data = files(tmp_path)
    out = run_sh(sha256_command(data, fast=True).text, tmp_path, path=str(tools))
    assert "*" not in out  # sha256sum's text-mode lines, not openssl's
    assert parse_sha256(out) == {p: hashlib.sha256(c).hexdigest() for p, c in data.items()}


def test_names_sha256sum_escapes_are_left_out() -> None:
    line = "\\" + "a" * 64 + "  /srv/odd\\nname"
    assert parse_sha256(line + "\n" + "b" * 64 + " */srv/ok\n") == {"/srv/ok": "b" * 64}

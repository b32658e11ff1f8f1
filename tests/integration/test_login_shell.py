"""The command line sshd hands to the user's login shell: POSIX shells get the guard directly once known, any
other login shell (tcsh here) keeps the portable `sh -c` form, and commands behave the same either way."""

from __future__ import annotations

import contextlib
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from kubexm.hosts.base import ConnectOptions
from kubexm.hosts.ssh import SSHConnection
from kubexm.spec.models import Host

from .conftest import SSHD

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def login_shell(user: str, shell: str) -> Iterator[None]:
    before = pwd.getpwnam(user).pw_shell
    subprocess.run(["usermod", "-s", shell, user], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["usermod", "-s", before, user], check=True, capture_output=True)


def connection(sshd: SSHD) -> SSHConnection:
    host = Host.model_validate({"name": "n1", "address": "127.0.0.1", "port": sshd.port, "user": sshd.user,
                                "privateKeyPath": str(sshd.key), "sudoPassword": sshd.password})
    return SSHConnection(host, ConnectOptions())


async def commands_behave(conn: SSHConnection) -> None:
    for _ in range(3):  # the first command learns the shell; the later ones use what it learned
        res = await conn.run("printf '%s|' \"$0\" 'a b' \"it's\"; echo oops >&2; exit 3", sudo=False)
        assert (res.exit_status, res.stdout, res.stderr) == (3, "sh|a b|it's|", "oops\n")
    assert (await conn.run("id -un", sudo=True)).stdout.strip() == "root"


async def test_a_posix_login_shell_reads_the_guard_itself_after_the_first_command(sshd: SSHD) -> None:
    # A POSIX login shell that records each line sshd hands it, then runs it as /bin/sh would. It lives where the
    # test user can reach it (pytest's own temporary directories are root's alone).
    with tempfile.TemporaryDirectory(dir="/var/tmp") as where:
        await _posix_login_shell(sshd, Path(where))


async def _posix_login_shell(sshd: SSHD, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "lines.log"
    log.touch()
    log.chmod(0o666)
    wrapper = bin_dir / "sh"  # named sh: a login shell kubexm knows reads POSIX sh
    wrapper.write_text(f"#!/bin/sh\nprintf '%s\\n--\\n' \"$2\" >> {log}\nexec /bin/sh \"$@\"\n")
    wrapper.chmod(0o755)
    tmp_path.chmod(0o755)
    with login_shell(sshd.user, str(wrapper)):
        conn = connection(sshd)
        try:
            await commands_behave(conn)
        finally:
            await conn.close()
    lines = [chunk.strip() for chunk in log.read_text().split("\n--\n") if chunk.strip()]
    plain = [line for line in lines if not line.startswith("sudo ")]
    assert len(plain) == 3
    assert plain[0].startswith("sh -c ") and "$SHELL" in plain[0]
    # After the first: the guard itself, one program start fewer (no sh between the login shell and timeout).
    assert all(line.startswith("echo kubexm-pid:$$ >&2; if command -v timeout") for line in plain[1:])
    # sudo's line is unchanged: sudo starts a program, and that program is sh.
    assert all(line.startswith("sudo ") for line in lines if line not in plain)


@pytest.mark.skipif(shutil.which("tcsh") is None, reason="tcsh is installed by `make test` (scripts/setup.sh)")
async def test_a_csh_login_shell_keeps_the_portable_form(sshd: SSHD) -> None:
    with login_shell(sshd.user, str(shutil.which("tcsh"))):
        conn = connection(sshd)
        try:
            await commands_behave(conn)
            # Learned: tcsh cannot read `if ...; then ...; fi`, so every command stays under sh -c.
            line, _ = conn._line("true", 10, as_root=False, data=None)
            assert line.startswith("sh -c ")
        finally:
            await conn.close()

"""A real OpenSSH sshd on 127.0.0.1 with a non-root user who needs a password for sudo."""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD_BIN = "/usr/sbin/sshd"
# A user of this test session only (removed at the end): two test runs on one machine never share one.
USER = f"kxit{os.getpid()}"
PASSWORD = "kx-Test-pw-4711"  # a throwaway account that exists only while the tests run
PASSPHRASE = "kx-key-phrase-99"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SSHD:
    root: Path
    port: int
    user: str
    password: str
    key: Path
    encrypted_key: Path
    passphrase: str
    proc: subprocess.Popen[bytes] | None = None

    @property
    def config(self) -> Path:
        return self.root / "sshd_config"

    def start(self) -> None:
        with open(self.root / "sshd.log", "ab") as log:
            self.proc = subprocess.Popen([SSHD_BIN, "-D", "-e", "-f", str(self.config)],
                                         stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    if s.recv(8).startswith(b"SSH-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"sshd did not start: {(self.root / 'sshd.log').read_text()[-500:]}")

    def sessions(self) -> list[int]:
        """Pids of the per-connection sshd processes (privileged monitor and network child) and what
        they run: all descendants of the listener this fixture started."""
        return [] if self.proc is None else descendants_of(self.proc.pid)

    def kill_sessions(self) -> int:
        """Cut every open connection while the listener keeps accepting new ones."""
        pids = self.sessions()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        if self.proc is not None:
            sessions = self.sessions()  # they outlive the listener; end them so clients see the drop
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
            for pid in sessions:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def new_host_key(self) -> None:
        key = self.root / "ssh_host_ed25519_key"
        key.unlink()
        (self.root / "ssh_host_ed25519_key.pub").unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    def host_yaml(self, name: str, address: str = "127.0.0.1", **fields: object) -> str:
        lines = [f"    - name: {name}", f"      address: {address}", f"      port: {self.port}", f"      user: {self.user}"]
        lines += [f"      {k}: {v}" for k, v in fields.items()]
        return "\n".join(lines) + "\n"


def descendants_of(root: int) -> list[int]:
    """Every process below ``root`` (children, grandchildren...), read from /proc's parent pids."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rpartition(")")[2].split()[1])  # ppid: 4th field of stat
    found: list[int] = []
    frontier = [root]
    while frontier:
        below = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += below
        frontier = below
    return found


def _end_user_processes(user: str) -> None:
    """End what the session's own test user still runs (it exists only for this session), pid by pid."""
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                owner = os.stat(f"/proc/{entry}").st_uid
            except OSError:
                continue
            if owner == uid:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(int(entry), signal.SIGKILL)


def _ensure_user() -> None:
    if subprocess.run(["id", USER], capture_output=True).returncode != 0:
        # /bin/sh and no profile files: commands start fast and print nothing extra.
        subprocess.run(["useradd", "-m", "-s", "/bin/sh", USER], check=True)
    subprocess.run(["chpasswd"], input=f"{USER}:{PASSWORD}".encode(), check=True)


@pytest.fixture(scope="session")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SSHD]:
    if os.geteuid() != 0:
        pytest.skip("integration tests need root (they create a test user and start sshd)")
    if not Path(SSHD_BIN).exists() or not shutil.which("sudo"):
        pytest.skip("openssh-server and sudo are needed; `make test` installs them")
    root = tmp_path_factory.mktemp("sshd")
    os.chmod(root, 0o755)
    _ensure_user()
    sudoers = Path(f"/etc/sudoers.d/kubexm-{USER}")
    sudoers.write_text(f"{USER} ALL=(ALL) ALL\n")
    sudoers.chmod(0o440)
    home = Path(f"/home/{USER}")
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "id_plain")], check=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", PASSPHRASE, "-f", str(root / "id_enc")], check=True)
    (ssh_dir / "authorized_keys").write_text(
        (root / "id_plain.pub").read_text() + (root / "id_enc.pub").read_text())
    shutil.chown(ssh_dir, USER, USER)
    shutil.chown(ssh_dir / "authorized_keys", USER, USER)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / "ssh_host_ed25519_key")],
                   check=True)
    Path("/run/sshd").mkdir(exist_ok=True)
    port = _free_port()
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nListenAddress 127.0.0.2\nHostKey {root}/ssh_host_ed25519_key\n"
        f"PidFile {root}/sshd.pid\nPasswordAuthentication yes\nKbdInteractiveAuthentication no\n"
        "UsePAM yes\nPermitRootLogin prohibit-password\nSubsystem sftp internal-sftp\nMaxStartups 100\n"
        f"MaxSessions 100\nAllowUsers {USER} root\nStrictModes no\n"
        # root may log in with the session's key only, from this session's own key file (never /root/.ssh)
        f"Match User root\n  AuthorizedKeysFile {root}/root_authorized_keys\n")
    (root / "root_authorized_keys").write_text((root / "id_plain.pub").read_text())
    server = SSHD(root, port, USER, PASSWORD, root / "id_plain", root / "id_enc", PASSPHRASE)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        sudoers.unlink(missing_ok=True)
        _end_user_processes(USER)
        subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)

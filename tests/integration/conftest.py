"""A real OpenSSH sshd on 127.0.0.1 with a non-root user who needs a password for sudo."""

from __future__ import annotations

import os
import shutil
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

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(5)
            self.proc = None
        # sshd's per-connection children outlive the listener; end them so clients see the drop.
        subprocess.run(["pkill", "-f", f"sshd: {self.user}"], check=False)

    def new_host_key(self) -> None:
        key = self.root / "ssh_host_ed25519_key"
        key.unlink()
        (self.root / "ssh_host_ed25519_key.pub").unlink()
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)

    def host_yaml(self, name: str, address: str = "127.0.0.1", **fields: object) -> str:
        lines = [f"    - name: {name}", f"      address: {address}", f"      port: {self.port}", f"      user: {self.user}"]
        lines += [f"      {k}: {v}" for k, v in fields.items()]
        return "\n".join(lines) + "\n"


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
        "UsePAM yes\nPermitRootLogin no\nSubsystem sftp internal-sftp\nMaxStartups 100\nMaxSessions 100\n"
        f"AllowUsers {USER}\n")
    server = SSHD(root, port, USER, PASSWORD, root / "id_plain", root / "id_enc", PASSPHRASE)
    server.start()
    try:
        yield server
    finally:
        server.stop()
        sudoers.unlink(missing_ok=True)
        subprocess.run(["pkill", "-u", USER], check=False)
        subprocess.run(["userdel", "-r", USER], capture_output=True, check=False)

"""The contract every connection implements, and the sudo wrapping they share.

A connection runs shell command strings and moves files; it knows nothing of steps.
Checksum-skipping uploads and facts are built on top of it (``engine.context``), so a
new transport only has to implement the five methods below.
"""

from __future__ import annotations

import math
import shlex
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# The name under which the machine running kubexm appears in results and selectors.
DEPLOY = "deploy-machine"


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_status: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_status == 0


# Limits on one remote command, by kind of work, in seconds. Every command has one: a hung apt or systemctl
# must end the step, not block the run. ``--command-timeout`` (ConnectOptions.command_timeout) replaces
# all three defaults; a step that knows its own bound passes ``timeout=`` and that wins.
CHECK_TIMEOUT = 60.0  # read-only commands: checks, probes, facts
COMMAND_TIMEOUT = 600.0  # any other command
LONG_TIMEOUT = 1800.0  # package installs, image imports, kubeadm init/join: steps ask for it by kind "long"
TIMEOUT_KINDS = {"check": CHECK_TIMEOUT, "command": COMMAND_TIMEOUT, "long": LONG_TIMEOUT}
# After its limit a remote command gets SIGTERM, then SIGKILL this many seconds later.
KILL_AFTER = 5


@dataclass(frozen=True)
class ConnectOptions:
    """Settings of one run that every connection of that run shares."""

    known_hosts: Path | None = None
    accept_new_host_keys: bool = True  # trust on first use; a *changed* key is always an error
    replace_host_keys: frozenset[str] = field(default_factory=frozenset)  # hosts whose new key the user accepted
    connect_timeout: float = 15.0
    # --command-timeout: replaces the per-kind defaults above (None: the defaults apply).
    command_timeout: float | None = None
    # Seconds SSH connections outlive the run in the connection keeper (hosts/keeper.py); 0: none. The CLI
    # sets it from KUBEXM_PERSIST (default 60); library callers opt in.
    persist: float = 0.0

    def timeout_for(self, kind: str = "command") -> float:
        """The limit for a command of ``kind`` ("check", "command" or "long") in this run."""
        if self.command_timeout:
            return self.command_timeout
        return TIMEOUT_KINDS[kind]

    def limit(self, requested: float | None) -> float:
        """The limit a connection enforces: what the caller asked for, else the run's default for commands."""
        return requested if requested else self.timeout_for("command")


@dataclass(frozen=True)
class Login:
    """How to reach and log in to one SSH endpoint (a host or a bastion), with secrets as plain text.

    What ``SSHConnection`` dials with. It is built from the cluster file's Host or Bastion, and the
    connection keeper receives it as a dict: the keeper dials without loading the spec models (pydantic
    costs it ~20 MB and a quarter of a second of start-up). Secrets stay out of repr.
    """

    name: str
    address: str
    port: int = 22
    user: str = "root"
    password: str | None = field(default=None, repr=False)
    private_key_path: str | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)
    sudo_password: str | None = field(default=None, repr=False)

    @classmethod
    def of(cls, spec: Any) -> Login:
        """From a spec Host or Bastion (fields a Bastion lacks stay None); a Login is returned as it is."""
        if isinstance(spec, Login):
            return spec

        def secret(name: str) -> str | None:
            value = getattr(spec, name, None)
            return None if value is None else str(value.get_secret_value())

        return cls(spec.name, spec.address, spec.port, spec.user, secret("password"), spec.private_key_path,
                   secret("private_key_passphrase"), secret("sudo_password"))


def sudo_wrap(command: str, *, password_needed: bool) -> tuple[str, bool]:
    """Return the command line that runs ``command`` as root through sudo.

    When a password is needed it is fed on stdin (``-S``) as the first line, never in
    argv; ``-k`` forces sudo to always read it so a cached credential cannot make the
    password line leak into the command's own stdin. ``-p ''`` silences the prompt.
    Returns (line, whether the caller must prepend the password line to stdin).
    """
    inner = f"sh -c {shlex.quote(command)}"
    if password_needed:
        return f"sudo -S -k -p '' -- {inner}", True
    return f"sudo -n -- {inner}", False


PID_MARK = b"kubexm-pid:"


# Login shells that read the POSIX guard below as it is: an SSH command line is read by the user's login shell,
# and only for these can it skip the `sh -c` layer that makes the guard's syntax work in csh or fish too.
POSIX_SHELLS = frozenset({"sh", "dash", "bash", "ash", "ksh", "ksh93", "mksh", "zsh", "yash", "posh"})


def guarded(command: str, limit: float, *, report_pid: bool, report_shell: bool = False) -> str:
    """``command`` run under the host's ``timeout`` (TERM at ``limit`` seconds, KILL ``KILL_AFTER`` later), so
    it ends on the host even when kubexm is gone. ``timeout`` leads its own process group, which holds every
    process the command starts: killing that group (``kill_group``) stops all of it. ``report_pid``: first
    print ``kubexm-pid:<pid>`` on stderr (the pid of ``timeout``, hence the group id) so a cancelled run can
    kill the group. A host without ``timeout`` runs the command without the limit on the host side.
    ``report_shell``: the pid line also carries the login shell sshd started (``$SHELL``), after a space.
    """
    seconds = max(1, math.ceil(limit))
    inner = f"sh -c {shlex.quote(command)}"
    guard = (f"if command -v timeout >/dev/null 2>&1; then exec timeout -k {KILL_AFTER} {seconds} {inner}; "
             f"else exec {inner}; fi")
    if report_pid:
        # printf, not echo: some shells' echo reads backslashes in $SHELL as escapes.
        return ("printf 'kubexm-pid:%s %s\\n' \"$$\" \"$SHELL\" >&2; " if report_shell else "echo kubexm-pid:$$ >&2; ") + guard
    return guard


def kill_group(pid: int) -> str:
    """Shell text that stops the process group ``pid`` leads: TERM, up to ~3 s of grace, then KILL."""
    return (f"kill -s TERM -- -{pid} {pid} 2>/dev/null; i=0; "
            f"while [ $i -lt 15 ] && kill -s 0 -- -{pid} 2>/dev/null; do sleep 0.2; i=$((i+1)); done; "
            f"kill -s KILL -- -{pid} 2>/dev/null; exit 0")


class Connection(ABC):
    """One open channel to one host, reused for every command of a run."""

    name: str
    user: str = "root"

    @property
    def is_root(self) -> bool:
        return self.user == "root"

    @abstractmethod
    async def open(self) -> None:
        """Connect (idempotent). Raises ConnectionFault, AuthenticationError or HostKeyError."""

    @abstractmethod
    async def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        """Run a shell command; as root when ``sudo`` (a no-op for root). Never raises on a non-zero
        exit; raises ConnectionFault when the transport fails."""

    @abstractmethod
    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        """Write ``source`` (a local file or bytes) to ``remote`` atomically, as root, with ``mode``.
        Parent directories are created."""

    @abstractmethod
    async def get(self, remote: str, local: Path) -> None:
        """Copy a remote file (read as root) to a local path."""

    async def run_streaming(self, command: str, source: Path, *, timeout: float | None = None) -> CommandResult:
        """Run ``command`` (as the login user, no sudo) with the file streamed to its stdin. Connections that
        can stream override this; the fallback reads the file whole."""
        return await self.run(command, sudo=False, stdin=source.read_bytes(), timeout=timeout)

    @abstractmethod
    async def close(self) -> None:
        """Close the connection (idempotent)."""

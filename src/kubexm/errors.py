"""Errors a user sees: one line naming the cause and the fix, and the exit code to use.

Every error kubexm raises on purpose derives from KubexmError; the CLI prints
``error: <message>`` (plus ``hint: <fix>`` when given) and exits with ``exit_code``
instead of a traceback.
"""

from __future__ import annotations


class KubexmError(Exception):
    """An expected failure with a message meant for the user."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} ({self.hint})"


class SpecError(KubexmError):
    """The cluster file (or an override) is invalid. Exit code 2 like a usage error."""

    exit_code = 2

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        super().__init__("; ".join(problems), hint)
        self.problems = problems


class UsageError(KubexmError):
    exit_code = 2


class ConnectionFault(KubexmError):
    """The transport to a host failed (refused, reset, timed out). Transient: the engine retries."""

    exit_code = 3


class HostUnreachable(ConnectionFault):
    """A host could not be dialled within its connect budget (refused, silent, or still unreachable after the
    transient errors were retried). The engine does not dial it again in the same run."""


class AuthenticationError(KubexmError):
    """Credentials were rejected. Not transient: retrying cannot help."""

    exit_code = 3


class HostKeyError(KubexmError):
    """A host presented a key different from the one remembered for it."""

    exit_code = 3


class CommandFailed(KubexmError):
    """A command on a host exited non-zero. Not retried: the command itself failed."""

    def __init__(self, host: str, command: str, exit_status: int, stderr: str, stdout: str = "") -> None:
        tail = stderr_tail(stderr or stdout)
        super().__init__(f"{host}: `{command}` exited {exit_status}" + (f": {tail}" if tail else ""))
        self.host = host
        self.command = command
        self.exit_status = exit_status
        self.stderr = stderr
        self.stdout = stdout


class StepFailed(KubexmError):
    """A step decided by itself that the host cannot be brought to the wanted state."""


class NotApplicable(Exception):
    """Raised by a step that cannot act on this host (e.g. a container cannot load kernel modules)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PlanViolation(Exception):
    """A command that could change a host was sent while planning (a check or a dry run): a defect in the
    step that sent it, reported as an internal error and never sent."""

    def __init__(self, host: str, command: str) -> None:
        super().__init__(f"{host}: refused to run a command not declared read-only while planning: {command}")


class LockedError(KubexmError):
    exit_code = 4


class StateError(KubexmError):
    pass


def stderr_tail(text: str, lines: int = 5, width: int = 400) -> str:
    """The last few non-empty lines of a command's output, joined on one line."""
    kept = [line.strip() for line in text.strip().splitlines() if line.strip()][-lines:]
    tail = " | ".join(kept)
    return tail if len(tail) <= width else "…" + tail[-width:]

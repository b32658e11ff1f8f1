"""The smallest unit of work: one idempotent action on one host."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from kubexm.engine.context import FileWant, HostContext
    from kubexm.hosts.shell import Cmd


class Step(ABC):
    """``check()`` reads the host and says whether it is already as wanted; ``run()`` makes it so.

    Subclasses are usually frozen dataclasses. ``mutates = False`` marks a step that only
    reads (a preflight probe, a health wait): it runs during ``--dry-run`` too, because
    its answer is part of the plan. A step that cannot act on a host raises
    ``NotApplicable(reason)`` from ``check`` or ``run``.
    """

    mutates: ClassVar[bool] = True
    # True when the batched check (check_files, check_digests or check_script) answering "done" as the login
    # user, without sudo, is proof on its own: it only reads, and missing permissions can only make it answer
    # "not done" (a content checksum that matches; mode and owner read the same to any user).
    # Non-root logins then skip sudo for the batched checks of a re-run; "not done" is asked again as root.
    check_unprivileged: ClassVar[bool] = False
    # False for actions that must not be repeated blindly (kubeadm init/join): after a transport fault the
    # first attempt may still be running on the host, so the run stops and says what to check instead.
    retryable: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return type(self).__name__

    def describe(self) -> str:
        return self.name

    async def check(self, host: HostContext) -> bool:
        """True when nothing needs doing. Must not change the host. The default: every file ``check_files``
        names is in place (content, mode and owner); a step without files always runs."""
        wants = self.check_files(host)
        return wants is not None and await host.files_in_place(wants)

    def check_files(self, host: HostContext) -> dict[str, FileWant] | None:
        """Optional, for steps that place files: {remote path: FileWant}, meaning "done" exactly when every
        file has that content, mode and owner. The inherited ``check()`` answers from it, and the executor
        reads all of a host's files with one command: both paths compare the same three things, so a right
        file with the wrong permissions is never "done". None: cannot say in advance (not done)."""
        return None

    def check_script(self, host: HostContext) -> Cmd | None:
        """Optional: a read-only command whose exit status 0 means the same as ``check()`` returning True.

        The executor runs the snippets of a host's steps together in one remote command (one round trip
        instead of one per step); the answers stand until a step on that host changes something.
        """
        return None

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        """Content only, kept for steps not yet on ``check_files`` (which compares mode and owner too, and is
        what a step placing files should declare): {remote path: wanted sha256}, meaning ``check()`` is True
        exactly when every file has that checksum. Batched like ``check_files``."""
        return None

    @abstractmethod
    async def run(self, host: HostContext) -> None:
        """Bring the host to the wanted state; raise CommandFailed/StepFailed when impossible."""

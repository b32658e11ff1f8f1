"""The smallest unit of work: one idempotent action on one host."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from kubexm.engine.context import HostContext
    from kubexm.hosts.shell import Cmd


class Step(ABC):
    """``check()`` reads the host and says whether it is already as wanted; ``run()`` makes it so.

    Subclasses are usually frozen dataclasses. ``mutates = False`` marks a step that only
    reads (a preflight probe, a health wait): it runs during ``--dry-run`` too, because
    its answer is part of the plan. A step that cannot act on a host raises
    ``NotApplicable(reason)`` from ``check`` or ``run``.
    """

    mutates: ClassVar[bool] = True
    # True when the batched check (check_digests or check_script) answering "done" as the login user, without
    # sudo, is proof on its own: it only reads, and missing permissions can only make it answer "not done"
    # (a content checksum that matches).
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
        """True when nothing needs doing. Must not change the host. The default always runs."""
        return False

    def check_script(self, host: HostContext) -> Cmd | None:
        """Optional: a read-only command whose exit status 0 means the same as ``check()`` returning True.

        The executor runs the snippets of a host's steps together in one remote command (one round trip
        instead of one per step); the answers stand until a step on that host changes something.
        """
        return None

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        """Optional, preferred over ``check_script`` by the batching: {remote path: wanted sha256}, meaning
        ``check()`` is True exactly when every file has that checksum. The executor reads all of a host's
        paths with one ``sha256sum`` and compares here, instead of a process per file on the host."""
        return None

    @abstractmethod
    async def run(self, host: HostContext) -> None:
        """Bring the host to the wanted state; raise CommandFailed/StepFailed when impossible."""

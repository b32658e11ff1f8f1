"""Generic steps every domain reuses: run a command, put a file, render a template, a systemd unit."""

from __future__ import annotations

import hashlib
import posixpath
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kubexm.engine.context import FileWant, HostContext
from kubexm.engine.step import Step
from kubexm.errors import CommandFailed, StepFailed
from kubexm.hosts.digest import LARGE_FILE, sha256_file
from kubexm.hosts.shell import Cmd, sh, shell, user_shell
from kubexm.templates import render


@dataclass(frozen=True)
class Command(Step):
    """Run an ad-hoc shell command and report its output (``kubexm run command``)."""

    command: str
    sudo: bool = True
    timeout: float | None = None

    def describe(self) -> str:
        return f"run `{self.command}`"

    async def run(self, host: HostContext) -> None:
        # The user's own command line: shell by intent (ssh joins its arguments the same way).
        res = await host.run(user_shell(self.command), sudo=self.sudo, check=False, timeout=self.timeout)
        host.emit("message", step=self.name, status="ok" if res.ok else "failed",
                  message=res.stdout, data={"stdout": res.stdout, "stderr": res.stderr,
                                            "exit_status": res.exit_status, "command": self.command})
        if not res.ok:
            raise CommandFailed(host.name, self.command, res.exit_status, res.stderr, res.stdout)


def kubexm_command(host: HostContext, *words: str) -> str:
    """A kubexm command line for a hint, ready to paste: ``kubexm WORDS...`` naming the cluster the way this run
    was given it (``-f FILE`` when it read a cluster file, else ``-c NAME``), each word quoted for the shell."""
    given = shlex.split(host.run_ctx.command) if host.run_ctx.command else []
    selector = ["-c", host.cluster.name]
    for i, word in enumerate(given):
        if word == "--":  # the user's own command (kubexm run command) follows
            break
        if word in ("-f", "--file") and i + 1 < len(given):
            selector = ["-f", given[i + 1]]
        elif word.startswith("--file="):
            selector = ["-f", word.removeprefix("--file=")]
        elif word.startswith("-f") and len(word) > 2:  # -fcluster.yaml
            selector = ["-f", word[2:]]
    verb, rest = list(words[:2]), list(words[2:])
    return shlex.join(["kubexm", *verb, *selector, *rest])


@dataclass(frozen=True)
class PutFile(Step):
    """Place a local file (or bytes) on the host; done when content, mode and owner already match."""

    source: Path | bytes
    dest: str
    mode: int = 0o644
    owner: str = "root:root"
    check_unprivileged: ClassVar[bool] = True  # a match cannot come from missing permissions

    def describe(self) -> str:
        what = "content" if isinstance(self.source, bytes) else Path(self.source).name
        return f"put {what} at {self.dest} (mode {self.mode:o})"

    def check_files(self, host: HostContext) -> dict[str, FileWant] | None:
        # check() is the inherited one: content, mode and owner, alone or batched.
        if isinstance(self.source, bytes):
            return {self.dest: FileWant(hashlib.sha256(self.source).hexdigest(), self.mode, self.owner)}
        source = Path(self.source)
        return {self.dest: FileWant(sha256_file(source), self.mode, self.owner,
                                    large=source.stat().st_size >= LARGE_FILE)}

    async def run(self, host: HostContext) -> None:
        if await host.upload(self.source, self.dest, mode=self.mode, owner=self.owner):
            host.vars.setdefault("changed_files", set()).add(self.dest)  # a unit restarting on it (Systemd)


@dataclass(frozen=True)
class Template(Step):
    """Render a Jinja2 template from ``kubexm/templates`` with the host's context and place it."""

    template: str
    dest: str
    mode: int = 0o644
    values: tuple[tuple[str, Any], ...] = field(default=())
    owner: str = "root:root"
    check_unprivileged: ClassVar[bool] = True  # a match cannot come from missing permissions

    def describe(self) -> str:
        return f"render {self.template} to {self.dest}"

    def content(self, host: HostContext) -> bytes:
        return render(self.template, host=host, cluster=host.cluster, spec=host.cluster.spec,
                      **dict(self.values)).encode()

    def check_files(self, host: HostContext) -> dict[str, FileWant] | None:
        return {self.dest: FileWant(hashlib.sha256(self.content(host)).hexdigest(), self.mode, self.owner)}

    async def run(self, host: HostContext) -> None:
        data = self.content(host)
        if await host.upload(data, self.dest, mode=self.mode, owner=self.owner):
            host.vars.setdefault("changed_files", set()).add(self.dest)


# A unit whose restart is owed: written before kubexm restarts it for a changed file, removed only once the
# restart succeeded and the unit is active. A run that fails in between leaves it, and the next run restarts
# again instead of finding the new config in place and the old one still running.
RESTART_PENDING_DIR = "/var/lib/kubexm/restart-pending"
# systemd's unit name grammar (unit_name_is_valid): letters, digits and ":-_.\@"; at most 255 characters.
# A name may not start with "." (nor be "." or ".."), so it is always one plain file name under the directory.
_UNIT_NAME = re.compile(r"[A-Za-z0-9:_@\\-][A-Za-z0-9:_.@\\-]{0,254}")
# How long a restarted unit may take to report active.
ACTIVE_WAIT = 20


def restart_marker(unit: str) -> str:
    """The pending-restart marker of ``unit`` on a node; refuses a name systemd would not accept."""
    if not _UNIT_NAME.fullmatch(unit):
        raise StepFailed(f"{unit!r} is not a systemd unit name",
                         hint="unit names use letters, digits and ':-_.\\@', and do not start with '.'")
    return posixpath.join(RESTART_PENDING_DIR, unit)


@dataclass(frozen=True)
class Systemd(Step):
    """Enable and start a unit; restart it when a file it depends on changed, in this run or in an earlier one
    whose restart did not succeed (the pending-restart marker)."""

    unit: str
    restart_on: tuple[str, ...] = ()
    on_change: str = "restart"  # or "reload-or-restart" for daemons that reload without dropping clients
    # systemctl --no-block: queue the start/restart instead of waiting for the unit to be ready. For units that
    # are ready only once their peers run too (etcd members of a new cluster wait for a quorum): waiting here, one
    # node at a time, could never end. The step then neither waits nor clears the pending-restart marker: a
    # later step that sees the unit healthy must (WaitEtcdHealthy does for etcd).
    no_block: bool = False

    def describe(self) -> str:
        return f"enable and start {self.unit}"

    def _changed(self, host: HostContext) -> bool:
        changed: set[str] = host.vars.get("changed_files", set())
        return any(path in changed for path in self.restart_on)

    def _is_running(self) -> Cmd:
        return (sh("test", "!", "-e", restart_marker(self.unit), readonly=True)
                & sh("systemctl", "is-enabled", "-q", "--", self.unit, readonly=True)
                & sh("systemctl", "is-active", "-q", "--", self.unit, readonly=True))

    async def check(self, host: HostContext) -> bool:
        if self._changed(host):
            return False
        return (await host.run(self._is_running(), check=False)).ok

    def check_script(self, host: HostContext) -> Cmd | None:
        return None if self._changed(host) else self._is_running()

    async def run(self, host: HostContext) -> None:
        marker = restart_marker(self.unit)
        pending = self._changed(host) or await host.exists(marker)
        if pending:
            await host.run(sh("mkdir", "-p", "--", RESTART_PENDING_DIR) & sh("touch", "--", marker))
        verb = self.on_change if pending else "start"
        await host.run(sh("systemctl", "daemon-reload") & sh("systemctl", "enable", "--", self.unit)
                       & sh("systemctl", verb, *(["--no-block"] if self.no_block else []), "--", self.unit))
        if not pending or self.no_block:
            return
        active = await host.run(shell("for i in $(seq {wait}); do systemctl is-active -q -- {unit} && exit 0; "
                                      "sleep 1; done; exit 1",
                                      unit=self.unit, wait=ACTIVE_WAIT, readonly=True), check=False)
        if not active.ok:
            raise StepFailed(f"{self.unit} is not active after its {verb} on {host.name}; the restart stays "
                             "pending and the next run tries it again",
                             hint=f"see `journalctl -u {self.unit}` on {host.name}")
        await host.run(sh("rm", "-f", "--", marker))

"""Generic steps every domain reuses: run a command, put a file, render a template, a systemd unit."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import CommandFailed
from kubexm.hosts.shell import Cmd, sh, user_shell
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


@dataclass(frozen=True)
class PutFile(Step):
    """Place a local file (or bytes) on the host; skipped when the sha256 already matches."""

    source: Path | bytes
    dest: str
    mode: int = 0o644
    check_unprivileged: ClassVar[bool] = True  # a matching checksum cannot come from missing permissions

    def describe(self) -> str:
        what = "content" if isinstance(self.source, bytes) else Path(self.source).name
        return f"put {what} at {self.dest} (mode {self.mode:o})"

    def _want(self) -> str:
        if isinstance(self.source, bytes):
            return hashlib.sha256(self.source).hexdigest()
        from kubexm.hosts.digest import sha256_file

        return sha256_file(Path(self.source))

    async def check(self, host: HostContext) -> bool:
        return await host.sha256(self.dest) == self._want()

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        return {self.dest: self._want()}

    async def run(self, host: HostContext) -> None:
        await host.upload(self.source, self.dest, mode=self.mode)


@dataclass(frozen=True)
class Template(Step):
    """Render a Jinja2 template from ``kubexm/templates`` with the host's context and place it."""

    template: str
    dest: str
    mode: int = 0o644
    values: tuple[tuple[str, Any], ...] = field(default=())
    check_unprivileged: ClassVar[bool] = True  # a matching checksum cannot come from missing permissions

    def describe(self) -> str:
        return f"render {self.template} to {self.dest}"

    def content(self, host: HostContext) -> bytes:
        return render(self.template, host=host, cluster=host.cluster, spec=host.cluster.spec,
                      **dict(self.values)).encode()

    async def check(self, host: HostContext) -> bool:
        return await host.sha256(self.dest) == hashlib.sha256(self.content(host)).hexdigest()

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        return {self.dest: hashlib.sha256(self.content(host)).hexdigest()}

    async def run(self, host: HostContext) -> None:
        data = self.content(host)
        await host.upload(data, self.dest, mode=self.mode)
        host.vars.setdefault("changed_files", set()).add(self.dest)


@dataclass(frozen=True)
class Systemd(Step):
    """Enable and start a unit; restart it when a file it depends on changed in this run."""

    unit: str
    restart_on: tuple[str, ...] = ()
    on_change: str = "restart"  # or "reload-or-restart" for daemons that reload without dropping clients

    def describe(self) -> str:
        return f"enable and start {self.unit}"

    def _changed(self, host: HostContext) -> bool:
        changed: set[str] = host.vars.get("changed_files", set())
        return any(path in changed for path in self.restart_on)

    def _is_running(self) -> Cmd:
        return (sh("systemctl", "is-enabled", "-q", "--", self.unit, readonly=True)
                & sh("systemctl", "is-active", "-q", "--", self.unit, readonly=True))

    async def check(self, host: HostContext) -> bool:
        res = await host.run(self._is_running(), check=False)
        return res.ok and not self._changed(host)

    def check_script(self, host: HostContext) -> Cmd | None:
        return None if self._changed(host) else self._is_running()

    async def run(self, host: HostContext) -> None:
        verb = self.on_change if self._changed(host) else "start"
        await host.run(sh("systemctl", "daemon-reload") & sh("systemctl", "enable", "--", self.unit)
                       & sh("systemctl", verb, "--", self.unit))

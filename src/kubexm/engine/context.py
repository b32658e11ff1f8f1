"""What a step sees: its host (commands, files, facts) and the run around it."""

from __future__ import annotations

import contextvars
import hashlib
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubexm.engine.events import Event, EventBus
from kubexm.engine.selectors import DEPLOY
from kubexm.errors import CommandFailed, PlanViolation
from kubexm.hosts.base import CommandResult, ConnectOptions
from kubexm.hosts.digest import LARGE_FILE, parse_sha256, sha256_command, sha256_file
from kubexm.hosts.facts import FACTS_SCRIPT, Facts, parse_facts
from kubexm.hosts.pool import ConnectionPool
from kubexm.hosts.shell import Cmd, UnsafeCommand, sh, shell
from kubexm.spec.models import Cluster, Host

if TYPE_CHECKING:
    from kubexm.engine.step import Step
    from kubexm.engine.task import Task


@dataclass
class RunOptions:
    dry_run: bool = False
    offline: bool = False  # with dry_run: plan without connecting to any host
    tags: set[str] = field(default_factory=set)
    skip_tags: set[str] = field(default_factory=set)
    nodes: list[str] | None = None  # patterns from --nodes; None: every host
    parallel: int = 50  # hosts worked on at once when a task sets no limit
    retries: int = 3  # reconnect attempts after a transport fault
    retry_backoff: float = 0.5  # seconds, doubled each attempt
    skip_preflight: bool = False
    force: bool = False
    connect: ConnectOptions = field(default_factory=ConnectOptions)
    extra: dict[str, Any] = field(default_factory=dict)  # command-specific inputs (e.g. the command of `run command`)


# Set by the executor while it plans (every check, and the whole of a dry run): commands not declared
# read-only are refused, so a plan cannot change a host whatever a step's code tries.
PLANNING: contextvars.ContextVar[bool] = contextvars.ContextVar("kubexm_planning", default=False)

# Set by a plan that shows what steps would write (kubexm.governance.plan): upload() hands each file to it instead
# of sending it, and the step goes on as if the file had been sent (True) or had already matched (False).
UploadCapture = Callable[["HostContext", "Path | bytes", str, int, str], Awaitable[bool]]
UPLOAD_CAPTURE: contextvars.ContextVar[UploadCapture | None] = contextvars.ContextVar("kubexm_upload_capture",
                                                                                      default=None)
# Called by the executor, in a connected dry run, for each step that would change its host (kubexm.governance.plan
# follows what it would write, restart, drain): (task, step, host). It runs while planning, so it can only read.
PlanObserver = Callable[["Task", "Step", "HostContext"], Awaitable[None]]


class HostContext:
    """One host within one run. Facts and the connection are shared by every step on it."""

    def __init__(self, run: RunContext, name: str) -> None:
        self.run_ctx = run
        self.name = name
        self.spec: Host | None = None if name == DEPLOY else run.cluster.host(name)
        self.vars: dict[str, Any] = {}  # scratch space steps of one run share on this host

    @property
    def cluster(self) -> Cluster:
        return self.run_ctx.cluster

    @property
    def roles(self) -> list[str]:
        return [] if self.spec is None else self.cluster.roles_of(self.name)

    @property
    def address(self) -> str:
        return "127.0.0.1" if self.spec is None else self.spec.internal_ip

    async def run(
        self,
        command: Cmd,
        *,
        sudo: bool = True,
        check: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
        display: str | None = None,
    ) -> CommandResult:
        """Run a command; raise CommandFailed on a non-zero exit when ``check``.

        ``display`` replaces the command in errors and events when the command line
        itself holds something that must not be shown. ``command`` comes from ``kubexm.hosts.shell``:
        a string is refused, so no value can reach a host without being quoted. Without ``timeout`` the
        command is limited by ``timeout_for``: "check" when it is read-only, "command" otherwise; work that
        takes longer (installs, imports, kubeadm) passes ``timeout=host.timeout_for("long")`` or its own bound.
        """
        if not isinstance(command, Cmd):
            raise UnsafeCommand(f"{type(command).__name__} passed as a host command; build it with sh()/shell()")
        if PLANNING.get() and not command.readonly:
            raise PlanViolation(self.name, display or command.text)
        conn = await self.run_ctx.pool.get(self.name)
        # Every command gets a limit: what the step asked for, else the run's default for its kind of work.
        limit = timeout or self.timeout_for("check" if command.readonly else "command")
        result = await conn.run(command.text, sudo=sudo, stdin=stdin, timeout=limit)
        if check and not result.ok:
            raise CommandFailed(self.name, display or command.text, result.exit_status, result.stderr, result.stdout)
        return result

    async def facts(self) -> Facts:
        cached = self.run_ctx.facts.get(self.name)
        if cached is None:
            result = await self.run(FACTS_SCRIPT, sudo=False, display="gather facts")
            cached = parse_facts(result.stdout)
            self.run_ctx.facts[self.name] = cached
        return cached

    async def sha256(self, path: str, *, large: bool = False) -> str | None:
        """The file's sha256 on the host (None: missing or unreadable); ``large`` hashes with openssl where
        the host has it, several times faster than sha256sum on big files."""
        res = await self.run(sha256_command([path], fast=large), check=False)
        return parse_sha256(res.stdout).get(path) if res.ok else None

    async def exists(self, path: str) -> bool:
        return (await self.run(sh("test", "-e", path, readonly=True), check=False)).ok

    async def read_text(self, path: str) -> str | None:
        res = await self.run(sh("cat", "--", path, readonly=True), check=False)
        return res.stdout if res.ok else None

    async def file_state(self, path: str, *, large: bool = False) -> tuple[str | None, str | None]:
        """(sha256, "<mode> <owner>:<group>") of a file on the host in one read-only command; None for what
        could not be read (a missing file: both None)."""
        res = await self.run(file_state_command([path], fast=large), check=False)
        digests, attrs = parse_file_states(res.stdout)
        return digests.get(path), attrs.get(path)

    async def files_in_place(self, wants: Mapping[str, FileWant]) -> bool:
        """Every file has its wanted content, mode and owner; one read-only command for all of them."""
        if not wants:
            return True
        res = await self.run(file_state_command(list(wants), fast=any(w.large for w in wants.values())), check=False)
        return files_match(wants, *parse_file_states(res.stdout))

    def timeout_for(self, kind: str) -> float:
        """This run's limit for one command of ``kind``: "check" (read-only commands: checks, probes), "command"
        (the default) or "long" (package installs, image imports, kubeadm init/join). ``--command-timeout``
        replaces them all. Pass it as ``run(..., timeout=host.timeout_for("long"))``."""
        return self.run_ctx.options.connect.timeout_for(kind)

    async def upload(self, source: Path | bytes, remote: str, *, mode: int = 0o644, owner: str = "root:root") -> bool:
        """Copy a file to the host unless the host already has identical content.

        Returns True when it sent the file. Mode and owner (``user:group``) are enforced even when the content
        matched: a right file with the wrong permissions is fixed, not skipped.
        """
        capture = UPLOAD_CAPTURE.get()
        if capture is not None:
            return await capture(self, source, remote, mode, owner)
        want = hashlib.sha256(source).hexdigest() if isinstance(source, bytes) else sha256_file(source)
        large = (len(source) if isinstance(source, bytes) else source.stat().st_size) >= LARGE_FILE
        attrs = file_attrs(mode, owner)
        got, got_attrs = await self.file_state(remote, large=large)
        if got == want:
            if got_attrs != attrs:
                await self._fix_attrs(remote, mode, owner)
            return False
        if PLANNING.get():
            raise PlanViolation(self.name, f"upload {remote}")
        conn = await self.run_ctx.pool.get(self.name)
        await conn.put(source, remote, mode=mode)
        got, got_attrs = await self.file_state(remote, large=large)
        if got != want:
            raise CommandFailed(self.name, f"upload {remote}", 1,
                                f"checksum mismatch after upload: expected {want}, found {got}")
        if got_attrs != attrs:
            await self._fix_attrs(remote, mode, owner)
        return True

    async def _fix_attrs(self, remote: str, mode: int, owner: str) -> None:
        if PLANNING.get():
            raise PlanViolation(self.name, f"chown/chmod {remote}")
        # chown first: it clears set-id bits that the chmod then sets again.
        await self.run(sh("chown", "--", owner, remote) & sh("chmod", "--", f"{mode:o}", remote))

    async def download(self, remote: str, local: Path) -> None:
        conn = await self.run_ctx.pool.get(self.name)
        await conn.get(remote, local)

    def emit(self, kind: Any, **fields: Any) -> None:
        self.run_ctx.emit(Event(kind=kind, host=self.name, **fields))


@dataclass(frozen=True)
class FileWant:
    """A file as a step wants it on a host: content (sha256), mode and owner (``user:group``)."""

    sha256: str
    mode: int
    owner: str = "root:root"
    large: bool = False  # hash it with openssl where the host has it (see hosts.digest.LARGE_FILE)

    @property
    def attrs(self) -> str:
        return file_attrs(self.mode, self.owner)


def files_match(wants: Mapping[str, FileWant], digests: Mapping[str, str], attrs: Mapping[str, str]) -> bool:
    """The one rule both the single and the batched check apply: content, mode and owner of every file."""
    return all(digests.get(path) == want.sha256 and attrs.get(path) == want.attrs for path, want in wants.items())


def file_attrs(mode: int, owner: str = "root:root") -> str:
    """How ``file_state_command`` reports a file with this mode and owner: ``stat -c '%a %U:%G'``."""
    return f"{mode:o} {owner}"


def file_state_command(paths: list[str], *, fast: bool = False) -> Cmd:
    """One read-only command printing the sha256 of each readable file (``sha256_command``'s lines) and then
    ``#stat <mode> <user>:<group> <path>`` for each existing file; missing files print nothing."""
    return shell("{digests}; stat -c '#stat %a %U:%G %n' -- {paths} 2>/dev/null",
                 digests=sha256_command(paths, fast=fast), paths=paths, readonly=True)


def parse_file_states(stdout: str) -> tuple[dict[str, str], dict[str, str]]:
    """({path: sha256}, {path: "<mode> <user>:<group>"}) from ``file_state_command``'s output."""
    digests, attrs = [], {}
    for line in stdout.splitlines():
        if line.startswith("#stat "):
            parts = line.split(" ", 3)
            if len(parts) == 4:
                attrs[parts[3]] = f"{parts[1]} {parts[2]}"
        else:
            digests.append(line)
    return parse_sha256("\n".join(digests)), attrs


class RunContext:
    """Everything one invocation shares: the cluster, options, connections, facts, events."""

    def __init__(self, cluster: Cluster, options: RunOptions | None = None, *,
                 bus: EventBus | None = None, pool: ConnectionPool | None = None,
                 command: str = "") -> None:
        self.cluster = cluster
        self.options = options or RunOptions()
        self.bus = bus or EventBus()
        self.pool = pool or ConnectionPool(cluster, self.options.connect)
        self.run_id = uuid.uuid4().hex[:12]
        self.command = command
        self.facts: dict[str, Facts] = {}
        self.shared: dict[str, Any] = {}  # results tasks pass on (e.g. preflight findings)
        # The tasks this run works through, in order (set by the executor): a step that prepares for later
        # ones (e.g. relaying the release files their install steps will need) reads what was selected here.
        self.plan: list[Task] = []
        self.observer: PlanObserver | None = None  # see PlanObserver; None outside `kubexm plan`
        self._hosts: dict[str, HostContext] = {}

    def host(self, name: str) -> HostContext:
        ctx = self._hosts.get(name)
        if ctx is None:
            ctx = self._hosts[name] = HostContext(self, name)
        return ctx

    def emit(self, event: Event) -> None:
        event.run_id = self.run_id
        self.bus.emit(event)

    def emit_report(self, title: str, columns: list[str], rows: list[list[str]]) -> None:
        """A table for the user (preflight results, a plan); listeners decide how to render it."""
        self.emit(Event("report", message=title, data={"title": title, "columns": columns, "rows": rows}))

    async def close(self) -> None:
        await self.pool.close_all()

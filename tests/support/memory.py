"""An in-memory host for engine unit tests: a dict filesystem and scripted command handlers.

Commands are matched by the first handler whose regex matches; unmatched commands
succeed with empty output. Every command is recorded per host so tests can assert the
exact command lines a step issues.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from kubexm.errors import ConnectionFault
from kubexm.hosts.base import CommandResult, Connection

Handler = Callable[["MemoryHost", re.Match[str], bytes | None], tuple[int, str, str]]


class MemoryHost:
    """The state of one fake machine, kept across reconnects."""

    def __init__(self, name: str, facts: str = "") -> None:
        self.name = name
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, int] = {}
        self.commands: list[str] = []
        self.sudo: list[bool] = []  # per command: whether it was asked to run as root
        self.handlers: list[tuple[re.Pattern[str], Handler]] = []
        self.facts_text = facts or default_facts(name)
        self.down = False  # True: every connect/command raises ConnectionFault
        self.fail_next_commands = 0  # the next N commands raise ConnectionFault (a dropped link)
        self.delay = 0.0
        self.connects = 0

    def on(self, pattern: str, handler: Handler) -> None:
        self.handlers.append((re.compile(pattern), handler))

    def execute(self, command: str, stdin: bytes | None) -> CommandResult:
        import hashlib
        import shlex

        assert_parses(command)
        self.commands.append(command)
        for pattern, handler in self.handlers:  # a test's own handlers first: they may read os-release too
            m = pattern.search(command)
            if m:
                code, out, err = handler(self, m, stdin)
                return CommandResult(command, code, out, err)
        if "/etc/os-release" in command:
            return CommandResult(command, 0, self.facts_text, "")
        m = re.match(r"sha256sum (\S+) 2>/dev/null; stat -c '#stat %a %U:%G %n' -- \S+ 2>/dev/null$", command)
        if m:
            path = shlex.split(m.group(1))[0]
            if path not in self.files:
                return CommandResult(command, 1, "", "")
            return CommandResult(command, 0, f"{hashlib.sha256(self.files[path]).hexdigest()}  {path}\n"
                                             f"#stat {self.modes.get(path, 0o644):o} root:root {path}\n", "")
        # Plain, or digest.py's large-file form (openssl where present, else sha256sum): answered alike.
        m = re.match(r"sha256sum ([^;\s]+)", command) or re.search(r"; else sha256sum ([^;\s]+); fi", command)
        if m:
            path = shlex.split(m.group(1))[0]
            if path in self.files:
                return CommandResult(command, 0, f"{hashlib.sha256(self.files[path]).hexdigest()}  {path}\n", "")
            return CommandResult(command, 1, "", "No such file")
        m = re.match(r"test -e (\S+)", command)
        if m:
            return CommandResult(command, 0 if shlex.split(m.group(1))[0] in self.files else 1, "", "")
        m = re.match(r"cat (\S+)$", command)
        if m:
            path = shlex.split(m.group(1))[0]
            if path in self.files:
                return CommandResult(command, 0, self.files[path].decode(), "")
            return CommandResult(command, 1, "", f"cat: {path}: No such file or directory")
        return CommandResult(command, 0, "", "")


class ShellSyntaxError(AssertionError):
    """A command a step sent would not even parse in a real shell: the test fails here."""


def assert_parses(command: str) -> None:
    """Run ``bash -n`` on a command, as a real host's shell would parse it before running anything.

    sudo runs commands with ``sh -c``: dash is stricter than bash on a few constructs, so both parse it."""
    import subprocess

    for shell in ("bash", "dash"):
        res = subprocess.run([shell, "-n"], input=command.encode(), capture_output=True, check=False)
        if res.returncode != 0:
            raise ShellSyntaxError(f"{shell} -n rejects the command {command!r}: {res.stderr.decode().strip()}")


def default_facts(name: str, cpus: int = 4, memory_kb: int = 8 * 1024 * 1024) -> str:
    return (f"os_id=debian\nos_version=12\nos_like=\nos_pretty=Debian GNU/Linux 12 (bookworm)\narch=x86_64\n"
            f"kernel=6.1.0\nhostname={name}\ncpus={cpus}\nmemory_kb={memory_kb}\nswap_kb=0\ninit=systemd\n"
            f"systemd_running=1\ncontainer=none\naddresses=10.0.0.1\ntime=0\n")


class MemoryConnection(Connection):
    def __init__(self, host: MemoryHost) -> None:
        self.name = host.name
        self.user = "root"
        self.host = host
        self.closed = False

    async def open(self) -> None:
        if self.host.down:
            raise ConnectionFault(f"{self.name}: connection refused")
        self.host.connects += 1

    async def run(self, command: str, *, sudo: bool = True, stdin: bytes | str | None = None,
                  timeout: float | None = None) -> CommandResult:
        if self.host.delay:
            await asyncio.sleep(self.host.delay)
        if self.host.down:
            raise ConnectionFault(f"{self.name}: connection lost")
        if self.host.fail_next_commands > 0:
            self.host.fail_next_commands -= 1
            raise ConnectionFault(f"{self.name}: connection reset")
        data = stdin.encode() if isinstance(stdin, str) else stdin
        self.host.sudo.append(sudo)
        return self.host.execute(command, data)

    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        if self.host.down:
            raise ConnectionFault(f"{self.name}: connection lost")
        self.host.commands.append(f"<put {remote}>")
        self.host.sudo.append(True)  # files are written as root
        self.host.files[remote] = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.host.modes[remote] = mode

    async def get(self, remote: str, local: Path) -> None:
        local.write_bytes(self.host.files[remote])

    async def close(self) -> None:
        self.closed = True


class MemoryFleet:
    """Fake hosts by name, and a factory for ConnectionPool."""

    def __init__(self, names: list[str]) -> None:
        from kubexm.engine.selectors import DEPLOY

        self.hosts = {n: MemoryHost(n) for n in [*names, DEPLOY]}

    def __getitem__(self, name: str) -> MemoryHost:
        return self.hosts[name]

    def factory(self, host: object, options: object) -> Connection:
        from kubexm.engine.selectors import DEPLOY

        name = getattr(host, "name", DEPLOY)
        return MemoryConnection(self.hosts[name])

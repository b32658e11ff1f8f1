"""The deploy machine itself as a host: commands run through a local shell."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path

from kubexm.errors import ConnectionFault
from kubexm.hosts.base import (
    KILL_AFTER,
    PID_MARK,
    CommandResult,
    Connection,
    ConnectOptions,
    guarded,
    kill_group,
    sudo_wrap,
)
from kubexm.hosts.shell import in_dir_of, sh

_BACKSTOP = 10.0  # seconds past the limit before kubexm kills what the local timeout did not


class LocalConnection(Connection):
    def __init__(self, name: str = "localhost", *, sudo_password: str | None = None,
                 options: ConnectOptions | None = None) -> None:
        self.name = name
        self.user = getpass.getuser()
        self._sudo_password = sudo_password
        self.options = options or ConnectOptions()

    async def open(self) -> None:
        return None

    def _line(self, text: str, *, as_root: bool, data: bytes | None) -> tuple[str, bytes | None]:
        if not as_root:
            return sh("sh", "-c", text).text, data
        line, feed = sudo_wrap(text, password_needed=self._sudo_password is not None)
        if feed and self._sudo_password is not None:
            data = self._sudo_password.encode() + b"\n" + (data or b"")
        return line, data

    async def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        as_root = sudo and not self.is_root
        limit = self.options.limit(timeout)
        line, data = self._line(guarded(command, limit, report_pid=True), as_root=as_root,
                                data=stdin.encode() if isinstance(stdin, str) else stdin)
        started = time.monotonic()
        try:
            proc = await asyncio.create_subprocess_shell(
                line,
                stdin=asyncio.subprocess.PIPE if data is not None else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:  # fork/exec failed: the "transport" to ourselves is broken
            raise ConnectionFault(f"{self.name}: cannot start a local shell: {exc}") from exc
        pid: list[int] = []
        try:
            out, err = await asyncio.wait_for(self._communicate(proc, data, pid), limit + KILL_AFTER + _BACKSTOP)
        except TimeoutError:
            await self._stop(proc, pid, as_root)
            return CommandResult(command, 124, "", f"timed out after {limit:g}s")
        except asyncio.CancelledError:
            await asyncio.shield(self._stop(proc, pid, as_root))
            raise
        status = proc.returncode or 0
        if status in (124, 128 + 9) and time.monotonic() - started >= limit:
            return CommandResult(command, 124, out.decode(errors="replace"),
                                 err.decode(errors="replace") + f"\ntimed out after {limit:g}s")
        return CommandResult(command, status, out.decode(errors="replace"), err.decode(errors="replace"))

    @staticmethod
    async def _communicate(proc: asyncio.subprocess.Process, data: bytes | None,
                           pid: list[int]) -> tuple[bytes, bytes]:
        """Output of ``proc``; the pid ``guarded`` reports is put in ``pid`` as soon as it is printed."""
        assert proc.stderr is not None
        before = b""
        while line := await proc.stderr.readline():
            if line.startswith(PID_MARK) and line[len(PID_MARK):].strip().isdigit():
                pid.append(int(line[len(PID_MARK):].strip()))
                break
            before += line  # e.g. sudo refusing before the command started
        out, err = await proc.communicate(data)
        return out, before + err

    async def _stop(self, proc: asyncio.subprocess.Process, pid: list[int], as_root: bool) -> None:
        """Kill the command's process group (through sudo when it runs as root), then the shell around it."""
        if proc.returncode is None and pid:
            line, data = self._line(kill_group(pid[0]), as_root=as_root, data=None)
            with contextlib.suppress(Exception):
                killer = await asyncio.create_subprocess_shell(
                    line, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
                    stderr=asyncio.subprocess.DEVNULL)
                await asyncio.wait_for(killer.communicate(data), 15)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(proc.wait(), 5)

    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        target = Path(remote)
        if not self.is_root:
            # Stage in a temp file we own, then install as root through sudo.
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                tmp.write(source if isinstance(source, bytes) else Path(source).read_bytes())
            try:
                res = await self.run((sh("mkdir", "-p", "--", in_dir_of(remote))
                                      & sh("install", "-m", f"{mode:o}", "--", tmp.name, remote)).text)
                if not res.ok:
                    raise OSError(res.stderr.strip())
            finally:
                os.unlink(tmp.name)
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.kubexm-")
        try:
            with os.fdopen(fd, "wb") as fh:
                if isinstance(source, bytes):
                    fh.write(source)
                else:
                    with open(source, "rb") as src:
                        shutil.copyfileobj(src, fh, 1 << 20)
            os.chmod(tmp_name, mode)
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    async def get(self, remote: str, local: Path) -> None:
        local.parent.mkdir(parents=True, exist_ok=True)
        if self.is_root:
            shutil.copyfile(remote, local)
            return
        res = await self.run(sh("cat", "--", remote).text)
        if not res.ok:
            raise OSError(res.stderr.strip())
        local.write_text(res.stdout)

    async def close(self) -> None:
        return None

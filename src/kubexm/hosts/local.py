"""The deploy machine itself as a host: commands run through a local shell."""

from __future__ import annotations

import asyncio
import getpass
import os
import shutil
import tempfile
from pathlib import Path

from kubexm.errors import ConnectionFault
from kubexm.hosts.base import CommandResult, Connection, sudo_wrap


class LocalConnection(Connection):
    def __init__(self, name: str = "localhost", *, sudo_password: str | None = None) -> None:
        self.name = name
        self.user = getpass.getuser()
        self._sudo_password = sudo_password

    async def open(self) -> None:
        return None

    async def run(
        self,
        command: str,
        *,
        sudo: bool = True,
        stdin: bytes | str | None = None,
        timeout: float | None = None,
    ) -> CommandResult:
        line, data = command, stdin.encode() if isinstance(stdin, str) else stdin
        if sudo and not self.is_root:
            line, feed = sudo_wrap(command, password_needed=self._sudo_password is not None)
            if feed and self._sudo_password is not None:
                data = self._sudo_password.encode() + b"\n" + (data or b"")
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
        try:
            out, err = await asyncio.wait_for(proc.communicate(data), timeout)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return CommandResult(command, 124, "", f"timed out after {timeout}s")
        return CommandResult(command, proc.returncode or 0, out.decode(errors="replace"),
                             err.decode(errors="replace"))

    async def put(self, source: Path | bytes, remote: str, *, mode: int = 0o644) -> None:
        target = Path(remote)
        if not self.is_root:
            # Stage in a temp file we own, then install as root through sudo.
            with tempfile.NamedTemporaryFile(delete=False) as tmp:
                tmp.write(source if isinstance(source, bytes) else Path(source).read_bytes())
            try:
                res = await self.run(f"mkdir -p {_q(str(target.parent))} && "
                                     f"install -m {mode:o} {_q(tmp.name)} {_q(remote)}")
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
        res = await self.run(f"cat {_q(remote)}")
        if not res.ok:
            raise OSError(res.stderr.strip())
        local.write_text(res.stdout)

    async def close(self) -> None:
        return None


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)

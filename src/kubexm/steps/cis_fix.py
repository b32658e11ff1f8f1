"""`kubexm scan cis --fix`: modes and owners of exactly the paths a CIS scan flagged, and nothing else.

Modes are only ever tightened: each path loses the permission bits outside the most permissive mode its
benchmark item allows (``chmod g-rwx,o-rwx``), so a file already stricter than the benchmark stays so.
"""

from __future__ import annotations

from dataclasses import dataclass

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.hosts.shell import Cmd, sh, shell

# (path, the most permissive mode allowed or None, the owner user:group wanted or None)
Want = tuple[str, int | None, str | None]


def symbolic_removal(allowed: int) -> str:
    """The chmod clause that removes every bit outside ``allowed`` (0o600 -> ``u-x,g-rwx,o-rwx``)."""
    clauses = []
    for who, shift, special, special_bit in (("u", 6, "s", 0o4000), ("g", 3, "s", 0o2000), ("o", 0, "t", 0o1000)):
        drop = "".join(letter for letter, bit in (("r", 4), ("w", 2), ("x", 1)) if not (allowed >> shift) & bit)
        if not allowed & special_bit:
            drop += special
        if drop:
            clauses.append(f"{who}-{drop}")
    return ",".join(clauses)


def compliant(mode: int, owner: str, allowed: int | None, wanted_owner: str | None) -> bool:
    return (allowed is None or not mode & ~allowed & 0o7777) and (wanted_owner is None or owner == wanted_owner)


def fix_command(wants: tuple[Want, ...]) -> Cmd:
    """chown before chmod: chown clears set-id bits, and the chmod that follows decides the final mode."""
    parts: list[Cmd] = []
    for path, allowed, owner in wants:
        if owner is not None:
            parts.append(sh("chown", "--", owner, path))
        if allowed is not None and symbolic_removal(allowed):
            parts.append(sh("chmod", "--", symbolic_removal(allowed), path))
    out = parts[0]
    for p in parts[1:]:
        out = out & p
    return out


@dataclass(frozen=True)
class FixFileModes(Step):
    """Tighten the mode and set the owner of the files a CIS scan found too open or wrongly owned."""

    wants: tuple[Want, ...]

    def describe(self) -> str:
        return f"fix mode/owner of {', '.join(p for p, _, _ in self.wants)}"

    def _stat(self) -> Cmd:
        return shell("stat -c '%a %U:%G %n' -- {paths} 2>/dev/null; true", paths=[p for p, _, _ in self.wants],
                     readonly=True)

    async def _current(self, host: HostContext) -> dict[str, tuple[int, str]]:
        res = await host.run(self._stat(), check=False)
        out: dict[str, tuple[int, str]] = {}
        for line in res.stdout.splitlines():
            parts = line.split(" ", 2)
            if len(parts) == 3 and parts[0].isdigit():
                out[parts[2]] = (int(parts[0], 8), parts[1])
        return out

    def _pending(self, current: dict[str, tuple[int, str]]) -> tuple[Want, ...]:
        # A path gone since the scan has nothing left to fix.
        return tuple(w for w in self.wants if w[0] in current and not compliant(*current[w[0]], w[1], w[2]))

    async def check(self, host: HostContext) -> bool:
        return not self._pending(await self._current(host))

    async def run(self, host: HostContext) -> None:
        pending = self._pending(await self._current(host))
        if pending:
            await host.run(fix_command(pending))
            host.emit("message", message=f"fixed {len(pending)} path(s)")


"""Debian packages a node needs, with their dependency closure, fetched through a private apt state.

apt reads this machine's configured sources (never a host name of kubexm's), but its package lists, cache and
dpkg status live under the work directory, so the machine's own apt state is never touched and the target
architecture can differ from this machine's. The closure is apt's own answer for a minimal node: the dpkg
status lists the packages of priority ``required`` (what every Debian system has, debootstrap's minbase)
and their dependencies as installed, and ``apt-get install --download-only`` fetches everything else.
Each .deb is then checked against the sha256 of the signed Packages index apt verified.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kubexm.errors import KubexmError
from kubexm.hosts.digest import sha256_file

# --os values kubexm can collect packages for, with the Debian codename their apt sources must carry.
OS_CODENAMES = {"debian12": "bookworm"}


@dataclass(frozen=True)
class Deb:
    path: Path
    package: str
    version: str
    arch: str
    sha256: str


def _stanzas(text: str) -> Iterator[dict[str, str]]:
    """deb822 paragraphs (Packages, status) as dicts; continuation lines kept with their field."""
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        key = ""
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Package"):
            yield fields


def _names(relation: str) -> list[list[str]]:
    """``a (>= 1) | b, c:any`` -> [[a, b], [c]]: package names of each dependency, alternatives in order."""
    out = []
    for group in relation.split(","):
        names = [re.split(r"[\s(\[:]", alt.strip(), maxsplit=1)[0] for alt in group.split("|")]
        names = [n for n in names if n]
        if names:
            out.append(names)
    return out


class AptState:
    """A private apt state directory (lists, cache, dpkg status) for one target architecture."""

    def __init__(self, root: Path, arch: str) -> None:
        self.root = root / f"apt-{arch}"
        self.arch = arch
        self.lists = self.root / "lists"
        self.cache = self.root / "cache"
        self.archives = self.root / "archives"
        self.status = self.root / "status"

    def options(self) -> list[str]:
        opts = {
            "Dir::State::Lists": f"{self.lists}/",
            "Dir::Cache": f"{self.cache}/",
            "Dir::Cache::archives": f"{self.archives}/",
            "Dir::State::status": str(self.status),
            "APT::Architecture": self.arch,
            "APT::Architectures": self.arch,
            "Acquire::Languages": "none",
            "Debug::NoLocking": "1",  # the private state has no other user; the machine's locks are not ours
        }
        if os.geteuid() == 0:  # the _apt sandbox user cannot write into a root-owned private directory
            opts["APT::Sandbox::User"] = "root"
        return [f"-o{k}={v}" for k, v in opts.items()]

    def _apt(self, program: str, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        for d in (self.lists / "partial", self.cache, self.archives / "partial"):
            d.mkdir(parents=True, exist_ok=True)
        if not self.status.exists():
            self.status.write_text("")
        try:
            return subprocess.run([program, *self.options(), *args], capture_output=True, text=True, check=False,
                                  timeout=timeout, env={**os.environ, "LC_ALL": "C", "DEBIAN_FRONTEND": "noninteractive"})
        except FileNotFoundError:
            raise KubexmError(f"{program} is not installed on this machine",
                              hint="collect Debian packages on a Debian or Ubuntu machine") from None

    def update(self) -> None:
        proc = self._apt("apt-get", "update", "-q")
        if proc.returncode != 0 or not self.index_files():
            raise KubexmError(f"apt-get update ({self.arch}) failed: {_tail(proc.stderr)}",
                              hint="check this machine's apt sources and that their mirror is reachable")

    def index_files(self) -> list[Path]:
        proc = self._apt("apt-get", "indextargets", "--format", "$(FILENAME)", "Created-By: Packages")
        return [Path(line) for line in proc.stdout.split() if Path(line).is_file()]

    def codenames(self) -> set[str]:
        out = set()
        for release in self.lists.glob("*Release"):
            m = re.search(r"^Codename:\s*(\S+)", release.read_text(errors="replace"), re.M)
            if m:
                out.add(m.group(1))
        return out

    def packages(self) -> list[dict[str, str]]:
        """Every stanza of the Packages indices apt fetched (and verified against the signed Release)."""
        out: list[dict[str, str]] = []
        for path in self.index_files():
            proc = subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True,
                                  text=True, check=False)
            if proc.returncode != 0:
                raise KubexmError(f"cannot read apt index {path.name}: {_tail(proc.stderr)}")
            out += _stanzas(proc.stdout)
        return out

    def write_minimal_status(self, index: list[dict[str, str]]) -> None:
        """A dpkg status of a minimal node: packages of priority required plus everything they depend on."""
        by_name: dict[str, dict[str, str]] = {}
        providers: dict[str, str] = {}
        for s in index:
            if s.get("Architecture") not in (self.arch, "all"):
                continue
            have = by_name.get(s["Package"])
            if have is None or _newer(s["Version"], have["Version"]):
                by_name[s["Package"]] = s
            for provided in _names(s.get("Provides", "")):
                providers.setdefault(provided[0], s["Package"])
        todo = [n for n, s in by_name.items() if s.get("Priority") == "required"]
        chosen: dict[str, dict[str, str]] = {}
        while todo:
            name = todo.pop()
            if name in chosen:
                continue
            stanza = by_name.get(name) or by_name.get(providers.get(name, ""))
            if stanza is None:
                continue
            chosen[stanza["Package"]] = stanza
            for group in _names(stanza.get("Pre-Depends", "")) + _names(stanza.get("Depends", "")):
                if not any(alt in chosen for alt in group):
                    todo.append(group[0])
        keep = ("Package", "Essential", "Priority", "Section", "Architecture", "Multi-Arch", "Version", "Provides",
                "Depends", "Pre-Depends", "Breaks", "Conflicts", "Replaces")
        paragraphs = []
        for stanza in chosen.values():
            lines = [f"{k}: {stanza[k]}" for k in keep if k in stanza]
            lines.insert(1, "Status: install ok installed")
            paragraphs.append("\n".join(lines))
        self.status.write_text("\n\n".join(paragraphs) + "\n")

    def download(self, packages: list[str]) -> list[Path]:
        """apt's download set for ``packages`` on a minimal node (already-fetched files are reused)."""
        for p in packages:
            if p.startswith("-") or not re.fullmatch(r"[a-z0-9][a-z0-9+.-]*", p):
                raise KubexmError(f"{p!r} is not a Debian package name", hint="fix spec.system.packages")
        proc = self._apt("apt-get", "install", "-y", "-q", "--download-only", "--no-install-recommends",
                         "--print-uris", *packages)
        if proc.returncode != 0:
            raise KubexmError(f"apt cannot resolve {', '.join(packages)} for {self.arch}: {_tail(proc.stderr)}",
                              hint="the package must exist in this machine's apt sources for that architecture")
        wanted = [m.group(1) for m in re.finditer(r"^'[^']*' (\S+\.deb) \d+ ", proc.stdout, re.M)]
        proc = self._apt("apt-get", "install", "-y", "-q", "--download-only", "--no-install-recommends", *packages)
        if proc.returncode != 0:
            raise KubexmError(f"apt-get could not download {', '.join(packages)} ({self.arch}): {_tail(proc.stderr)}",
                              hint="check that this machine's apt mirror is reachable; a re-run resumes")
        missing = [w for w in wanted if not (self.archives / w).is_file()]
        if missing:
            raise KubexmError(f"apt-get reported success but {missing[0]} is not in {self.archives}")
        return [self.archives / w for w in wanted]


def _newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def _tail(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " / ".join(lines[-2:])[-300:] or "no output"


def deb_fields(path: Path) -> tuple[str, str, str]:
    proc = subprocess.run(["dpkg-deb", "--show", "--showformat=${Package}\t${Version}\t${Architecture}", str(path)],
                          capture_output=True, text=True, check=False)
    parts = proc.stdout.split("\t")
    if proc.returncode != 0 or len(parts) != 3:
        raise KubexmError(f"{path.name} is not a readable Debian package: {_tail(proc.stderr)}",
                          hint="delete it from the work directory; a re-run fetches it again")
    return parts[0], parts[1], parts[2]


def collect(workdir: Path, arch: str, os_name: str, groups: dict[str, list[str]]) -> dict[str, list[Deb]]:
    """For each group, the verified .debs (with dependencies) a minimal ``os_name`` node of ``arch`` lacks."""
    codename = OS_CODENAMES.get(os_name)
    if codename is None:
        raise KubexmError(f"kubexm cannot collect packages for --os {os_name}",
                          hint=f"supported: {', '.join(OS_CODENAMES)} (from this machine's apt sources)")
    state = AptState(workdir, arch)
    state.update()
    if codename not in state.codenames():
        raise KubexmError(f"this machine's apt sources are not {os_name} ({codename}): found "
                          f"{', '.join(sorted(state.codenames())) or 'none'}",
                          hint=f"build the bundle on a machine whose apt sources are {codename}")
    index = state.packages()
    state.write_minimal_status(index)
    sums = {(s["Package"], s["Version"], s["Architecture"]): s.get("SHA256", "") for s in index}
    out: dict[str, list[Deb]] = {}
    for group, names in groups.items():
        debs = []
        for path in state.download(names):
            package, version, deb_arch = deb_fields(path)
            expected = sums.get((package, version, deb_arch), "")
            got = sha256_file(path)
            if not expected or got != expected:
                path.unlink(missing_ok=True)
                raise KubexmError(f"{path.name} does not match the sha256 of apt's Packages index "
                                  f"({expected or 'no entry'}, file has {got})",
                                  hint="it was deleted; re-run to fetch it again")
            debs.append(Deb(path, package, version, deb_arch, got))
        out[group] = debs
    return out

"""The lab's base root filesystem: a minimal Debian built once with debootstrap and cached.

The cache is keyed by a hash of the recipe, so changing the package list rebuilds it. The
build goes to a temporary directory that is renamed into place only when complete, so an
interrupted build is never mistaken for a good one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from kubexm import paths
from kubexm.errors import KubexmError

SUITE = "bookworm"
# systemd/dbus: a real init in every node; openssh-server: kubexm's transport; iproute2, procps, kmod,
# iptables: what preflight and node preparation inspect; sudo/tar/ca-certificates/bash: what kubexm's
# steps use (uploads are unpacked with tar, bash's /dev/tcp probes peers).
PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps", "kmod", "iptables",
            "ca-certificates", "sudo", "tar", "bash", "iputils-ping")
RECIPE_VERSION = "1"  # bump when the customisation below changes


def recipe_hash() -> str:
    text = f"{RECIPE_VERSION}|{SUITE}|{','.join(PACKAGES)}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_root() -> Path:
    """``$KUBEXM_LAB_CACHE`` (shared between runs and tests), else ``$KUBEXM_HOME/lab/base``."""
    env = os.environ.get("KUBEXM_LAB_CACHE")
    root = Path(env) if env else paths.home() / "lab" / "base"
    root.mkdir(parents=True, exist_ok=True)
    return root


def base_dir() -> Path:
    return cache_root() / f"{SUITE}-{recipe_hash()}"


def debian_mirror() -> str:
    """The Debian mirror this machine's apt already uses (deb822 .sources or sources.list)."""
    candidates: list[str] = []
    sources_d = Path("/etc/apt/sources.list.d")
    for path in sorted(sources_d.glob("*.sources")) if sources_d.is_dir() else []:
        text = path.read_text(errors="replace")
        for block in re.split(r"\n\s*\n", text):
            if re.search(r"^Suites:.*\b" + SUITE + r"\b", block, re.M) and re.search(r"^Types:.*\bdeb\b", block, re.M):
                m = re.search(r"^URIs:\s*(\S+)", block, re.M)
                if m and "security" not in m.group(1):
                    candidates.append(m.group(1))
    legacy = Path("/etc/apt/sources.list")
    if legacy.is_file():
        for line in legacy.read_text(errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb" and parts[2] == SUITE:
                uri = next((p for p in parts[1:] if p.startswith(("http", "file:", "ftp"))), None)
                if uri:
                    candidates.append(uri)
    if not candidates:
        raise KubexmError(f"no Debian {SUITE} mirror found in /etc/apt/sources.list or /etc/apt/sources.list.d",
                          hint=f"configure apt with a {SUITE} mirror first (the lab builds its nodes from it)")
    return candidates[0]


def ensure_base(log: Path) -> Path:
    """Return the cached base, building it first when missing (about a minute)."""
    target = base_dir()
    if (target / ".kubexm-complete").is_file():
        return target
    mirror = debian_mirror()
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=cache_root()))
    try:
        with open(log, "ab") as out:
            proc = subprocess.run(
                ["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(work), mirror],
                stdout=out, stderr=subprocess.STDOUT, check=False)
        if proc.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise KubexmError(f"building the lab base with debootstrap failed: {' | '.join(tail)}",
                              hint=f"see {log}; check that the mirror {mirror} is reachable")
        _customise(work)
        (work / ".kubexm-complete").write_text(recipe_hash() + "\n")
        if target.exists():
            shutil.rmtree(target)
        work.rename(target)
    finally:
        if work.exists():
            shutil.rmtree(work, ignore_errors=True)
    return target


def _customise(root: Path) -> None:
    """Make the base boot cleanly as many nodes: no shared identity, root login by key only."""
    for key in (root / "etc/ssh").glob("ssh_host_*"):
        key.unlink()  # each node gets its own host keys at first boot preparation
    (root / "etc/machine-id").write_text("")
    dropin = root / "etc/ssh/sshd_config.d/kubexm-lab.conf"
    dropin.parent.mkdir(parents=True, exist_ok=True)
    dropin.write_text("PermitRootLogin prohibit-password\nPasswordAuthentication no\nUseDNS no\nMaxStartups 200\n")
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    # Nodes have no route out: units that try the network or hardware only slow the boot down.
    wants = root / "etc/systemd/system"
    for unit in ("apt-daily.timer", "apt-daily-upgrade.timer", "systemd-timesyncd.service",
                 "e2scrub_all.timer", "fstrim.timer"):
        link = wants / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to("/dev/null")
    (root / "etc/hosts").write_text("127.0.0.1 localhost\n::1 localhost ip6-localhost ip6-loopback\n")

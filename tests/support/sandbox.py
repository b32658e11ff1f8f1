"""Run host commands for real, with bash and dash, where they can change nothing that matters.

Each command runs in a private mount and network namespace, chrooted into a scratch root whose /usr is
this machine's, read-only. PATH holds stand-ins that exit 0 for every program there, except the shells,
``env``, ``timeout`` and ``xargs`` (so inline scripts run too) and ``touch``, which is real: a value that
the shell executes instead of passing on (``$(touch /tmp/PWNED-x)``) leaves its file in the scratch /tmp.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

REAL = ("bash", "dash", "sh", "env", "timeout", "xargs", "touch")
# Programs kubexm runs that this machine may not have.
EXTRA = ("kubeadm", "kubelet", "kubectl", "crictl", "ctr", "etcd", "etcdctl", "helm", "systemctl", "apt-get",
         "dpkg", "dpkg-query", "dnf", "yum", "rpm", "chronyc", "timedatectl", "hostnamectl", "modprobe", "sysctl",
         "swapoff", "setenforce", "getenforce", "firewall-cmd", "ufw", "ipvsadm", "haproxy", "keepalived",
         "openssl", "socat", "conntrack", "iptables", "nft", "skopeo", "docker", "crio", "podman", "ip")
STUB = "#!/usr/bin/dash\nexit 0\n"


def available() -> str | None:
    """None when the sandbox can run here, else why not."""
    if not shutil.which("unshare") or not shutil.which("dash"):
        return "unshare or dash is missing"
    res = subprocess.run(["unshare", "-r", "-m", "-n", "true"], capture_output=True, check=False)
    return None if res.returncode == 0 else f"no user namespaces here: {res.stderr.decode().strip()}"


def _root(base: Path) -> Path:
    root = base / "root"
    for d in ("usr", "etc", "var", "tmp", "opt", "run", "root", "dev", "stubs", "cmds"):
        (root / d).mkdir(parents=True, exist_ok=True)
    for link in ("bin", "lib", "lib64", "sbin"):
        if Path("/" + link).is_symlink() or not Path("/" + link).exists():
            (root / link).symlink_to(f"usr/{link}")
        else:
            (root / link).mkdir(exist_ok=True)
    (root / "dev" / "null").touch()
    stub = root / "stubs" / ".stub"
    stub.write_text(STUB)
    stub.chmod(0o755)
    names = {p.name for d in ("/usr/bin", "/usr/sbin") for p in Path(d).iterdir()} | set(EXTRA)
    for name in sorted(names):
        target = root / "stubs" / name
        if name in REAL:
            target.symlink_to(f"/usr/bin/{name}")
        elif name not in ("[", "test") and "/" not in name:
            target.symlink_to("/stubs/.stub")
    return root


def run_all(commands: list[str], base: Path, timeout: int = 5) -> Path:
    """Run every command with bash, then with dash, in one sandbox; returns its root."""
    root = _root(base)
    for k, command in enumerate(commands):
        (root / "cmds" / f"{k:05d}").write_text(command)
    driver = (f"for f in /cmds/*; do for s in /usr/bin/bash /usr/bin/dash; do "
              f"/usr/bin/timeout {timeout} $s $f </dev/null >/dev/null 2>&1; done; done; echo sandbox-ran")
    mounts = (f"mount --rbind /usr {root}/usr && mount -o remount,bind,ro {root}/usr && "
              f"mount --bind /dev/null {root}/dev/null && exec chroot {root} /usr/bin/env -i PATH=/stubs HOME=/root "
              "/usr/bin/dash -c \"$0\"")
    res = subprocess.run(["unshare", "-r", "-m", "-n", "--fork", "/usr/bin/dash", "-c", mounts, driver],
                         capture_output=True, text=True, check=False, timeout=60 + len(commands) * 2 * timeout,
                         env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")})
    if res.stdout.strip() != "sandbox-ran":
        raise RuntimeError(f"the sandbox did not run the commands: {res.stdout[-500:]} {res.stderr[-500:]}")
    return root

"""Host facts gathered once per run with a single command, parsed into a dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field

from kubexm.hosts.shell import script

# One round trip: every fact printed as key=value. Written for POSIX sh and busybox-free
# minimal hosts; each probe tolerates a missing tool so one absent command does not hide the rest.
FACTS_SCRIPT = script(r"""
export LC_ALL=C
. /etc/os-release 2>/dev/null
echo "os_id=${ID:-unknown}"
echo "os_version=${VERSION_ID:-}"
echo "os_like=${ID_LIKE:-}"
echo "os_pretty=${PRETTY_NAME:-}"
echo "arch=$(uname -m)"
echo "kernel=$(uname -r)"
echo "hostname=$(hostname 2>/dev/null || cat /proc/sys/kernel/hostname)"
echo "cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null || echo 0)"
echo "memory_kb=$(awk '/^MemTotal:/{print $2}' /proc/meminfo)"
echo "swap_kb=$(awk '/^SwapTotal:/{print $2}' /proc/meminfo)"
echo "init=$(cat /proc/1/comm 2>/dev/null)"
if [ -d /run/systemd/system ]; then echo "systemd_running=1"; else echo "systemd_running=0"; fi
virt=""
if command -v systemd-detect-virt >/dev/null 2>&1; then virt=$(systemd-detect-virt --container 2>/dev/null); fi
if [ -z "$virt" ] || [ "$virt" = none ]; then
  if [ -f /.dockerenv ]; then virt=docker;
  elif [ -n "${container:-}" ]; then virt="$container";
  elif tr '\0' '\n' < /proc/1/environ 2>/dev/null | grep -q '^container='; then
    virt=$(tr '\0' '\n' < /proc/1/environ | sed -n 's/^container=//p' | head -n1);
  else virt=none; fi
fi
echo "container=$virt"
echo "addresses=$(ip -o -4 addr show scope global 2>/dev/null | awk '{split($4,a,"/"); printf "%s ", a[1]}')"
echo "time=$(date +%s.%N)"
""", readonly=True)

_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@dataclass(frozen=True)
class Facts:
    os_id: str
    os_version: str
    os_like: tuple[str, ...]
    os_pretty: str
    machine: str
    kernel: str
    hostname: str
    cpus: int
    memory_mb: int
    swap_mb: int
    init: str
    systemd_running: bool
    container: str | None
    addresses: tuple[str, ...] = field(default_factory=tuple)
    clock: float = 0.0  # the host's clock (epoch seconds) when the facts were read

    @property
    def arch(self) -> str:
        """Kubernetes' name for the architecture (amd64, arm64), or the raw machine name."""
        return _ARCH.get(self.machine, self.machine)

    @property
    def is_container(self) -> bool:
        return self.container is not None

    @property
    def os_family(self) -> str:
        """debian, rhel or the bare os id: the branch OS-preparation steps take."""
        ids = {self.os_id, *self.os_like}
        if ids & {"debian", "ubuntu"}:
            return "debian"
        if ids & {"rhel", "centos", "fedora", "rocky", "almalinux", "ol", "kylin", "openEuler".lower()}:
            return "rhel"
        return self.os_id


def parse_facts(text: str) -> Facts:
    raw: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            raw[key.strip()] = value.strip()

    def num(key: str) -> int:
        try:
            return int(float(raw.get(key) or 0))
        except ValueError:
            return 0

    container = raw.get("container", "none")
    return Facts(
        os_id=raw.get("os_id", "unknown"),
        os_version=raw.get("os_version", ""),
        os_like=tuple(raw.get("os_like", "").split()),
        os_pretty=raw.get("os_pretty", "").strip('"'),
        machine=raw.get("arch", ""),
        kernel=raw.get("kernel", ""),
        hostname=raw.get("hostname", ""),
        cpus=num("cpus"),
        memory_mb=num("memory_kb") // 1024,
        swap_mb=num("swap_kb") // 1024,
        init=raw.get("init", ""),
        systemd_running=raw.get("systemd_running") == "1",
        container=None if container in ("", "none") else container,
        addresses=tuple(raw.get("addresses", "").split()),
        clock=float(raw.get("time") or 0.0),
    )

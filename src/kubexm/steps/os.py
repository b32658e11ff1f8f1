"""Node OS preparation: hostname, /etc/hosts, swap, kernel modules, sysctl, firewall, SELinux, packages.

Every step checks the live state first and knows what it cannot do on a host: inside a
container, loading modules, toggling swap and most of /proc/sys are not possible, so those
steps end as "not applicable" with the reason instead of failing or pretending.
"""

from __future__ import annotations

import hashlib
import posixpath
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import NotApplicable, StepFailed
from kubexm.hosts.shell import Cmd, script, seq, sh, shell
from kubexm.spec.models import Cluster

HOSTS_BEGIN = "# BEGIN kubexm managed hosts"
HOSTS_END = "# END kubexm managed hosts"
MODULES_FILE = "/etc/modules-load.d/kubexm.conf"
SYSCTL_FILE = "/etc/sysctl.d/99-kubexm.conf"
BASE_PACKAGES = ("socat", "conntrack", "ebtables", "ipset", "chrony")
IPVS_MODULES = ("ip_vs", "ip_vs_rr", "ip_vs_wrr", "ip_vs_sh", "nf_conntrack")


def _sha(data: str) -> str:
    return hashlib.sha256(data.encode()).hexdigest()


def line_value(value: str, what: str, *, blanks: bool = False) -> str:
    """``value`` checked just before it is written into a line of a config file (or given as a package name).

    The spec validates every field by its own grammar; this is the last guard where a line is assembled: a
    line break or any other control character could start a line of the value's choosing, and a blank
    (unless ``blanks``) would add a field (an alias in /etc/hosts, an option on a chrony line).
    """
    if not value:
        raise StepFailed(f"{what} is empty", hint="fix it in the cluster file")
    for ch in value:
        if unicodedata.category(ch) in ("Cc", "Zl", "Zp") and not (blanks and ch == "\t"):
            raise StepFailed(f"{what} {value!r} holds a line break or control character; refused before writing it",
                             hint="fix it in the cluster file")
        if not blanks and ch.isspace():
            raise StepFailed(f"{what} {value!r} holds a blank, which would add a field to its line; refused",
                             hint="fix it in the cluster file")
    return value


def supported_family(family: str) -> None:
    if family not in ("debian", "rhel"):
        raise StepFailed(f"OS family '{family}' is not supported for node preparation",
                         hint="kubexm prepares Debian/Ubuntu and RHEL-family hosts")


@dataclass(frozen=True)
class SetHostname(Step):
    def describe(self) -> str:
        return "set the hostname to the host's name in the cluster file"

    async def check(self, host: HostContext) -> bool:
        res = await host.run(script("hostname; cat /etc/hostname 2>/dev/null", readonly=True), check=False)
        return res.stdout.split()[:2] == [host.name, host.name]

    async def run(self, host: HostContext) -> None:
        name = line_value(host.name, "host name")
        await host.run(shell("printf '%s\\n' {name} > /etc/hostname && hostname {name}", name=name))


def hosts_block(cluster: Cluster, host_name: str | None = None) -> str:
    """Every cluster host, and the endpoint's domain as this host should reach it (the VIP, its own
    apiserver, or its local proxy: see kubexm.balancer.plan)."""
    from kubexm.balancer.plan import endpoint_ip

    lines = [HOSTS_BEGIN]
    for h in cluster.spec.hosts:
        lines.append(f"{line_value(h.internal_ip, 'address of host ' + h.name)} {line_value(h.name, 'host name')}")
    endpoint = cluster.spec.control_plane_endpoint
    cps = cluster.hosts_with_role("control-plane")
    target = endpoint_ip(cluster, host_name) if host_name else (endpoint.address or
                                                                (cps[0].internal_ip if cps else None))
    if target:
        lines.append(f"{line_value(target, 'control-plane endpoint address')} "
                     f"{line_value(endpoint.domain, 'controlPlaneEndpoint.domain')}")
    lines.append(HOSTS_END)
    return "\n".join(lines) + "\n"


def replace_block(text: str, block: str) -> str:
    """``text`` with kubexm's block replaced (or appended); everything else stays as the admin wrote it."""
    if HOSTS_BEGIN in text and HOSTS_END in text:
        head, _, rest = text.partition(HOSTS_BEGIN)
        _, _, tail = rest.partition(HOSTS_END)
        return head + block.rstrip("\n") + tail
    return text.rstrip("\n") + ("\n" if text.strip() else "") + block


@dataclass(frozen=True)
class HostsFile(Step):
    """A marked block in /etc/hosts with every cluster host and the control-plane endpoint name."""

    def describe(self) -> str:
        return "manage the kubexm block in /etc/hosts"

    async def check(self, host: HostContext) -> bool:
        current = await host.read_text("/etc/hosts") or ""
        return replace_block(current, hosts_block(host.cluster, host.name)) == current

    async def run(self, host: HostContext) -> None:
        current = await host.read_text("/etc/hosts") or ""
        await host.upload(replace_block(current, hosts_block(host.cluster, host.name)).encode(), "/etc/hosts",
                          mode=0o644)


@dataclass(frozen=True)
class DisableSwap(Step):
    """Swap off now, and swap entries in /etc/fstab commented out so it stays off after a reboot."""

    def describe(self) -> str:
        return "turn swap off now and in /etc/fstab"

    async def check(self, host: HostContext) -> bool:
        facts = await host.facts()
        if facts.is_container:
            state = "off" if facts.swap_mb == 0 else f"{facts.swap_mb} MiB on"
            raise NotApplicable(f"a {facts.container} container cannot manage swap (swap is {state}; "
                                "it belongs to the machine hosting it)")
        res = await host.run(script(r"awk 'NR>1' /proc/swaps | wc -l; grep -cE '^[^#].*\sswap\s' /etc/fstab || true",
                                    readonly=True), check=False)
        counts = [int(x) for x in res.stdout.split() if x.isdigit()]
        return counts[:2] == [0, 0]

    async def run(self, host: HostContext) -> None:
        await host.run(script(r"swapoff -a && sed -ri.kubexm-bak 's@^([^#].*\sswap\s.*)$@# \1  # disabled by kubexm@' "
                              "/etc/fstab"))


def wanted_modules(cluster: Cluster) -> list[str]:
    mods = ["overlay", "br_netfilter"]
    if cluster.spec.kubernetes.proxy_mode == "ipvs":
        mods += list(IPVS_MODULES)
    return [line_value(m, "kernel module name") for m in mods]


def modules_text(mods: list[str]) -> str:
    return "".join(f"{line_value(m, 'kernel module name')}\n" for m in mods)


@dataclass(frozen=True)
class KernelModules(Step):
    """overlay, br_netfilter (and IPVS when kube-proxy uses it): loaded now and listed for every boot."""

    def describe(self) -> str:
        return f"load kernel modules now and at boot ({MODULES_FILE})"

    async def check(self, host: HostContext) -> bool:
        mods = wanted_modules(host.cluster)
        content = modules_text(mods)
        res = await host.run(shell("cat -- {path} 2>/dev/null; echo ---; cut -d' ' -f1 /proc/modules",
                                   path=MODULES_FILE, readonly=True), check=False)
        current, _, loaded = res.stdout.partition("---\n")
        return current == content and set(mods) <= set(loaded.split())

    async def run(self, host: HostContext) -> None:
        facts = await host.facts()
        mods = wanted_modules(host.cluster)
        await host.upload(modules_text(mods).encode(), MODULES_FILE, mode=0o644)
        if facts.is_container:
            raise NotApplicable(f"{MODULES_FILE} written; a {facts.container} container cannot load kernel "
                                f"modules: load {', '.join(mods)} on the machine hosting it")
        await host.run(shell('for m in {mods}; do modprobe -- "$m" || exit 1; done', mods=mods))


def wanted_sysctl(cluster: Cluster) -> dict[str, str]:
    values = {"net.bridge.bridge-nf-call-iptables": "1", "net.bridge.bridge-nf-call-ip6tables": "1",
              "net.ipv4.ip_forward": "1"}
    values.update(cluster.spec.system.sysctl)
    for key, value in values.items():
        proc_path(key)
        line_value(value, f"sysctl value of {key}", blanks=True)
    return values


def sysctl_text(values: dict[str, str]) -> str:
    return "# Managed by kubexm.\n" + "".join(
        f"{line_value(k, 'sysctl key')} = {line_value(v, f'sysctl value of {k}', blanks=True)}\n"
        for k, v in sorted(values.items()))


def same_sysctl_value(a: str, b: str) -> bool:
    """Multi-field values (``1024 65535``) are read back with tabs between the fields: compare the fields."""
    return a.split() == b.split()


def live_sysctl_probe(keys: list[str]) -> Cmd:
    """Prints ``key=value`` per key, the value as /proc/sys shows it (empty when the key is absent)."""
    return seq(*(shell("printf '%s=' {key}; cat -- {path} 2>/dev/null || echo", key=k, path=proc_path(k),
                       readonly=True) for k in keys))


def parse_live_sysctl(text: str) -> dict[str, str | None]:
    live: dict[str, str | None] = {}
    for line in text.splitlines():
        k, _, v = line.partition("=")
        live[k] = v.strip() or None
    return live


def proc_path(key: str) -> str:
    """The file under /proc/sys for ``key``, as sysctl(8) maps it: in a dotted key a ``/`` stands for a dot
    inside one name (``net.ipv4.conf.eth0/100.rp_filter``)."""
    line_value(key, "sysctl key")
    if "=" in key:
        raise StepFailed(f"sysctl key {key!r} holds '='", hint="fix it in the cluster file")
    dotted = "." in key and ("/" not in key or key.index(".") < key.index("/"))
    parts = (key.translate(str.maketrans("./", "/.")) if dotted else key).split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise StepFailed(f"sysctl key {key!r} does not name a file under /proc/sys", hint="fix it in the cluster file")
    return posixpath.join("/proc/sys", *parts)


@dataclass(frozen=True)
class Sysctl(Step):
    """Kernel parameters now and at boot, in one drop-in file; keys a container cannot write are named."""

    def describe(self) -> str:
        return f"set kernel parameters now and at boot ({SYSCTL_FILE})"

    async def _live(self, host: HostContext, values: dict[str, str]) -> dict[str, str | None]:
        return parse_live_sysctl((await host.run(live_sysctl_probe(list(values)), check=False)).stdout)

    async def _writable(self, host: HostContext, values: dict[str, str]) -> set[str]:
        probe = seq(*(shell("test -w {path} && printf '%s\\n' {key}", path=proc_path(k), key=k, readonly=True)
                      for k in values), sh("true", readonly=True))
        res = await host.run(probe, check=False)
        return set(res.stdout.split())

    async def check(self, host: HostContext) -> bool:
        values = wanted_sysctl(host.cluster)
        if await host.sha256(SYSCTL_FILE) != _sha(sysctl_text(values)):
            return False
        live = await self._live(host, values)
        writable = await self._writable(host, values)
        return all(same_sysctl_value(live.get(k) or "", v) for k, v in values.items() if k in writable)

    async def run(self, host: HostContext) -> None:
        values = wanted_sysctl(host.cluster)
        await host.upload(sysctl_text(values).encode(), SYSCTL_FILE, mode=0o644)
        writable = await self._writable(host, values)
        for key in sorted(writable):
            await host.run(sh("sysctl", "-q", "-w", f"{key}={values[key]}"))
        readonly = sorted(set(values) - writable)
        if readonly:
            why = "a container" if (await host.facts()).is_container else "this kernel"
            raise NotApplicable(f"{SYSCTL_FILE} written and writable keys applied; {why} cannot set "
                                f"{', '.join(readonly)} (read-only or absent /proc/sys)")


ROLE_FIREWALL_PORTS = {
    "etcd": ("2379-2380/tcp",),
    "control-plane": ("6443/tcp", "10257/tcp", "10259/tcp", "10250/tcp"),
    "worker": ("10250/tcp", "30000-32767/tcp"),
    "loadbalancer": ("6443/tcp",),
}


def firewall_ports(roles: list[str], relay: bool = False) -> list[str]:
    """Ports a node's roles need open; with spec.assets.relay also the port nodes relay release files on."""
    from kubexm.hosts.relay import PORT

    return sorted({p for r in roles for p in ROLE_FIREWALL_PORTS.get(r, ())} | ({f"{PORT}/tcp"} if relay else set()))


@dataclass(frozen=True)
class Firewall(Step):
    """spec.system.firewall: `disable` ufw/firewalld, `open-ports` the role's ports in whichever runs, or `keep`."""

    def describe(self) -> str:
        return "configure the host firewall (spec.system.firewall)"

    async def _active(self, host: HostContext) -> list[str]:
        res = await host.run(script('for s in ufw firewalld; do systemctl is-active -q "$s" 2>/dev/null && echo "$s"; done; true',
                                    readonly=True), check=False)
        return res.stdout.split()

    async def check(self, host: HostContext) -> bool:
        mode = host.cluster.spec.system.firewall
        if mode == "keep":
            return True
        active = await self._active(host)
        if mode == "disable" or not active:
            return not active
        ports = firewall_ports(host.roles, host.cluster.spec.assets.relay)
        if "ufw" in active:
            res = await host.run(sh("ufw", "status", readonly=True), check=False)
            rules = set(res.stdout.split())
            return all(p.replace("-", ":") in rules for p in ports)
        res = await host.run(sh("firewall-cmd", "--list-ports", readonly=True), check=False)
        return set(ports) <= set(res.stdout.split())

    async def run(self, host: HostContext) -> None:
        active = await self._active(host)
        if host.cluster.spec.system.firewall == "disable":
            for service in active:
                await host.run(sh("systemctl", "disable", "--now", service))
            return
        for port in firewall_ports(host.roles, host.cluster.spec.assets.relay):
            if "ufw" in active:
                await host.run(sh("ufw", "allow", port.replace("-", ":")))
            elif "firewalld" in active:
                await host.run(sh("firewall-cmd", "--permanent", f"--add-port={port}"))
        if "firewalld" in active:
            await host.run(sh("firewall-cmd", "--reload"))


@dataclass(frozen=True)
class SELinuxPermissive(Step):
    """RHEL family: SELinux permissive now and in /etc/selinux/config (kubelet's documented requirement)."""

    def describe(self) -> str:
        return "set SELinux to permissive (RHEL family)"

    async def check(self, host: HostContext) -> bool:
        if (await host.facts()).os_family != "rhel":
            return True
        res = await host.run(script("getenforce 2>/dev/null; grep -E '^SELINUX=' /etc/selinux/config 2>/dev/null",
                                    readonly=True), check=False)
        words = res.stdout.split()
        return (not words or words[0] in ("Permissive", "Disabled")) and \
            not any(w == "SELINUX=enforcing" for w in words)

    async def run(self, host: HostContext) -> None:
        # setenforce fails where SELinux is disabled, which is as permissive as it gets; a host without the
        # config file (SELinux never installed) has nothing to keep across reboots.
        await host.run(script("setenforce 0 || true; if [ -f /etc/selinux/config ]; then "
                              "sed -ri 's/^SELINUX=enforcing/SELINUX=permissive/' /etc/selinux/config; fi"))


def wanted_packages(cluster: Cluster) -> list[str]:
    pkgs = list(BASE_PACKAGES)
    if cluster.spec.kubernetes.proxy_mode == "ipvs":
        pkgs.append("ipvsadm")
    pkgs += [p for p in cluster.spec.system.packages if p not in pkgs]
    return pkgs


@dataclass(frozen=True)
class Packages(Step):
    """Distribution packages: from the local asset source's .deb/.rpm files of this ``group`` when it has
    them (hosts without a mirror), else through apt or dnf/yum."""

    group: str = "base"
    names: tuple[str, ...] = ()  # empty: the base set the cluster spec asks for
    rpm_names: tuple[str, ...] = ()  # where RHEL-family packages are named differently

    def describe(self) -> str:
        return f"install {self.group} packages"

    def wanted(self, cluster: Cluster, family: str = "debian") -> list[str]:
        names = self.rpm_names if family == "rhel" and self.rpm_names else self.names
        return [package_name(n) for n in names or wanted_packages(cluster)]

    async def _missing(self, host: HostContext) -> list[str]:
        family = (await host.facts()).os_family
        supported_family(family)
        pkgs = self.wanted(host.cluster, family)
        if family != "debian":
            res = await host.run(installed_query(family, pkgs), check=False)
            have = installed_from(family, res.stdout)
            return [p for p in pkgs if p not in have]
        # apt accepts `name=version` and `name:arch`; dpkg-query knows packages by name (and name:arch) only
        # and prints the bare name, so each wanted entry is asked and compared by what dpkg calls it.
        queried = {p: p.split("=", 1)[0] for p in pkgs}
        res = await host.run(installed_query(family, list(dict.fromkeys(queried.values()))), check=False)
        have = installed_from(family, res.stdout)
        return [p for p, q in queried.items() if q.split(":", 1)[0] not in have]

    async def check(self, host: HostContext) -> bool:
        return not await self._missing(host)

    async def run(self, host: HostContext) -> None:
        from kubexm.offline.install import bundle_source, install_packages

        if bundle_source(host.cluster) is not None:  # an offline bundle: its own packages, never the network
            await install_packages(self, host)
            return
        missing = await self._missing(host)
        facts = await host.facts()
        local = _local_packages(host.cluster, facts.os_family, facts.arch, self.group)
        if not missing and not local:
            return
        if local:
            remote_dir = "/var/lib/kubexm/packages"
            await host.run(sh("mkdir", "-p", remote_dir))
            names = []
            for path in local:
                remote = posixpath.join(remote_dir, path.name)
                await host.upload(path, remote)
                names.append(remote)
            cmd = local_install_command(facts.os_family, names)
        else:
            cmd = install_command(facts.os_family, missing)
        await host.run(cmd, timeout=900, display=f"install {', '.join(missing)}"
                       + (f" from {len(local)} local package files" if local else ""))
        still = await self._missing(host)
        if still:
            raise StepFailed(f"packages still missing after install: {', '.join(still)}",
                             hint="add their .deb/.rpm files (and dependencies) to the local asset source")


BasePackages = Packages  # the default group is the base set


def package_name(name: str) -> str:
    """A package name as it may reach apt, dnf or rpm: one quoted word, and never taken for an option (an
    apt ``-o`` option can run commands through dpkg hooks)."""
    line_value(name, "package name")
    if name.startswith("-"):
        raise StepFailed(f"package name {name!r} starts with '-'", hint="fix it in the cluster file")
    return name


def installed_query(family: str, pkgs: list[str]) -> Cmd:
    """Prints the installed ones among ``pkgs`` (see installed_from)."""
    if family == "debian":
        # db:Status-Abbrev is want, state and error flag: "ii " is unpacked and configured; "iH" (half-installed),
        # "iU" (unpacked), "iF" (half-configured) or an "R" error flag are not installed, apt-get must finish them.
        return sh("dpkg-query", "-W", "--showformat=${Package}\\t${db:Status-Abbrev}\\n", *pkgs,
                  readonly=True).no_stderr()
    # rpm's exit status says whether a package providing the name is installed (dnf installs by the same name
    # and resolves provides, e.g. conntrack from conntrack-tools).
    return shell("for p in {pkgs}; do rpm -q --quiet --whatprovides \"$p\" && printf '%s\\n' \"$p\"; done; true",
                 pkgs=pkgs, readonly=True)


def installed_from(family: str, output: str) -> set[str]:
    if family != "debian":
        return set(output.splitlines()) - {""}
    have = set()
    for line in output.splitlines():
        name, _, status = line.partition("\t")
        # held packages ("hi") are installed too; the error flag (third) must be blank
        if status[:2] in ("ii", "hi") and not status[2:].strip():
            have.add(name)
    return have


def install_command(family: str, pkgs: list[str]) -> Cmd:
    """The package manager's install of ``pkgs`` (names from package_name), each name one quoted word."""
    if family == "debian":
        return shell("DEBIAN_FRONTEND=noninteractive apt-get install -y {pkgs}", pkgs=pkgs)
    # dnf where the host has it (RHEL 8 and later), else yum (RHEL/CentOS 7).
    return shell("if command -v dnf >/dev/null 2>&1; then dnf install -y {pkgs}; else yum install -y {pkgs}; fi",
                 pkgs=pkgs)


def local_install_command(family: str, files: list[str]) -> Cmd:
    if family == "debian":
        # The local source holds exactly the closure these hosts need; dpkg orders it in one call
        # (apt would prefer versions from the host's own, possibly stale, package lists).
        return shell("DEBIAN_FRONTEND=noninteractive dpkg --force-confold -i {files}", files=files)
    return sh("rpm", "-Uvh", "--replacepkgs", *files)


def _local_packages(cluster: Cluster, family: str, arch: str, group: str) -> list[Path]:
    source = cluster.spec.assets.local_source
    if not source:
        return []
    from kubexm.assets import AssetStore, LocalSource

    kind = "deb" if family == "debian" else "rpm"
    store = AssetStore(Path(source).expanduser())
    local = LocalSource(Path(source).expanduser())
    try:
        entries = local.entries()
    except Exception:
        return []
    out = []
    for e in entries:
        if e.get("component") == kind and e.get("arch") in (arch, "all") and e.get("group", "base") == group:
            _, path = store.get(kind, str(e["version"]), str(e["arch"]), name=str(e.get("name", "")))
            out.append(path)
    return out


def chrony_conf(cluster: Cluster, host_name: str) -> str:
    """Upstream NTP servers when given; otherwise the first control-plane node serves the others."""
    lines = ["# Managed by kubexm.", "driftfile /var/lib/chrony/chrony.drift", "makestep 1.0 3", "rtcsync"]
    servers = cluster.spec.system.ntp_servers
    cps = cluster.hosts_with_role("control-plane")
    if servers:
        lines += [f"server {line_value(s, 'NTP server')} iburst" for s in servers]
    elif cps and cps[0].name == host_name:
        lines += ["local stratum 10"]
        lines += [f"allow {line_value(h.internal_ip, 'address of host ' + h.name)}"
                  for h in cluster.spec.hosts if h.name != host_name]
    elif cps:
        lines.append(f"server {line_value(cps[0].internal_ip, 'address of host ' + cps[0].name)} iburst")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class SyncTime(Step):
    """chrony with the spec's NTP servers (or the first control-plane node as the cluster's source)."""

    def describe(self) -> str:
        return "configure chrony"

    def _paths(self, family: str) -> tuple[str, str]:
        return ("/etc/chrony/chrony.conf", "chrony") if family == "debian" else ("/etc/chrony.conf", "chronyd")

    async def check(self, host: HostContext) -> bool:
        facts = await host.facts()
        conf, unit = self._paths(facts.os_family)
        if await host.sha256(conf) != _sha(chrony_conf(host.cluster, host.name)):
            return False
        if facts.is_container:
            return True  # configured; a container cannot run it (see run)
        return (await host.run(sh("systemctl", "is-active", "-q", unit, readonly=True), check=False)).ok

    async def run(self, host: HostContext) -> None:
        facts = await host.facts()
        conf, unit = self._paths(facts.os_family)
        await host.upload(chrony_conf(host.cluster, host.name).encode(), conf, mode=0o644)
        if facts.is_container:
            raise NotApplicable(f"{conf} written; a {facts.container} container cannot set the clock "
                                "(it shares the host's clock), so chrony is not started")
        await host.run(sh("systemctl", "enable", unit) & sh("systemctl", "restart", unit))

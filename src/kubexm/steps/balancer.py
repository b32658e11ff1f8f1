"""The HA endpoint on hosts: haproxy + keepalived, kube-vip, or the per-worker local proxy.

Configs are checked by the real daemon on the host (`haproxy -c`, `keepalived -t`) before they replace the
running ones, so a bad config never takes the endpoint down.
"""

from __future__ import annotations

import asyncio
import ipaddress
import posixpath
import re
import time
from dataclasses import dataclass

from kubexm.balancer.configs import (
    CHECK_SCRIPT,
    HAPROXY_CFG,
    INTERNAL_CFG,
    INTERNAL_MANIFEST,
    KEEPALIVED_CONF,
    KUBE_VIP_MANIFEST,
    MANIFESTS,
    check_script,
    haproxy_cfg,
    internal_proxy_cfg,
    internal_proxy_manifest,
    keepalived_conf,
    kube_vip_manifest,
)
from kubexm.balancer.plan import HEALTH_PORT
from kubexm.engine.context import FileWant, HostContext
from kubexm.engine.step import Step
from kubexm.errors import NotApplicable, StepFailed
from kubexm.hosts.shell import Cmd, script, sh, shell
from kubexm.spec.models import Cluster
from kubexm.steps.common import Systemd
from kubexm.steps.runtime import ConfigFiles, _sha


def removing(host: HostContext) -> frozenset[str]:
    """Control-plane nodes this run deletes: balancers stop sending them traffic first."""
    return frozenset(host.run_ctx.options.extra.get("removing", []))


# Linux interface names: at most 15 bytes, no "/", no whitespace; kubexm also keeps out what a config
# format or a command line could read as syntax (quotes, braces, "#", "!").
_INTERFACE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,14}")


async def interface_of(host: HostContext) -> str:
    """The spec's interface, else the one carrying the host's internal address."""
    wanted = host.cluster.spec.control_plane_endpoint.interface
    if wanted:
        return _checked_interface(wanted, "spec.controlPlaneEndpoint.interface")
    ip = host.cluster.host(host.name).internal_ip
    try:
        v6 = ipaddress.ip_address(ip).version == 6
    except ValueError:
        raise StepFailed(f"{host.name}: internal address {ip!r} is not an IP address, so kubexm cannot find the "
                         "interface for the VIP", hint="set spec.controlPlaneEndpoint.interface") from None
    if v6:
        probe = shell("ip -o -6 addr show to {prefix} | awk '{{print $2}}' | head -n1", prefix=f"{ip}/128",
                      readonly=True)
    else:
        probe = shell("ip -o -4 addr show to {prefix} | awk '{{print $2}}' | head -n1", prefix=f"{ip}/32",
                      readonly=True)
    res = await host.run(probe, check=False)
    name = res.stdout.strip().split("@")[0]
    if not name:
        raise StepFailed(f"no interface on {host.name} carries {ip}",
                         hint="set spec.controlPlaneEndpoint.interface to the interface for the VIP")
    return _checked_interface(name, f"the interface carrying {ip} on {host.name}")


def _checked_interface(name: str, what: str) -> str:
    if not _INTERFACE.fullmatch(name):
        raise StepFailed(f"{what}: {name!r} is not an interface name kubexm writes into keepalived or kube-vip",
                         hint="interface names are up to 15 letters, digits, '_', '.', ':' or '-'")
    return name


@dataclass(frozen=True)
class HaproxyConfig(ConfigFiles):
    """haproxy.cfg with every apiserver that stays; checked with `haproxy -c` before it replaces the live one."""

    def describe(self) -> str:
        return f"write {HAPROXY_CFG} (checked with haproxy -c)"

    async def check(self, host: HostContext) -> bool:
        if host.name in removing(host):
            return True  # leaving the cluster: it is reset next, not reconfigured
        return await host.sha256(HAPROXY_CFG) == _sha(haproxy_cfg(host.cluster, without=removing(host)))

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        return {HAPROXY_CFG: (haproxy_cfg(cluster), 0o644)}


    async def run(self, host: HostContext) -> None:
        text = haproxy_cfg(host.cluster, without=removing(host))
        candidate = f"{HAPROXY_CFG}.kubexm-new"
        await host.upload(text.encode(), candidate, mode=0o644)
        # -dW: a warning is an error; what kubexm renders must be clean.
        res = await host.run(shell("haproxy -c -q -dW -f {cfg} 2>&1", cfg=candidate, readonly=True), check=False)
        await host.run(sh("rm", "-f", "--", candidate), check=False)
        if not res.ok:
            raise StepFailed(f"the haproxy config kubexm rendered fails `haproxy -c`: {res.stdout.strip()[-300:]}",
                             hint="the running config was left in place")
        if await host.upload(text.encode(), HAPROXY_CFG, mode=0o644):
            host.vars.setdefault("changed_files", set()).add(HAPROXY_CFG)


@dataclass(frozen=True)
class KeepalivedConfig(Step):
    """keepalived.conf with this host's priority and peers, and the haproxy health script it runs."""

    def describe(self) -> str:
        return f"write {KEEPALIVED_CONF} (checked with keepalived -t)"

    async def _files(self, host: HostContext) -> dict[str, tuple[str, int]]:
        conf = keepalived_conf(host.cluster, host.name, await interface_of(host))
        return {KEEPALIVED_CONF: (conf, 0o644), CHECK_SCRIPT: (check_script(), 0o755)}

    async def check(self, host: HostContext) -> bool:
        if host.name in removing(host):
            return True
        wants = {path: FileWant(_sha(text), mode) for path, (text, mode) in (await self._files(host)).items()}
        return await host.files_in_place(wants)

    async def run(self, host: HostContext) -> None:
        files = await self._files(host)
        candidate = f"{KEEPALIVED_CONF}.kubexm-new"
        await host.upload(files[KEEPALIVED_CONF][0].encode(), candidate, mode=0o644)
        await host.upload(files[CHECK_SCRIPT][0].encode(), CHECK_SCRIPT, mode=0o755)
        res = await host.run(shell("keepalived -t -f {conf} 2>&1", conf=candidate, readonly=True), check=False)
        await host.run(sh("rm", "-f", "--", candidate), check=False)
        # keepalived -t exits 0 for keywords it ignores, but says so: any output is a problem.
        if not res.ok or res.stdout.strip():
            raise StepFailed(f"the keepalived config kubexm rendered fails `keepalived -t`: {res.stdout.strip()[-300:]}",
                             hint="the running config was left in place")
        for path, (text, mode) in files.items():
            if await host.upload(text.encode(), path, mode=mode):
                host.vars.setdefault("changed_files", set()).add(path)


@dataclass(frozen=True)
class KubeVipManifest(Step):
    """The kube-vip static pod; ``first`` uses super-admin.conf for the window of `kubeadm init`."""

    first: bool = False

    def describe(self) -> str:
        return f"write the kube-vip static pod {KUBE_VIP_MANIFEST}"

    async def check(self, host: HostContext) -> bool:
        text = kube_vip_manifest(host.cluster, await interface_of(host), self.first)
        return await host.files_in_place({KUBE_VIP_MANIFEST: FileWant(_sha(text), 0o600)})

    async def run(self, host: HostContext) -> None:
        text = kube_vip_manifest(host.cluster, await interface_of(host), self.first)
        await host.run(sh("mkdir", "-p", MANIFESTS))
        await host.upload(text.encode(), KUBE_VIP_MANIFEST, mode=0o600)


@dataclass(frozen=True)
class InternalProxy(ConfigFiles):
    """Each worker's local haproxy (static pod) and its config: 127.0.0.1:6443 to every apiserver."""

    def describe(self) -> str:
        return "write the worker's local API proxy (haproxy static pod)"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        return {INTERNAL_CFG: (internal_proxy_cfg(cluster), 0o644),
                INTERNAL_MANIFEST: (internal_proxy_manifest(cluster), 0o600)}

    async def check(self, host: HostContext) -> bool:
        if host.name in removing(host):
            return True  # leaving the cluster: it is reset next, not reconfigured
        for path, (text, _) in self._live(host).items():
            if await host.sha256(path) != _sha(text):
                return False
        return True

    def _live(self, host: HostContext) -> dict[str, tuple[str, int]]:
        files = self.files(host.cluster)
        files[INTERNAL_CFG] = (internal_proxy_cfg(host.cluster, without=removing(host)), 0o644)
        return files

    async def run(self, host: HostContext) -> None:
        await host.run(sh("mkdir", "-p", posixpath.dirname(INTERNAL_CFG), MANIFESTS))
        changed = {path for path, (text, mode) in self._live(host).items()
                   if await host.upload(text.encode(), path, mode=mode)}
        # haproxy in the pod re-reads its config only on restart: a changed backend list restarts the pod's
        # container (kubelet starts it again at once). A static pod is no systemd unit: steps.common.Systemd
        # cannot do this one. A changed manifest alone needs nothing: kubelet recreates the pod itself.
        if INTERNAL_CFG in changed:
            await host.run(_RESTART_INTERNAL_HAPROXY, check=False)


_RESTART_INTERNAL_HAPROXY = script("crictl ps -q --name '^haproxy$' 2>/dev/null | xargs -r crictl stop "
                                   ">/dev/null 2>&1; true")
_HAPROXY_LOG = script("journalctl -u haproxy --no-pager -n 5 2>/dev/null | grep -E 'ALERT|WARNING' | tail -n 2",
                      readonly=True)


def haproxy_answers(port: int) -> Cmd:
    """Read-only: something accepts a connection on 127.0.0.1:``port`` (haproxy's monitor frontend, which answers
    whenever haproxy runs). The port reaches bash as a positional parameter of a literal script, never as text
    of the script; a connection is opened and closed, nothing is sent."""
    return shell("timeout 3 bash -c ': <\"/dev/tcp/127.0.0.1/$1\"' kubexm-probe {port} 2>/dev/null",
                 port=port, readonly=True)


@dataclass(frozen=True)
class WaitHaproxyServing(Step):
    """haproxy answers on its monitor endpoint after the unit was started or reloaded.

    `systemctl reload haproxy` reports success even when the new config fails to load (the old process
    keeps running the old config), so kubexm asks haproxy itself.
    """

    mutates = False
    timeout: float = 20

    def describe(self) -> str:
        return "check haproxy serves the new configuration"

    async def _already_serving_config(self, host: HostContext) -> bool:
        """This run would neither rewrite haproxy's config nor restart it: the live haproxy is the one to ask."""
        return await HaproxyConfig().check(host) and await Systemd("haproxy").check(host)

    async def run(self, host: HostContext) -> None:
        if host.run_ctx.options.dry_run and not await self._already_serving_config(host):
            # A plan cannot know whether haproxy will serve a config the run has not written (or restarted) yet.
            raise NotApplicable("a dry run does not wait for haproxy; a real run does, after writing its config")
        probe = haproxy_answers(int(HEALTH_PORT))
        deadline = time.monotonic() + self.timeout
        while True:
            res = await host.run(probe, check=False)
            if res.ok:
                return
            if time.monotonic() > deadline:
                log = await host.run(_HAPROXY_LOG, check=False)
                raise StepFailed(f"haproxy on {host.name} does not serve kubexm's config: "
                                 f"{' / '.join(log.stdout.strip().splitlines()) or 'no answer on its health port'}",
                                 hint=f"see `journalctl -u haproxy` on {host.name}")
            await asyncio.sleep(1)

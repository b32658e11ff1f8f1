"""spec.pki.autoRenew: a systemd timer on control-plane and etcd nodes renewing certificates before they expire.

The node-side script is a literal file (templates/certrenew/kubexm-cert-renew.sh; its header says what it
renews and why); its one parameter, the number of days, comes from an EnvironmentFile. With autoRenew off
the timer, its service, script and environment file are removed again.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib.resources import files as package_files

from kubexm.engine.context import HostContext
from kubexm.hosts.shell import Cmd, sh
from kubexm.spec.models import Cluster
from kubexm.steps.runtime import ConfigFiles
from kubexm.templates import render

SCRIPT = "/usr/local/sbin/kubexm-cert-renew"
ENV_FILE = "/etc/kubexm/cert-renew.env"
SERVICE_FILE = "/etc/systemd/system/kubexm-cert-renew.service"
TIMER_FILE = "/etc/systemd/system/kubexm-cert-renew.timer"
TIMER = "kubexm-cert-renew.timer"
ALL_FILES = (SCRIPT, ENV_FILE, SERVICE_FILE, TIMER_FILE)


@cache
def script_text() -> str:
    return (package_files("kubexm.templates") / "certrenew" / "kubexm-cert-renew.sh").read_text()


def renew_files(cluster: Cluster) -> dict[str, tuple[str, int]]:
    """{path on the node: (content, mode)} of the timer, its service, the script and its parameters."""
    settings = cluster.spec.pki.auto_renew
    return {
        SCRIPT: (script_text(), 0o755),
        ENV_FILE: (render("certrenew/cert-renew.env.j2", before_days=settings.before_days), 0o644),
        SERVICE_FILE: (render("certrenew/kubexm-cert-renew.service.j2"), 0o644),
        TIMER_FILE: (render("certrenew/kubexm-cert-renew.timer.j2", on_calendar=settings.on_calendar), 0o644),
    }


def _timer_on() -> Cmd:
    return sh("systemctl", "is-enabled", "-q", "--", TIMER, readonly=True) \
        & sh("systemctl", "is-active", "-q", "--", TIMER, readonly=True)


def _none_left() -> Cmd:
    out = sh("test", "!", "-e", ALL_FILES[0], readonly=True)
    for path in ALL_FILES[1:]:
        out = out & sh("test", "!", "-e", path, readonly=True)
    return out


@dataclass(frozen=True)
class CertAutoRenewTimer(ConfigFiles):
    """The timer in place and running when spec.pki.autoRenew.enabled, and gone when not."""

    def describe(self) -> str:
        return "certificate auto-renewal timer"

    def files(self, cluster: Cluster) -> dict[str, tuple[str, int]]:
        return renew_files(cluster) if cluster.spec.pki.auto_renew.enabled else {}

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        return None  # check() also asks systemd (or, when disabled, that nothing is left)

    async def check(self, host: HostContext) -> bool:
        if not host.cluster.spec.pki.auto_renew.enabled:
            return (await host.run(_none_left(), check=False)).ok
        return await super().check(host) and (await host.run(_timer_on(), check=False)).ok

    async def run(self, host: HostContext) -> None:
        if not host.cluster.spec.pki.auto_renew.enabled:
            await host.run(sh("systemctl", "disable", "--now", "--", TIMER).no_stderr().orelse(sh("true"))
                           & sh("rm", "-f", "--", *ALL_FILES) & sh("systemctl", "daemon-reload"))
            return
        await host.run(sh("mkdir", "-p", "--", "/etc/kubexm", "/usr/local/sbin"))
        await super().run(host)
        # restart, not start: a running timer keeps its old schedule until restarted.
        await host.run(sh("systemctl", "daemon-reload") & sh("systemctl", "enable", "--", TIMER)
                       & sh("systemctl", "restart", "--", TIMER))

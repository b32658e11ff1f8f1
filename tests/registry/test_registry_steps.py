"""`registry up|down` on recorded Debian hosts: what lands on the host, idempotency, secrets kept off argv."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
from typing import Any

import bcrypt
import pytest
from ruamel.yaml import YAML
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import Event, EventBus, Executor, RunContext, RunOptions
from kubexm.errors import KubexmError
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.registry import REGISTRY_DOWN, REGISTRY_UP
from kubexm.pki.certs import load_cert
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.registry import (
    CA_FILE,
    CERT_FILE,
    CONF_DIR,
    CONFIG_FILE,
    DROPIN,
    HTPASSWD_FILE,
    KEY_FILE,
    check_enabled,
    curl_config,
    registry_users,
)

PASSWORD = "s3cr'et \"pw\" $(reboot)"


def cluster(password: str = PASSWORD, data_dir: str = "/srv/registry data", **registry: Any) -> Cluster:
    extra = "".join(f"    {k}: {v}\n" for k, v in registry.items())
    return parse_cluster(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: regsteps}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
    - {{name: reg1, address: 10.0.0.9}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], registry: [reg1]}}
  registry:
    type: docker-registry
    port: 5443
    dataDir: "{data_dir}"
    privateRegistry: dockerhub.kubexm.local:5443
    auths:
      - registry: dockerhub.kubexm.local:5443
        username: pusher
        password: '{password.replace("'", "''")}'
{extra}""")


def fake_debian(host: MemoryHost) -> dict[str, Any]:
    """Packages install, files keep owner and mode, units start and stop, and a registry that answers /v2/ like
    distribution does once its unit runs with the htpasswd on disk."""
    state: dict[str, Any] = {"pkgs": set(), "owners": {}, "dirs": {}, "active": False, "enabled": False,
                             "markers": set(), "stdin": []}

    def files(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        paths = shlex.split(m.group(1))
        out = [f"{hashlib.sha256(h.files[p]).hexdigest()}  {p}" for p in paths if p in h.files]
        out += [f"#stat {h.modes.get(p, 0o644):o} {state['owners'].get(p, 'root:root')} {p}" for p in paths
                if p in h.files]
        return 0, "\n".join(out) + "\n", ""

    def chown(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        owner, path, mode = shlex.split(m.group(1))[0], shlex.split(m.group(2))[0], m.group(3)
        state["owners"][path] = owner
        h.modes[path] = int(mode, 8)
        return 0, "", ""

    def pkgs(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        names = [w for w in shlex.split(m.string) if not w.startswith(("-", "2>"))][1:]
        return 0, "".join(f"{n}\tii \n" for n in names if n in state["pkgs"]), ""

    def unit(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        words = shlex.split(m.string.replace("&&", " ; "))
        if "disable" in words:
            state["active"] = state["enabled"] = False
        elif "enable" in words:
            state["enabled"], state["active"] = True, True
        return 0, "", ""

    def running(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        marker = shlex.split(m.group(1))[0]
        return (0 if state["active"] and state["enabled"] and marker not in state["markers"] else 1), "", ""

    def curl(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        if not state["active"]:
            return 7, "", "curl: (7) Failed to connect"
        if " -K - " not in m.string:
            return 0, '{"errors":[{"code":"UNAUTHORIZED"}]}\n401', ""
        state["stdin"].append(s)
        text = (s or b"").decode()
        secret = text.split('"', 1)[1].rsplit('"', 1)[0].replace('\\"', '"').replace("\\\\", "\\")
        name, _, pw = secret.partition(":")
        for line in h.files.get(HTPASSWD_FILE, b"").decode().splitlines():
            user, _, hashed = line.partition(":")
            if user == name and bcrypt.checkpw(pw.encode(), hashed.encode()):
                return 0, "{}\n200", ""
        return 0, "{}\n401", ""

    def data_dir(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        path = shlex.split(m.group(1))[0]
        return (0, state["dirs"][path] + "\n", "") if path in state["dirs"] else (1, "", "")

    def make_dir(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        state["dirs"][shlex.split(m.group(1))[0]] = "docker-registry:docker-registry 750"
        return 0, "", ""

    def install(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        state["pkgs"].update(shlex.split(m.group(1)))
        return 0, "", ""

    def rm(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        for path in shlex.split(m.group(1)):
            state["dirs"].pop(path, None)
            for f in [f for f in h.files if f == path or f.startswith(path + "/")]:
                del h.files[f]
        return 0, "", ""

    def absent(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        paths = shlex.split(m.group(1))
        there = [p for p in paths if p in state["dirs"] or any(f == p or f.startswith(p + "/") for f in h.files)]
        return (1 if there else 0), "", ""

    host.on(r"^(?:if \(|echo '#files')", lambda h, m, s: (0, "", ""))  # no batching: each step checks alone
    host.on(r"^sha256sum (.+) 2>/dev/null; stat -c '#stat %a %U:%G %n' -- .+ 2>/dev/null$", files)
    host.on(r"^chown -- (\S+) (\S+) && chmod -- (\d+) \S+$", chown)
    host.on(r"^chown -- (root:docker-registry) (\S+) && chmod (0640) -- \S+$", chown)
    host.on(r"^dpkg-query", pkgs)
    host.on(r"^DEBIAN_FRONTEND=noninteractive apt-get install -y (.*)$", install)
    host.on(r"^cat -- (\S+)$", lambda h, m, s: (0, h.files[m.group(1)].decode(), "") if m.group(1) in h.files
            else (1, "", "No such file or directory"))
    host.on(r"^stat -c '%U:%G %a' -- ('[^']*'|\S+) 2>/dev/null$", data_dir)
    host.on(r"^mkdir -p -- ('[^']*'|\S+) && chown -- docker-registry:docker-registry", make_dir)
    host.on(r"^test '!' -e (\S+) && systemctl is-enabled -q -- docker-registry && systemctl is-active", running)
    host.on(r"^touch -- (\S+)$", lambda h, m, s: (state["markers"].add(shlex.split(m.group(1))[0]), (0, "", ""))[1])
    host.on(r"&& touch -- (\S+)$", lambda h, m, s: (state["markers"].add(shlex.split(m.group(1))[0]), (0, "", ""))[1])
    host.on(r"^rm -f -- (\S+)$", lambda h, m, s: (state["markers"].discard(shlex.split(m.group(1))[0]), (0, "", ""))[1])
    host.on(r"^for i in \$\(seq \d+\); do systemctl is-active", lambda h, m, s: (0 if state["active"] else 1, "", ""))
    host.on(r"systemctl (?:enable|disable)", unit)
    host.on(r"^curl ", curl)
    host.on(r"^! systemctl is-active -q -- docker-registry && ! ",
            lambda h, m, s: (1 if state["active"] or state["enabled"] else 0, "", ""))
    host.on(r"^for p in (.+); do test ! -e", absent)
    host.on(r"^rm -rf -- (.+?) && ", rm)
    return state


def run(fleet: MemoryFleet, target: Cluster, pipeline: Any = REGISTRY_UP, dry_run: bool = False,
        **extra: Any) -> tuple[Any, list[Event]]:
    events: list[Event] = []
    options = RunOptions(dry_run=dry_run)
    options.extra.update(extra)
    ctx = RunContext(target, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(target, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(ctx).run_tasks(pipeline.plan(target)))
    return report, events


def changed(report: Any) -> list[tuple[str, str]]:
    return [(r.host, r.step) for r in report.records if r.status == "changed"]


def test_registry_up_installs_configures_and_a_second_run_changes_nothing() -> None:
    target = cluster()
    fleet = MemoryFleet(["cp1", "reg1"])
    state = fake_debian(fleet["reg1"])
    report, events = run(fleet, target)
    assert report.ok, [(r.host, r.step, r.message) for r in report.failures]
    reg = fleet["reg1"]
    assert "docker-registry" in state["pkgs"] and "curl" in state["pkgs"]
    assert state["active"] and state["enabled"] and ("reg1", "Systemd") in changed(report)
    assert not fleet["cp1"].commands, "only the registry hosts are touched"

    config = YAML(typ="safe").load(reg.files[CONFIG_FILE])
    assert config["storage"]["filesystem"]["rootdirectory"] == "/srv/registry data"
    assert config["http"]["addr"] == ":5443"
    assert config["http"]["tls"] == {"certificate": CERT_FILE, "key": KEY_FILE}
    assert config["auth"]["htpasswd"]["path"] == HTPASSWD_FILE
    assert state["dirs"]["/srv/registry data"] == "docker-registry:docker-registry 750"
    user, _, hashed = reg.files[HTPASSWD_FILE].decode().strip().partition(":")
    assert user == "pusher" and bcrypt.checkpw(PASSWORD.encode(), hashed.encode())
    assert reg.modes[HTPASSWD_FILE] == 0o640 and state["owners"][HTPASSWD_FILE] == "root:docker-registry"
    assert reg.modes[KEY_FILE] == 0o640 and state["owners"][KEY_FILE] == "root:docker-registry"
    dropin = reg.files[DROPIN].decode()
    assert "ExecStart=\nExecStart=/usr/bin/docker-registry serve \"/etc/kubexm/registry/config.yml\"" in dropin

    # The serving certificate is signed by the registry CA and names every way clients reach the host.
    from cryptography import x509

    cert = load_cert(reg.files[CERT_FILE], CERT_FILE)
    ca = load_cert(reg.files[CA_FILE], CA_FILE)
    cert.verify_directly_issued_by(ca)
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {"reg1", "dockerhub.kubexm.local", "localhost"} <= set(sans.get_values_for_type(x509.DNSName))
    assert {"10.0.0.9", "127.0.0.1"} <= {str(i) for i in sans.get_values_for_type(x509.IPAddress)}

    # The password reached the host only as curl's config on stdin: never a command line, never an event.
    assert all(PASSWORD not in c and "s3cr" not in c for c in reg.commands)
    assert all("s3cr" not in str(e.message) + str(e.data) for e in events)
    assert state["stdin"] and state["stdin"][0] == curl_config(registry_users(target)[0]).encode()

    before = len(reg.commands)
    again, _ = run(fleet, target)
    assert again.ok and changed(again) == [], changed(again)
    later = reg.commands[before:]
    assert not [c for c in later if c.startswith("<put") or "systemctl enable" in c or "apt-get" in c], later


def test_a_new_password_rewrites_htpasswd_and_restarts_the_registry() -> None:
    fleet = MemoryFleet(["cp1", "reg1"])
    state = fake_debian(fleet["reg1"])
    assert run(fleet, cluster())[0].ok
    before = len(fleet["reg1"].commands)
    report, _ = run(fleet, cluster(password="another-one"))
    assert report.ok, [(r.host, r.step, r.message) for r in report.failures]
    assert ("reg1", "RegistryHtpasswd") in changed(report) and ("reg1", "Systemd") in changed(report)
    assert any(" restart -- docker-registry" in c for c in fleet["reg1"].commands[before:])
    _, _, hashed = fleet["reg1"].files[HTPASSWD_FILE].decode().strip().partition(":")
    assert bcrypt.checkpw(b"another-one", hashed.encode())
    assert not state["markers"], "the restart succeeded, so nothing stays pending"


def test_dry_run_changes_nothing_and_shows_the_work() -> None:
    fleet = MemoryFleet(["cp1", "reg1"])
    fake_debian(fleet["reg1"])
    report, _ = run(fleet, cluster(), dry_run=True)
    assert report.ok
    assert not fleet["reg1"].files and not [c for c in fleet["reg1"].commands if c.startswith(("<put", "mkdir"))]
    assert {r.step for r in report.records if r.status == "would-change"} >= {
        "Packages", "RegistryHtpasswd", "RegistryDataDir", "PutFile", "Systemd", "WaitRegistryHealthy"}


def test_registry_down_stops_and_keeps_data_unless_purge() -> None:
    fleet = MemoryFleet(["cp1", "reg1"])
    state = fake_debian(fleet["reg1"])
    assert run(fleet, cluster())[0].ok
    report, _ = run(fleet, cluster(), REGISTRY_DOWN)
    assert report.ok and changed(report) == [("reg1", "StopRegistry")]
    assert not state["active"] and not state["enabled"]
    assert "/srv/registry data" in state["dirs"] and CONFIG_FILE in fleet["reg1"].files
    again, _ = run(fleet, cluster(), REGISTRY_DOWN)
    assert again.ok and changed(again) == []

    purged, _ = run(fleet, cluster(), REGISTRY_DOWN, purge=True)
    assert purged.ok and changed(purged) == [("reg1", "PurgeRegistry")]
    assert "/srv/registry data" not in state["dirs"]
    assert not [f for f in fleet["reg1"].files if f.startswith(CONF_DIR) or f == DROPIN]
    rm = [c for c in fleet["reg1"].commands if c.startswith("rm -rf")]
    assert shlex.split(rm[0].split(" && ")[0])[3:] == ["/srv/registry data", CONF_DIR, DROPIN]
    assert changed(run(fleet, cluster(), REGISTRY_DOWN, purge=True)[0]) == []


def test_a_system_directory_as_data_dir_is_refused() -> None:
    with pytest.raises(KubexmError, match=re.escape("spec.registry.dataDir '/var/lib' is a system directory")):
        check_enabled(cluster(data_dir="/var/lib"))


def test_a_registry_without_users_names_the_auths_entry_to_add() -> None:
    with pytest.raises(KubexmError, match=re.escape("has no entry for the registry (dockerhub.kubexm.local:5443)")):
        check_enabled(parse_cluster(_without_auths()))


def _without_auths() -> str:
    return """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: regsteps}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: reg1, address: 10.0.0.9}
  roleGroups: {etcd: [cp1], control-plane: [cp1], registry: [reg1]}
  registry: {type: docker-registry, port: 5443, privateRegistry: "dockerhub.kubexm.local:5443"}
"""

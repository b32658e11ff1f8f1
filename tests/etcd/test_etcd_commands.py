"""etcd's host commands carry spec values as single words, and everything a plan runs only reads.

The data directory is the value that matters most: it reaches ``mv``, ``rm -rf`` and
``etcdctl snapshot restore --data-dir``. Each command a step sends is parsed by bash and dash (MemoryHost),
and the dangerous ones are also *executed* by both shells with ``rm``/``mv``/``etcdctl``... replaced by
functions that record their arguments: the recorded argv must hold the data directory as one argument, and
nothing in the value may run.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import (
    SERIAL,
    EventBus,
    Executor,
    Pipeline,
    RunContext,
    RunOptions,
    RunReport,
    Task,
    deploy_machine,
    role,
)
from kubexm.engine.task import Module
from kubexm.hosts.pool import ConnectionPool
from kubexm.pki.layout import etcd_specs
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.binaries import InstallBinaries
from kubexm.steps.certs import CollectCerts, RestartEtcdIfChanged
from kubexm.steps.common import Systemd
from kubexm.steps.etcd import (
    BIN,
    BOOTSTRAP_FILE,
    ENV_FILE,
    UNIT_FILE,
    EtcdService,
    WaitEtcdHealthy,
    cluster_pki,
    data_dir,
    install_steps,
    url,
)
from kubexm.steps.etcd_backup import BackupEtcd, RestoreMember, StopEtcd, VerifyBackup
from kubexm.steps.etcd_members import CleanEtcdNode, JoinEtcdCluster, LeaveEtcdCluster

MEMBERS = ["master1", "master2", "master3"]
NAMES = [*MEMBERS, "worker1", "worker2"]
SPACE = "/var/lib/etcd data/member dir"
HOSTILE = [SPACE, "/var/lib/etcd;touch pwned", "/var/lib/$(touch pwned)/etcd", "/var/lib/`touch pwned`/etcd",
           "/var/lib/it's etcd", "/var/lib/-rf etcd", "/var/lib/etcd && rm -rf x"]


def cluster(data: str | None = None) -> Cluster:
    c = parse_cluster(sample_config("prod", with_ha=True))
    if data is not None:
        # Set after parsing on purpose: these steps must hold even for a value the spec's own checks let
        # through (they are a second line, not the only one).
        c.spec.etcd.data_dir = data
    return c


class FakeEtcd:
    """Membership and health of an etcd cluster, answering the etcdctl commands sent to any member."""

    def __init__(self, fleet: MemoryFleet, c: Cluster, members: list[str] | None = None) -> None:
        self.addresses = {h.name: h.internal_ip for h in c.spec.hosts}
        self.members = [self._member(n, i + 1) for i, n in enumerate(members or MEMBERS)]
        self.calls: list[tuple[str, list[str]]] = []
        # A started member publishes its client URL only after this many more health polls (catching up).
        self.publish_after = 0
        self._starting: dict[str, int] = {}
        self.answered: list[set[str]] = []
        for name in [*NAMES]:
            fleet[name].on(r"etcdctl", self.etcdctl)
            fleet[name].on(r"systemctl start --no-block etcd$", self.start)
            fleet[name].on(r"^systemctl is-active -q etcd$", lambda h, m, s: (0, "", ""))
            # Systemd's check: no restart pending (the marker), then enabled and active (always, here).
            fleet[name].on(r"^test '!' -e " + re.escape(MARKER) + " && ",
                           lambda h, m, s: (1 if MARKER in h.files else 0, "", ""))

    def _member(self, name: str, ident: int) -> dict[str, Any]:
        return {"ID": ident, "name": name, "peerURLs": [url(self.addresses[name], 2380)],
                "clientURLs": [url(self.addresses[name], 2379)]}

    def start(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        self._starting[host.name] = self.publish_after
        return 0, "", ""

    def _catch_up(self) -> None:
        for name, left in list(self._starting.items()):
            if left > 0:
                self._starting[name] = left - 1
                continue
            del self._starting[name]
            for mb in self.members:
                if mb["peerURLs"] == [url(self.addresses[name], 2380)]:
                    mb.update(name=name, clientURLs=[url(self.addresses[name], 2379)])

    def etcdctl(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        args = etcdctl_args(m.string)
        self.calls.append((host.name, args))
        if args[:2] == ["endpoint", "health"]:
            if "--cluster" in args:
                self._catch_up()
                self.answered.append({mb["name"] for mb in self.members if mb["clientURLs"]})
                return 0, json.dumps([{"endpoint": c, "health": True} for mb in self.members
                                      for c in mb["clientURLs"]]), ""
            return 0, "https://127.0.0.1:2379 is healthy\n", ""
        if args[:2] == ["member", "list"]:
            return 0, json.dumps({"members": self.members}), ""
        if args[:2] == ["member", "add"]:
            peer = args[3].removeprefix("--peer-urls=")
            self.members.append({"ID": 100 + len(self.members), "name": "", "peerURLs": [peer], "clientURLs": []})
            return 0, "", ""
        if args[:2] == ["member", "remove"]:
            self.members = [mb for mb in self.members if format(mb["ID"], "x") != args[2]]
            return 0, "", ""
        if args[:2] == ["snapshot", "save"]:
            host.files[args[2]] = b"etcd snapshot of " + host.name.encode()
            return 0, "", ""
        return 0, "", ""


def etcdctl_args(command: str) -> list[str]:
    """The arguments after etcdctl's connection options, of the first etcdctl in a command line."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    words = list(lexer)
    start = next(i for i, w in enumerate(words) if w.endswith("/etcdctl"))
    out = []
    for w in words[start + 1:]:
        if w in (";", "&&", "||", "|"):
            break
        out.append(w)
    while out and out[0].startswith("--") and out[0] != "--":
        out.pop(0)
    return out


def execute(c: Cluster, tasks: list[Task], fleet: MemoryFleet, *, dry_run: bool = False, nodes: list[str] | None = None,
            **extra: Any) -> RunReport:
    options = RunOptions(dry_run=dry_run, nodes=nodes, extra=extra)
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_pipeline(Pipeline("test", [Module("m", tasks)])))


def failures(report: RunReport) -> list[tuple[str, str, str]]:
    return [(f.host, f.step, f.message) for f in report.failures]


def no_binaries(host: Any) -> list[Any]:
    # InstallBinaries needs release archives; what it does is tested with the assets.
    return [s for s in install_steps(host) if not isinstance(s, InstallBinaries)]


INSTALL = Task("Install", steps=no_binaries, hosts=role("etcd"), then=[WaitEtcdHealthy(timeout=5)])


RESTART = "systemctl daemon-reload && systemctl enable -- etcd && systemctl restart --no-block -- etcd"
MARKER = "/var/lib/kubexm/restart-pending/etcd"


def commands_with(fleet: MemoryFleet, name: str, word: str) -> list[str]:
    return [c for c in fleet[name].commands if word in c]


# -- the sandbox: a command run by real shells, with the programs that change things replaced -------------
STUBS = ("rm", "mv", "mkdir", "chmod", "systemctl", "etcdctl")


def sandbox_calls(command: str, cwd: Path) -> list[list[str]]:
    """Run ``command`` with bash and with dash; return the programs it called (as argv lists), which must
    be the same for both. Nothing but the stubs and shell built-ins can run: a value that escaped its
    quotes would run ``touch`` in ``cwd``, which the caller checks."""
    # etcdctl runs by its literal path: named plainly at that one place, the function stands in for it.
    text = command.replace(f"ETCDCTL_API=3 {BIN}/etcdctl ", "ETCDCTL_API=3 etcdctl ")
    prelude = "".join(f"{p}() {{ printf '%s\\037' {p} \"$@\" >>\"$KX_LOG\"; printf '\\036' >>\"$KX_LOG\"; }}\n"
                      for p in STUBS)
    seen = []
    for shell_name in ("bash", "dash"):
        log = cwd / f".{shell_name}.log"
        log.unlink(missing_ok=True)
        subprocess.run([shell_name, "-c", prelude + text], cwd=cwd, check=False, capture_output=True,
                       env={"KX_LOG": str(log), "PATH": os.environ["PATH"]})
        raw = log.read_text() if log.exists() else ""
        seen.append([record.split("\x1f")[:-1] for record in raw.split("\x1e")[:-1]])
    assert seen[0] == seen[1], seen
    return seen[0]


def escaped(cwd: Path) -> list[str]:
    return sorted(p.name for p in cwd.iterdir() if not p.name.startswith("."))


# -- the data directory ---------------------------------------------------------------------------------
@pytest.mark.parametrize("data", HOSTILE)
def test_env_file_and_every_install_command_carry_the_data_dir_as_one_value(data: str, tmp_path: Path) -> None:
    c = cluster(data)
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    report = execute(c, [INSTALL], fleet)
    assert report.ok, failures(report)
    env = fleet["master2"].files[ENV_FILE]
    # systemd's EnvironmentFile reader and sh read these single-quoted values alike: ask sh what it reads.
    work = tmp_path / "cwd"
    work.mkdir()
    (work / "etcd.env").write_bytes(env)
    got = subprocess.run(["sh", "-c", ". ./etcd.env && printf '%s|%s|%s' \"$ETCD_DATA_DIR\" \"$ETCD_NAME\" "
                                      "\"$ETCD_INITIAL_ADVERTISE_PEER_URLS\""],
                         cwd=work, capture_output=True, text=True, check=True).stdout
    assert got == f"{data}|master2|https://192.168.0.12:2380"
    assert escaped(work) == ["etcd.env"]
    bootstrap = fleet["master2"].files[BOOTSTRAP_FILE].decode()
    assert ("\nETCD_INITIAL_CLUSTER=master1=https://192.168.0.11:2380,master2=https://192.168.0.12:2380,"
            "master3=https://192.168.0.13:2380\n") in bootstrap
    assert "\nETCD_INITIAL_CLUSTER_STATE=new\n" in bootstrap
    # A first install changed the env file and unit: (re)started without waiting for the peers.
    assert RESTART in fleet["master2"].commands


def test_unit_file_quotes_what_systemd_unquotes() -> None:
    c = cluster(SPACE)
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    assert execute(c, [INSTALL], fleet).ok
    unit = fleet["master1"].files[UNIT_FILE].decode()
    assert 'ExecStart="/usr/local/bin/etcd"\n' in unit
    assert 'Description=etcd key-value store of kubexm cluster "prod"\n' in unit
    # EnvironmentFile= takes a path as it is (no unquoting): it stays a bare constant.
    assert "\nEnvironmentFile=/etc/etcd.env\n" in unit and "\nEnvironmentFile=-/etc/etcd.bootstrap.env\n" in unit


@pytest.mark.parametrize("name", ["etcd data;touch pwned", "x $(touch pwned) y", "x `touch pwned` y", "it's",
                                  "-rf", "a && touch pwned"])
def test_restore_moves_and_restores_the_data_dir_as_one_argument(name: str, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    data = str(tmp_path / name / "member dir")
    Path(data).mkdir(parents=True)
    c = cluster(data)
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    archive = backup(c, fleet, tmp_path / "backups")
    report = execute(c, [Task("Verify", steps=[VerifyBackup()], hosts=deploy_machine()),
                         Task("Restore", steps=[RestoreMember()], hosts=role("etcd"))], fleet, from_file=str(archive))
    assert report.ok, failures(report)
    (restore,) = commands_with(fleet, "master3", "snapshot restore")
    calls = sandbox_calls(restore, work)
    assert escaped(work) == []
    mv, etcdctl, chmod, rm, systemctl = calls
    assert mv[:3] == ["mv", "--", data] and mv[3].startswith(data + ".before-restore-") and len(mv) == 4
    assert etcdctl[:3] == ["etcdctl", "snapshot", "restore"]
    assert etcdctl[etcdctl.index("--data-dir") + 1] == data
    assert etcdctl[etcdctl.index("--name") + 1] == "master3"
    assert etcdctl[etcdctl.index("--initial-advertise-peer-urls") + 1] == "https://192.168.0.13:2380"
    assert chmod == ["chmod", "0700", "--", data]
    assert rm == ["rm", "-f", "--", "/var/lib/kubexm/backup/restore.db"]
    assert systemctl == ["systemctl", "start", "--no-block", "etcd"]


def backup(c: Cluster, fleet: MemoryFleet, location: Path) -> Path:
    report = execute(c, [Task("Backup", steps=[BackupEtcd()], hosts=deploy_machine())], fleet,
                     to_location=str(location), include_pki=False, prefix="")
    assert report.ok, failures(report)
    (archive,) = location.glob("*.tar.gz")
    return archive


@pytest.mark.parametrize("name", ["etcd data;touch pwned", "x $(touch pwned) y", "it's", "-rf"])
def test_leave_and_clean_remove_exactly_the_data_dir(name: str, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    data = str(tmp_path / name)
    c = cluster(data)
    fleet = MemoryFleet(NAMES)
    etcd = FakeEtcd(fleet, c)
    fleet["master3"].on(r"^test ! -e ", lambda h, m, s: (1, "", ""))  # etcd's files are still there
    report = execute(c, [Task("Remove", steps=[LeaveEtcdCluster(), CleanEtcdNode()], hosts=role("etcd"))], fleet,
                     nodes=["master3"])
    assert report.ok, failures(report)
    assert [m["name"] for m in etcd.members] == ["master1", "master2"]
    assert ("master1", ["member", "remove", "3"]) in etcd.calls
    (clean,) = commands_with(fleet, "master3", "rm -rf")
    calls = sandbox_calls(clean, work)
    assert escaped(work) == []
    assert calls[0] == ["systemctl", "disable", "--now", "etcd"]
    assert calls[1] == ["rm", "-rf", "--", data, ENV_FILE, BOOTSTRAP_FILE, UNIT_FILE, "/etc/kubernetes/pki/etcd",
                        "/usr/local/bin/etcd", "/usr/local/bin/etcdctl", "/var/lib/kubexm/assets/etcd.installed"]
    assert calls[2] == ["systemctl", "daemon-reload"]
    # The check that says whether a node is clean asks about the same directory.
    check = CleanEtcdNode().check_script(_host(c, fleet, "master3"))
    assert check is not None and check.readonly
    assert shlex.split(check.text)[4:9] == ["&&", "test", "!", "-e", data]


def _host(c: Cluster, fleet: MemoryFleet, name: str) -> Any:
    ctx = RunContext(c, RunOptions(), pool=ConnectionPool(c, RunOptions().connect, factory=fleet.factory))
    return ctx.host(name)


@pytest.mark.parametrize("name", ["etcd data;touch pwned", "x $(touch pwned) y", "it's"])
def test_join_sets_the_old_data_dir_aside_as_one_argument(name: str, tmp_path: Path) -> None:
    work = tmp_path / "cwd"
    work.mkdir()
    data = str(tmp_path / name)
    Path(data).mkdir()
    c = cluster(data)
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    etcd = FakeEtcd(fleet, c, members=["master1", "master2"])
    fleet["master3"].handlers.insert(0, (re.compile(r"^systemctl is-active -q etcd$"), lambda h, m, s: (3, "", "")))
    report = execute(c, [Task("Join", steps=[JoinEtcdCluster()], hosts=role("etcd"))], fleet, nodes=["master3"])
    assert report.ok, failures(report)
    assert ("master1", ["member", "add", "master3", "--peer-urls=https://192.168.0.13:2380"]) in etcd.calls
    (aside,) = commands_with(fleet, "master3", "mv --")
    calls = sandbox_calls(aside, work)
    assert escaped(work) == []
    assert calls[0] == ["systemctl", "stop", "etcd"]
    assert calls[1][:3] == ["mv", "--", data] and calls[1][3].startswith(data + ".before-join-")
    bootstrap = fleet["master3"].files[BOOTSTRAP_FILE].decode()
    assert "\nETCD_INITIAL_CLUSTER_STATE=existing\n" in bootstrap
    assert ",master3=https://192.168.0.13:2380\n" in bootstrap


def test_join_waits_until_the_new_member_itself_answers(tmp_path: Path) -> None:
    # `endpoint health --cluster` lists only members that published client URLs: right after the start the
    # two old members answer healthy while the new one is still catching up. The join must not end there.
    c = cluster(str(tmp_path / "data"))
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    etcd = FakeEtcd(fleet, c, members=["master1", "master2"])
    etcd.publish_after = 2
    fleet["master3"].handlers.insert(0, (re.compile(r"^systemctl is-active -q etcd$"), lambda h, m, s: (3, "", "")))
    report = execute(c, [Task("Join", steps=[JoinEtcdCluster()], hosts=role("etcd"))], fleet, nodes=["master3"])
    assert report.ok, failures(report)
    assert etcd.answered[-1] == {"master1", "master2", "master3"}
    assert [a for a in etcd.answered if "master3" not in a], "the test must see the window it is about"


@pytest.mark.parametrize("data, problem", [
    ("var/lib/etcd", "must be an absolute path"),
    ("/var/lib/../etcd", "must be an absolute path"),
    ("/", "system directory"),
    ("//var/lib/", "system directory"),
    ("/var/lib", "system directory"),
    ("/var/lib/etcd\nExecStartPre=/bin/sh", "line break"),
])
def test_a_data_dir_that_cannot_be_used_stops_with_one_line(data: str, problem: str) -> None:
    c = cluster(data)
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    report = execute(c, [INSTALL], fleet)
    messages = [f.message for f in report.failures]
    assert messages and all(problem in m and "spec.etcd.dataDir" in m and "\n" not in m for m in messages), messages
    assert not any(f.message.startswith("internal error") for f in report.failures)
    for name in MEMBERS:
        assert ENV_FILE not in fleet[name].files
    with pytest.raises(Exception, match=problem):
        data_dir(c)
    # The destructive steps refuse it too, before any command.
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    fleet["master3"].on(r"^test ! -e ", lambda h, m, s: (1, "", ""))
    report = execute(c, [Task("Remove", steps=[CleanEtcdNode()], hosts=role("etcd"))], fleet, nodes=["master3"])
    assert report.failures and problem in report.failures[0].message
    assert not commands_with(fleet, "master3", "rm ")


def test_the_data_dir_with_a_space_from_the_cluster_file() -> None:
    c = parse_cluster(sample_config("prod", with_ha=True).replace(
        "    type: kubexm ", f"    dataDir: {json.dumps(SPACE)}\n    type: kubexm "))
    assert data_dir(c) == SPACE


# -- extra args -----------------------------------------------------------------------------------------
def test_extra_args_become_quoted_env_lines() -> None:
    c = cluster()
    c.spec.etcd.extra_args = {"quota-backend-bytes": "8589934592", "--experimental-initial-corrupt-check": "true",
                              "log-outputs": "stderr, /var/log/it's etcd.log"}
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    assert execute(c, [INSTALL], fleet).ok
    env = fleet["master1"].files[ENV_FILE].decode()
    assert "\nETCD_QUOTA_BACKEND_BYTES=8589934592\n" in env
    assert "\nETCD_EXPERIMENTAL_INITIAL_CORRUPT_CHECK=true\n" in env
    assert "ETCD_LOG_OUTPUTS='stderr, /var/log/it'\"'\"'s etcd.log'\n" in env


@pytest.mark.parametrize("args, problem", [
    ({"quota backend": "1"}, "'quota backend' is not an etcd flag name"),
    ({"x=y": "1"}, "is not an etcd flag name"),
    ({"a\nETCD_DATA_DIR": "1"}, "is not an etcd flag name"),
    ({"quota-backend-bytes": "1\nETCD_DATA_DIR=/"}, "spec.etcd.extraArgs.quota-backend-bytes: the value holds a line"),
])
def test_bad_extra_args_stop_with_one_line(args: dict[str, str], problem: str) -> None:
    c = cluster()
    c.spec.etcd.extra_args = args
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    report = execute(c, [INSTALL], fleet)
    assert report.failures
    for f in report.failures:
        assert problem in f.message and "\n" not in f.message and not f.message.startswith("internal error")
    assert ENV_FILE not in fleet["master1"].files


def test_ipv6_addresses_are_bracketed_in_urls() -> None:
    assert url("fd00::1", 2380) == "https://[fd00::1]:2380"
    assert url("10.0.0.1", 2379) == "https://10.0.0.1:2379"
    assert url("etcd1.example.internal", 2379) == "https://etcd1.example.internal:2379"


# -- plans only read -------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [SPACE, "/var/lib/etcd;touch pwned"])
def test_a_dry_run_of_every_etcd_operation_sends_only_read_only_commands(data: str, tmp_path: Path) -> None:
    c = cluster(data)
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)
    archive = backup(c, fleet, tmp_path / "backups")
    for host in fleet.hosts.values():
        host.commands.clear()
    tasks = [
        INSTALL,
        Task("Verify", steps=[VerifyBackup()], hosts=deploy_machine()),
        Task("Stop", steps=[StopEtcd()], hosts=role("etcd")),
        Task("Restore", steps=[RestoreMember()], hosts=role("etcd"), then=[WaitEtcdHealthy(timeout=5)]),
        Task("Roll", steps=[RestartEtcdIfChanged()], hosts=role("etcd")),
        Task("Certs", steps=[CollectCerts()], hosts=role("etcd")),
        Task("Leave", steps=[LeaveEtcdCluster(), CleanEtcdNode()], hosts=role("etcd")),
        Task("Join", steps=[JoinEtcdCluster(), EtcdService()], hosts=role("etcd")),
    ]
    report = execute(c, tasks, fleet, dry_run=True, from_file=str(archive))
    assert report.ok, failures(report)
    statuses = {r.step: r.status for r in report.records}
    assert statuses["VerifyBackup"] == "ok" and statuses["CollectCerts"] == "ok"
    assert statuses["RestoreMember"] == "would-change"
    sent = [c for h in fleet.hosts.values() for c in h.commands]
    assert any("endpoint health" in c for c in sent) and any("member list" in c for c in sent)
    assert not any(w in c for c in sent for w in ("rm -", "mv ", "mkdir", "member add", "member remove", "<put"))


def test_read_only_declarations_are_refused_for_writing_etcdctl_commands() -> None:
    from kubexm.hosts.shell import UnsafeCommand
    from kubexm.steps.etcd import etcdctl

    assert etcdctl("member", "list", "-w", "json", readonly=True).readonly
    assert etcdctl("endpoint", "health", "--cluster", readonly=True).readonly
    for args in (("member", "remove", "1"), ("member", "add", "x", "--peer-urls=https://a:2380"),
                 ("snapshot", "restore", "/x"), ("put", "k", "v")):
        with pytest.raises(UnsafeCommand):
            etcdctl(*args, readonly=True)


def test_cert_roll_restarts_through_systemd_only_when_a_certificate_changed() -> None:
    c = cluster()
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)

    class Changed(RestartEtcdIfChanged):
        async def run(self, host: Any) -> None:
            await super().run(host)

    def marking(changed: bool) -> Callable[[Any], list[Any]]:
        from kubexm.steps.etcd import PKI_DIR

        class Mark(CollectCerts):
            async def check(self, host: Any) -> bool:
                if changed:
                    host.vars.setdefault("changed_files", set()).add(f"{PKI_DIR}/server.crt")
                return True

        return lambda host: [Mark(), RestartEtcdIfChanged()]

    report = execute(c, [Task("Roll", steps=marking(False), hosts=role("etcd"))], fleet)
    assert report.ok and not commands_with(fleet, "master1", "systemctl restart")
    report = execute(c, [Task("Roll", steps=marking(True), hosts=role("etcd"))], fleet)
    assert report.ok, failures(report)
    assert "systemctl daemon-reload && systemctl enable -- etcd && systemctl restart -- etcd" in fleet["master1"].commands


def test_a_restart_left_pending_by_a_failed_run_is_made_by_the_next_run() -> None:
    c = cluster()
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    FakeEtcd(fleet, c)

    def touch(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        h.files[MARKER] = b""
        return 0, "", ""

    def remove(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        h.files.pop(MARKER, None)
        return 0, "", ""

    for name in MEMBERS:
        fleet[name].on(r"^mkdir -p -- /var/lib/kubexm/restart-pending && touch -- " + re.escape(MARKER) + "$", touch)
        fleet[name].on(r"^rm -f -- " + re.escape(MARKER) + "$", remove)
    assert execute(c, [INSTALL], fleet).ok
    assert all(MARKER not in fleet[n].files for n in MEMBERS)  # cleared once every member was healthy
    # A second run finds everything in place: nothing restarts.
    for name in MEMBERS:
        fleet[name].commands.clear()
    assert execute(c, [INSTALL], fleet).ok
    assert not any(RESTART in fleet[n].commands for n in MEMBERS)
    # A run that wrote the config but failed before etcd was healthy again left master2's marker behind:
    # the config is in place, yet the next run restarts master2 (only) and clears the marker afterwards.
    fleet["master2"].files[MARKER] = b""
    assert execute(c, [INSTALL], fleet).ok
    assert RESTART in fleet["master2"].commands
    assert not any(RESTART in fleet[n].commands for n in ("master1", "master3"))
    assert MARKER not in fleet["master2"].files


# -- first start of a new cluster: members wait for each other's quorum ------------------------------------
class QuorumEtcd:
    """etcd of a new cluster under systemd (Type=notify): a member is ready only once a quorum of members
    runs, so a start that waits for readiness (systemctl without --no-block) fails when the member is the
    first one up; a queued start (--no-block) returns at once. Health: every member is up."""

    def __init__(self, fleet: MemoryFleet) -> None:
        self.started: set[str] = set()
        self.blocking_starts = 0
        for name in MEMBERS:
            fleet[name].on(r"systemctl (?:start|restart)( --no-block)? -- etcd$", self.start)
            fleet[name].on(r"etcdctl .*endpoint health --cluster", self.health)
            fleet[name].on(r"^mkdir -p -- /var/lib/kubexm/restart-pending && touch -- " + re.escape(MARKER) + "$",
                           self.mark)
            fleet[name].on(r"^rm -f -- " + re.escape(MARKER) + "$", self.unmark)

    @staticmethod
    def mark(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        host.files[MARKER] = b""
        return 0, "", ""

    @staticmethod
    def unmark(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        host.files.pop(MARKER, None)
        return 0, "", ""

    def start(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        if not m.group(1):
            self.blocking_starts += 1
            if len(self.started | {host.name}) <= len(MEMBERS) // 2:
                return 1, "", "Job for etcd.service failed because a timeout was exceeded."
        self.started.add(host.name)
        return 0, "", ""

    def health(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        if self.started != set(MEMBERS):
            return 1, "", "context deadline exceeded"
        return 0, json.dumps([{"endpoint": url(f"192.168.0.1{i + 1}", 2379), "health": True}
                              for i in range(len(MEMBERS))]), ""


def test_members_of_a_new_cluster_start_without_waiting_for_each_other() -> None:
    c = cluster()
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    quorum = QuorumEtcd(fleet)
    FakeEtcd(fleet, c)
    one_at_a_time = Task("Install", steps=no_binaries, hosts=role("etcd"), strategy=SERIAL,
                         then=[WaitEtcdHealthy(timeout=5)])
    report = execute(c, [one_at_a_time], fleet)
    assert report.ok, failures(report)
    assert quorum.started == set(MEMBERS) and quorum.blocking_starts == 0
    assert all(RESTART in fleet[n].commands for n in MEMBERS)
    # The queued start is confirmed by the health wait, which then clears every pending-restart marker.
    assert all(f"rm -f -- {MARKER}" in fleet[n].commands and MARKER not in fleet[n].files for n in MEMBERS)


def test_without_no_block_the_first_member_of_a_new_cluster_would_fail() -> None:
    # The counter-check of the test above: the fake does model the quorum wait.
    c = cluster()
    cluster_pki(c).ensure(etcd_specs(c))
    fleet = MemoryFleet(NAMES)
    quorum = QuorumEtcd(fleet)
    FakeEtcd(fleet, c)

    def blocking(host: Any) -> list[Any]:
        return [EtcdService(no_block=False) if isinstance(s, EtcdService) else s for s in no_binaries(host)]

    report = execute(c, [Task("Install", steps=blocking, hosts=role("etcd"), strategy=SERIAL)], fleet)
    assert not report.ok and quorum.blocking_starts == 1
    assert "timeout was exceeded" in report.failures[0].message


def test_no_block_queues_the_start_and_leaves_the_marker_to_the_health_check() -> None:
    fleet = MemoryFleet(["master1"])
    c = cluster()
    options = RunOptions()
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    host = ctx.host("master1")
    host.vars["changed_files"] = {"/etc/demo.conf"}
    asyncio.run(Systemd("demo", restart_on=("/etc/demo.conf",), no_block=True).run(host))
    sent = fleet["master1"].commands
    assert "systemctl daemon-reload && systemctl enable -- demo && systemctl restart --no-block -- demo" in sent
    assert not any("is-active" in cmd for cmd in sent)  # nothing waits for the unit
    assert not any(cmd.startswith("rm -f") for cmd in sent)  # the restart stays owed until confirmed
    fleet["master1"].commands.clear()
    asyncio.run(Systemd("demo", restart_on=("/etc/demo.conf",)).run(host))
    assert "systemctl daemon-reload && systemctl enable -- demo && systemctl restart -- demo" in fleet["master1"].commands


# -- hints name commands the user can paste -------------------------------------------------------------------
def test_the_backup_hint_is_a_command_to_paste_for_this_cluster(tmp_path: Path) -> None:
    c = cluster()
    fleet = MemoryFleet(NAMES)
    for name in MEMBERS:
        fleet[name].on(r"etcdctl .*endpoint health", lambda h, m, s: (1, "", "connection refused"))
    options = RunOptions(extra={"to_location": str(tmp_path / "backups")})
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory),
                     command=shlex.join(["kubexm", "backup", "cluster", "--file=/srv/my cluster.yaml"]))
    task = Task("Backup", [BackupEtcd()], hosts=deploy_machine())
    report = asyncio.run(Executor(ctx).run_tasks([(Module("M", [task]), task)]))
    (failure,) = report.failures
    hint = failure.message[failure.message.index("`") + 1:failure.message.rindex("`")]
    assert shlex.split(hint) == ["kubexm", "run", "command", "-f", "/srv/my cluster.yaml", "--nodes", "etcd", "--",
                                 "systemctl", "status", "etcd"]


@pytest.mark.parametrize(("command", "selector"), [
    ("", ["-c", "prod"]),  # no command line known: the stored cluster by name
    ("kubexm backup cluster -c prod", ["-c", "prod"]),
    ("kubexm create cluster -f c.yaml --dry-run", ["-f", "c.yaml"]),
    ("kubexm create cluster -fc.yaml", ["-f", "c.yaml"]),
    ("kubexm run command -c prod -- grep -f patterns x", ["-c", "prod"]),  # the user's own -f is not kubexm's
])
def test_hint_commands_name_the_cluster_as_the_run_did(command: str, selector: list[str]) -> None:
    from kubexm.steps.common import kubexm_command

    c = cluster()
    ctx = RunContext(c, RunOptions(), bus=EventBus([lambda e: None]), command=command)
    hint = kubexm_command(ctx.host("master1"), "delete", "nodes", "--nodes", "master1")
    assert shlex.split(hint) == ["kubexm", "delete", "nodes", *selector, "--nodes", "master1"]

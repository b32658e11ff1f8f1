"""A unit restart owed for a changed file survives a failed run: the next run restarts again."""

from __future__ import annotations

import asyncio
import hashlib
import re
import types

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, Task, all_hosts
from kubexm.engine.step import Step
from kubexm.errors import StepFailed
from kubexm.hosts.pool import ConnectionPool
from kubexm.spec.loader import parse_cluster
from kubexm.steps.common import RESTART_PENDING_DIR, PutFile, Systemd, restart_marker

CLUSTER = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: pending}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n1]}
""")
CONF = "/etc/demo/demo.conf"
MARKER = f"{RESTART_PENDING_DIR}/demo.service"


class Unit:
    """systemd on the fake host: whether a restart works, and what the unit runs."""

    def __init__(self, host: MemoryHost) -> None:
        self.restart_fails = False
        self.running_config: bytes | None = None
        self.restarts = 0
        host.on(r"^test '!' -e (\S+) && systemctl is-enabled", self.check)
        host.on(r"^mkdir -p -- \S+ && touch -- (\S+)$", self.touch)
        host.on(r"^rm -f -- (\S+)$", self.remove)
        host.on(r"^systemctl daemon-reload && systemctl enable -- demo.service && systemctl (\S+) -- demo.service$",
                self.verb)
        host.on(r"systemctl is-active -q -- demo.service && exit 0", lambda h, m, s: (0, "", ""))
        host.on(r"^sha256sum (\S+) 2>/dev/null; stat -c '#stat %a %U:%G %n'", self.file_state)

    def file_state(self, h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        path = m.group(1)
        if path not in h.files:
            return 1, "", ""
        return 0, f"{hashlib.sha256(h.files[path]).hexdigest()}  {path}\n#stat {h.modes[path]:o} root:root {path}\n", ""

    def check(self, h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        return (1 if m.group(1) in h.files or self.running_config is None else 0), "", ""

    def touch(self, h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        h.files[m.group(1)] = b""
        return 0, "", ""

    def remove(self, h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        h.files.pop(m.group(1), None)
        return 0, "", ""

    def verb(self, h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        if m.group(1) == "restart":
            self.restarts += 1
            if self.restart_fails:
                return 1, "", "Job for demo.service failed"
        if m.group(1) == "restart" or self.running_config is None:
            self.running_config = h.files.get(CONF)
        return 0, "", ""


def go(fleet: MemoryFleet, steps: list[Step]) -> object:
    options = RunOptions()
    task = Task("Demo", steps, hosts=all_hosts())
    ctx = RunContext(CLUSTER, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(CLUSTER, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_tasks([(Module("M", [task]), task)]))


def test_a_failed_restart_is_retried_by_the_next_run_until_it_succeeds() -> None:
    fleet = MemoryFleet(["n1"])
    unit = Unit(fleet["n1"])
    steps = lambda text: [PutFile(text, CONF), Systemd("demo.service", restart_on=(CONF,))]  # noqa: E731
    assert go(fleet, steps(b"v1\n")).ok  # type: ignore[attr-defined]
    assert unit.running_config == b"v1\n" and MARKER not in fleet["n1"].files

    unit.restart_fails = True
    assert not go(fleet, steps(b"v2\n")).ok  # type: ignore[attr-defined]
    assert fleet["n1"].files[CONF] == b"v2\n" and unit.running_config == b"v1\n"
    assert MARKER in fleet["n1"].files  # the restart is owed

    # The config is in place now, so nothing in this run changes it: the marker alone brings the restart.
    unit.restart_fails = False
    report = go(fleet, steps(b"v2\n"))
    assert report.ok and unit.running_config == b"v2\n"  # type: ignore[attr-defined]
    assert MARKER not in fleet["n1"].files
    restarts = unit.restarts
    report = go(fleet, steps(b"v2\n"))
    assert report.ok and report.count("ok") == 2 and unit.restarts == restarts  # type: ignore[attr-defined]


def test_the_marker_is_written_before_the_restart() -> None:
    fleet = MemoryFleet(["n1"])
    Unit(fleet["n1"])
    go(fleet, [PutFile(b"v1\n", CONF), Systemd("demo.service", restart_on=(CONF,))])
    go(fleet, [PutFile(b"v2\n", CONF), Systemd("demo.service", restart_on=(CONF,))])
    cmds = fleet["n1"].commands
    touch = max(i for i, c in enumerate(cmds) if c.startswith("mkdir -p -- /var/lib/kubexm/restart-pending"))
    restart = max(i for i, c in enumerate(cmds) if "systemctl restart -- demo.service" in c)
    remove = max(i for i, c in enumerate(cmds) if c == f"rm -f -- {MARKER}")
    assert touch < restart < remove


@pytest.mark.parametrize("bad", ["..", ".hidden", "a/b", "../../etc/passwd", "x;reboot", "a b", "", "x" * 256])
def test_names_that_are_not_systemd_unit_names_are_refused(bad: str) -> None:
    with pytest.raises(StepFailed, match="not a systemd unit name"):
        restart_marker(bad)


@pytest.mark.parametrize("good", ["containerd", "cri-docker.socket", "getty@tty1.service", "dev-sda1.device",
                                  "sys-devices-x\\x2dy.device", "-leading-dash"])
def test_unit_names_map_to_one_file_in_the_marker_directory(good: str) -> None:
    path = restart_marker(good)
    assert path == f"{RESTART_PENDING_DIR}/{good}"


def test_the_checks_only_read() -> None:
    unit = Systemd("demo.service", restart_on=(CONF,))
    script = unit.check_script(types.SimpleNamespace(vars={}))  # type: ignore[arg-type]
    assert script is not None and script.readonly and MARKER in script.text

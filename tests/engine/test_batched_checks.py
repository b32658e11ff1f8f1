"""Check batching: one round trip for a host's checks, answers dropped as soon as the host changes; a file step
is "done" only when content, mode and owner all match, whether it was checked alone or in the batch."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
from collections.abc import Callable
from pathlib import Path

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, Task, all_hosts
from kubexm.engine.step import Step
from kubexm.hosts.pool import ConnectionPool
from kubexm.spec.loader import parse_cluster
from kubexm.steps.common import PutFile, Template

CLUSTER_TEXT = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: batch}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
    - {name: n2, address: 10.0.0.2}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n2]}
"""
CLUSTER = parse_cluster(CLUSTER_TEXT)

BATCH = "echo '#files'; "
# HostContext.file_state_command, alone (a single check) or inside the batch: the sha256 of every readable
# file, then "#stat <mode> <user>:<group> <path>" for every existing one.
FILE_STATE = re.compile(r"sha256sum ((?:\S+ )+)2>/dev/null; stat -c '#stat %a %U:%G %n' -- ((?:\S+ )+)2>/dev/null")
FIX = re.compile(r"^chown -- (\S+) (\S+) && chmod -- (\d+) \S+$")
Readable = Callable[[MemoryHost, str], bool]


def owners(h: MemoryHost) -> dict[str, str]:
    table: dict[str, str] = h.__dict__.setdefault("owners", {})
    return table


def answer_file_state(h: MemoryHost, m: re.Match[str], readable: Readable) -> tuple[int, str, str]:
    """What a shell would print: a file the caller cannot read has no checksum line, but stat still shows it."""
    out = ["#files"] if m.string.startswith(BATCH) else []
    hashed, stated = shlex.split(m.group(1)), shlex.split(m.group(2))
    out += [f"{hashlib.sha256(h.files[p]).hexdigest()}  {p}" for p in hashed if p in h.files and readable(h, p)]
    out += [f"#stat {h.modes.get(p, 0o644):o} {owners(h).get(p, 'root:root')} {p}" for p in stated if p in h.files]
    return 0, "".join(line + "\n" for line in out), ""


def fix_attrs(h: MemoryHost, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
    owners(h)[m.group(2)] = m.group(1)
    h.modes[m.group(2)] = int(m.group(3), 8)
    return 0, "", ""


def disks(fleet: MemoryFleet, readable: Readable = lambda h, p: True) -> None:
    for name in ("n1", "n2"):
        fleet[name].on(FILE_STATE.pattern, lambda h, m, s: answer_file_state(h, m, readable))
        fleet[name].on(FIX.pattern, fix_attrs)


def run(fleet: MemoryFleet, task: Task, *, dry_run: bool = False, cluster: object = CLUSTER) -> object:
    options = RunOptions(dry_run=dry_run)
    ctx = RunContext(cluster, options, bus=EventBus([lambda e: None]),  # type: ignore[arg-type]
                     pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))  # type: ignore[arg-type]
    return asyncio.run(Executor(ctx).run_tasks([(Module("M", [task]), task)]))


def batched_paths(command: str) -> list[str]:
    m = FILE_STATE.search(command)
    assert m is not None, command
    return shlex.split(m.group(1))


def test_an_idempotent_rerun_costs_one_command_per_host() -> None:
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(20)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    disks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    assert all(fleet["n1"].files[f"/srv/f{i}"] == f"content {i}\n".encode() for i in range(20))
    before = {n: len(fleet[n].commands) for n in ("n1", "n2")}
    report = run(fleet, task)
    assert report.ok and report.count("ok") == 40  # type: ignore[attr-defined]
    for n in ("n1", "n2"):
        new = [c for c in fleet[n].commands[before[n]:] if not c.lstrip().startswith("export LC_ALL")]
        assert len(new) == 1 and new[0].startswith(BATCH), new
        assert sorted(batched_paths(new[0])) == sorted(f"/srv/f{i}" for i in range(20))


def test_answers_are_dropped_once_the_host_changed() -> None:
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(5)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    disks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    fleet["n1"].files["/srv/f1"] = b"edited by hand\n"
    before = len(fleet["n1"].commands)
    report = run(fleet, task)
    assert report.ok and report.count("changed") == 1  # type: ignore[attr-defined]
    assert fleet["n1"].files["/srv/f1"] == b"content 1\n"
    # After the change, steps 2..4 checked one by one again.
    singles = [c for c in fleet["n1"].commands[before:] if c.startswith("sha256sum")]
    assert len(singles) >= 3


def file_steps(tmp_path: Path, mode: int) -> list[Step]:
    """Every kind of file-placing step in steps.common: bytes, a local file, a rendered template."""
    local = tmp_path / "local.conf"
    local.write_bytes(b"from a local file\n")
    return [PutFile(b"content 0\n", "/srv/f0", mode), PutFile(local, "/srv/f1", mode),
            Template("kubelet/kubelet.service.j2", "/srv/f2", mode, (("runtime_unit", "containerd.service"),))]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
@pytest.mark.parametrize("drift", ["mode", "owner"])
@pytest.mark.parametrize("target", [0, 1, 2], ids=["bytes", "local-file", "template"])
def test_a_right_file_with_the_wrong_mode_or_owner_would_change_and_is_fixed(
        tmp_path: Path, batched: bool, drift: str, target: int) -> None:
    steps = file_steps(tmp_path, 0o600)
    # A task of one step is checked alone; several are checked in one batched command.
    chosen = steps if batched else [steps[target]]
    task = Task("Files", chosen, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    disks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    host, path = fleet["n1"], f"/srv/f{target}"
    content = host.files[path]
    assert host.modes[path] == 0o600
    if drift == "mode":
        host.modes[path] = 0o644  # someone opened up a secret
    else:
        owners(host)[path] = "nobody:nogroup"

    before = len(host.commands)
    plan = run(fleet, task, dry_run=True)
    assert plan.ok and plan.count("would-change") == 1  # type: ignore[attr-defined]
    [pending] = [r for r in plan.records if r.status == "would-change"]  # type: ignore[attr-defined]
    assert (pending.host, pending.step) == ("n1", type(steps[target]).__name__)
    checks = host.commands[before:]
    assert any(c.startswith(BATCH) for c in checks) is batched, checks
    # The plan changed nothing.
    assert (host.modes[path], owners(host).get(path, "root:root")) == \
        ((0o644, "root:root") if drift == "mode" else (0o600, "nobody:nogroup"))

    before = len(host.commands)
    report = run(fleet, task)
    assert report.ok and report.count("changed") == 1  # type: ignore[attr-defined]
    fixes = [c for c in host.commands[before:] if c.startswith("chown")]
    assert fixes == [f"chown -- root:root {path} && chmod -- 600 {path}"]
    assert f"<put {path}>" not in host.commands[before:]  # the content was right: not sent again
    assert host.files[path] == content
    assert host.modes[path] == 0o600 and owners(host).get(path, "root:root") == "root:root"
    report = run(fleet, task)
    assert report.ok and report.count("changed") == 0 and report.count("ok") == 2 * len(chosen)  # type: ignore[attr-defined]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "single"])
def test_wrong_content_with_the_right_mode_is_not_done(batched: bool, tmp_path: Path) -> None:
    steps = file_steps(tmp_path, 0o640)
    task = Task("Files", steps if batched else steps[:1], hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    disks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    fleet["n2"].files["/srv/f0"] = b"edited by hand\n"
    plan = run(fleet, task, dry_run=True)
    assert [(r.host, r.step) for r in plan.records if r.status == "would-change"] == [("n2", "PutFile")]  # type: ignore[attr-defined]
    assert run(fleet, task).count("changed") == 1  # type: ignore[attr-defined]
    assert fleet["n2"].files["/srv/f0"] == b"content 0\n" and fleet["n2"].modes["/srv/f0"] == 0o640


def test_a_non_root_login_confirms_readable_files_without_sudo() -> None:
    # sudo costs each host tens of milliseconds: a re-run as a non-root user checks what it can read as
    # itself, and asks only the rest as root. A file it cannot read is never taken as "done".
    cluster = parse_cluster(CLUSTER_TEXT.replace("address: 10.0.0.1}", "address: 10.0.0.1, user: deploy}")
                            .replace("address: 10.0.0.2}", "address: 10.0.0.2, user: deploy}"))
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(6)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    root_only = {"/srv/f4", "/srv/f5"}
    disks(fleet, lambda h, path: path not in root_only or h.sudo[-1])

    assert run(fleet, task, cluster=cluster).ok  # type: ignore[attr-defined]
    before = len(fleet["n1"].commands)
    report = run(fleet, task, cluster=cluster)
    assert report.ok and report.count("ok") == 12 and report.count("changed") == 0  # type: ignore[attr-defined]
    checks = [(c, sudo) for c, sudo in zip(fleet["n1"].commands[before:], fleet["n1"].sudo[before:], strict=True)
              if c.startswith(BATCH)]
    # One round as the login user for all six, then one as root for the two it could not read.
    assert [sudo for _, sudo in checks] == [False, True]
    assert batched_paths(checks[1][0]) == ["/srv/f4", "/srv/f5"]
    # All readable: no sudo at all.
    root_only.clear()
    before = len(fleet["n1"].commands)
    assert run(fleet, task, cluster=cluster).ok  # type: ignore[attr-defined]
    assert [s for c, s in zip(fleet["n1"].commands[before:], fleet["n1"].sudo[before:], strict=True)
            if c.startswith(BATCH)] == [False]

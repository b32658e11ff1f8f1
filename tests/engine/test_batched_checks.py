"""Check batching: one round trip for a host's checks, answers dropped as soon as the host changes."""

from __future__ import annotations

import asyncio
import re
import shlex
from collections.abc import Callable

from support.memory import MemoryFleet

from kubexm.engine import EventBus, Executor, Module, RunContext, RunOptions, Task, all_hosts
from kubexm.hosts.pool import ConnectionPool
from kubexm.spec.loader import parse_cluster
from kubexm.steps.common import PutFile

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


BATCH = "if ( test \"$(sha256sum < "
# One file check of the batch, as steps.common builds it (content on stdin, then mode and owner).
FILE_CHECK = re.compile(r"""if \( test "\$\(sha256sum < (\S+) 2>/dev/null\)" = '(\w+)  -' && test "\$\(stat -c '%a %U:%G' """
                        r"""-- \S+ 2>/dev/null\)" = '([^']*)' \) >/dev/null 2>&1; then echo (\d+)=0; else echo \d+=1; fi""")


def file_checks(h: object, m: re.Match[str], readable: Callable[[object, str], bool]) -> tuple[int, str, str]:
    """Answer the batched file checks from the in-memory files (content, mode; owner always root:root), as a
    shell would: an unreadable file's content never matches."""
    import hashlib

    files: dict[str, bytes] = h.files  # type: ignore[attr-defined]
    modes: dict[str, int] = h.modes  # type: ignore[attr-defined]
    out = []
    for path, digest, attrs, index in FILE_CHECK.findall(m.string):
        path = shlex.split(path)[0]
        ok = (path in files and readable(h, path) and hashlib.sha256(files[path]).hexdigest() == digest
              and f"{modes.get(path, 0o644):o} root:root" == attrs)
        out.append(f"{index}={0 if ok else 1}")
    return 0, "\n".join(out) + "\n", ""


def sha_checks(fleet: MemoryFleet, readable: Callable[[object, str], bool] = lambda h, p: True) -> None:
    for name in ("n1", "n2"):
        fleet[name].on(r"^if \( test ", lambda h, m, s: file_checks(h, m, readable))
        # HostContext.file_state: sha256sum of the file, then its mode and owner.
        fleet[name].on(r"^sha256sum (\S+) 2>/dev/null; stat -c '#stat %a %U:%G %n' -- \S+ 2>/dev/null$",
                       lambda h, m, s: file_state(h, shlex.split(m.group(1))[0]))


def file_state(h: object, path: str) -> tuple[int, str, str]:
    import hashlib

    files: dict[str, bytes] = h.files  # type: ignore[attr-defined]
    modes: dict[str, int] = h.modes  # type: ignore[attr-defined]
    if path not in files:
        return 1, "", ""
    return 0, f"{hashlib.sha256(files[path]).hexdigest()}  {path}\n#stat {modes[path]:o} root:root {path}\n", ""


def run(fleet: MemoryFleet, task: Task) -> object:
    options = RunOptions()
    ctx = RunContext(CLUSTER, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(CLUSTER, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_tasks([(Module("M", [task]), task)]))


def test_an_idempotent_rerun_costs_one_command_per_host() -> None:
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(20)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    sha_checks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    assert all(fleet["n1"].files[f"/srv/f{i}"] == f"content {i}\n".encode() for i in range(20))
    before = {n: len(fleet[n].commands) for n in ("n1", "n2")}
    report = run(fleet, task)
    assert report.ok and report.count("ok") == 40  # type: ignore[attr-defined]
    for n in ("n1", "n2"):
        new = [c for c in fleet[n].commands[before[n]:] if not c.lstrip().startswith("export LC_ALL")]
        assert len(new) == 1 and new[0].startswith(BATCH), new


def test_answers_are_dropped_once_the_host_changed() -> None:
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(5)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    sha_checks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    fleet["n1"].files["/srv/f1"] = b"edited by hand\n"
    before = len(fleet["n1"].commands)
    report = run(fleet, task)
    assert report.ok and report.count("changed") == 1  # type: ignore[attr-defined]
    assert fleet["n1"].files["/srv/f1"] == b"content 1\n"
    # After the change, steps 2..4 checked one by one again.
    singles = [c for c in fleet["n1"].commands[before:] if c.startswith("sha256sum")]
    assert len(singles) >= 3


def test_a_right_file_with_the_wrong_mode_is_not_done_and_gets_fixed() -> None:
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}", 0o600) for i in range(3)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    sha_checks(fleet)
    assert run(fleet, task).ok  # type: ignore[attr-defined]
    assert fleet["n1"].modes["/srv/f1"] == 0o600
    fleet["n1"].modes["/srv/f1"] = 0o644  # someone opened up a secret

    def fix(h: object, m: re.Match[str], stdin: object) -> tuple[int, str, str]:
        h.modes[m.group(1)] = int(m.group(2), 8)  # type: ignore[attr-defined]
        return 0, "", ""

    fleet["n1"].on(r"^chown -- root:root (\S+) && chmod -- (\d+) \S+$", fix)
    before = len(fleet["n1"].commands)
    report = run(fleet, task)
    assert report.ok and report.count("changed") == 1  # type: ignore[attr-defined]
    fixes = [c for c in fleet["n1"].commands[before:] if c.startswith("chown")]
    assert fixes == ["chown -- root:root /srv/f1 && chmod -- 600 /srv/f1"]
    assert "<put /srv/f1>" not in fleet["n1"].commands[before:]  # the content was right: not sent again
    assert fleet["n1"].modes["/srv/f1"] == 0o600
    report = run(fleet, task)
    assert report.ok and report.count("ok") == 6  # type: ignore[attr-defined]


def test_a_non_root_login_confirms_readable_files_without_sudo() -> None:
    # sudo costs each host tens of milliseconds: a re-run as a non-root user checks what it can read as
    # itself, and asks only the rest as root. A file it cannot read is never taken as "done".
    cluster = parse_cluster(CLUSTER_TEXT.replace("address: 10.0.0.1}", "address: 10.0.0.1, user: deploy}")
                            .replace("address: 10.0.0.2}", "address: 10.0.0.2, user: deploy}"))
    steps = [PutFile(f"content {i}\n".encode(), f"/srv/f{i}") for i in range(6)]
    task = Task("Files", steps, hosts=all_hosts())
    fleet = MemoryFleet(["n1", "n2"])
    root_only = {"/srv/f4", "/srv/f5"}
    sha_checks(fleet, lambda h, path: path not in root_only or h.sudo[-1])  # type: ignore[attr-defined]
    options = RunOptions()

    def go() -> object:
        ctx = RunContext(cluster, options, bus=EventBus([lambda e: None]),
                         pool=ConnectionPool(cluster, options.connect, factory=fleet.factory))
        return asyncio.run(Executor(ctx).run_tasks([(Module("M", [task]), task)]))

    assert go().ok  # type: ignore[attr-defined]
    before = len(fleet["n1"].commands)
    report = go()
    assert report.ok and report.count("ok") == 12 and report.count("changed") == 0  # type: ignore[attr-defined]
    checks = [(c, sudo) for c, sudo in zip(fleet["n1"].commands[before:], fleet["n1"].sudo[before:], strict=True)
              if c.startswith(BATCH)]
    # One round as the login user for all six, then one as root for the two it could not read.
    assert [sudo for _, sudo in checks] == [False, True]
    assert [path for path, *_ in FILE_CHECK.findall(checks[1][0])] == ["/srv/f4", "/srv/f5"]
    # All readable: no sudo at all.
    root_only.clear()
    before = len(fleet["n1"].commands)
    assert go().ok  # type: ignore[attr-defined]
    assert [s for c, s in zip(fleet["n1"].commands[before:], fleet["n1"].sudo[before:], strict=True)
            if c.startswith(BATCH)] == [False]

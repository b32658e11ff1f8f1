"""The fault workloads' pure helpers: which hosts are broken, and which hosts each tool's output names as failed
(the bench checks that a run names exactly the broken hosts, so a parser that misses a format hides a fault)."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.faults import default_count, failed_hosts, pick

NAMES = [f"h{i:03d}" for i in range(1, 1001)]


@pytest.mark.parametrize("total, count", [(1000, 100), (100, 10), (50, 5), (5, 1), (6, 5), (2, 1), (7, 3)])
def test_pick_spreads_distinct_hosts_and_spares_the_first(total: int, count: int) -> None:
    names = NAMES[:total]
    picked = pick(names, count)
    assert len(set(picked)) == count
    assert names[0] not in picked
    assert set(picked) <= set(names)
    if count * 2 <= total:  # spread: no two neighbours, and both halves of the list are hit
        positions = [names.index(n) for n in picked]
        assert all(b - a >= 2 for a, b in itertools.pairwise(positions))
        assert positions[-1] >= total // 2


@pytest.mark.parametrize("count", [0, 5, 6])
def test_pick_refuses_counts_that_leave_no_healthy_or_no_faulty_host(count: int) -> None:
    with pytest.raises(ValueError, match="--fault-count"):
        pick(NAMES[:5], count)


def test_default_count_is_a_tenth_and_at_least_one() -> None:
    assert [default_count(n) for n in (1000, 100, 50, 5)] == [100, 10, 5, 1]


KUBEXM_CLI = """AdhocModule ad-hoc commands
  RunCommand on 6 host(s), all at once
== h002 (exit 0)
    ↻ h003: h003: connection lost while running a command: SSH connection closed; retry 1/3 in 0.5s
2 failure(s) — the run stopped after task RunCommand
  ✗ h003 RunCommand / Command: h003: cannot connect to 10.214.1.3:22: connection refused
  ✗ h1000 RunCommand / Command: h1000: cannot connect to 10.214.4.232:22: timed out (gave up after 3 retries)
failed: 4 changed, 2 failed (run 2df53ae830aa)
"""

PYINFRA = """--> Connecting to hosts...
    [h003] Could not connect ([Errno None] Unable to connect to port 22 on 10.214.1.3)
    No host key for 10.214.1.6 found in known_hosts
    [h006] Connected
    [h007] Could not connect (timed out)
--> Starting operation: server.shell (commands=['true'])
    [h005] Success
    [h004] Error: executed 0/1 commands
--> Results:
    Operation                          Hosts   Success   Error   No Change
"""

ANSIBLE = """PLAY RECAP *********************************************************************
h001                       : ok=1    changed=1    unreachable=0    failed=0    skipped=0    rescued=0    ignored=0
h002                       : ok=0    changed=0    unreachable=1    failed=0    skipped=0    rescued=0    ignored=0
h003                       : ok=0    changed=0    unreachable=0    failed=1    skipped=0    rescued=0    ignored=0
"""


@pytest.mark.parametrize("output, named", [
    (KUBEXM_CLI, {"h003", "h1000"}),
    ("failed hosts: h003 h017\n2 of 20 hosts failed, e.g. ConnectionRefusedError: [Errno 111] refused\n", {"h003", "h017"}),
    (PYINFRA, {"h003", "h007", "h004"}),
    ("    \x1b[1m[h009]\x1b[0m \x1b[31mCould not connect (timed out)\x1b[0m\n", {"h009"}),  # pyinfra in colour
    (ANSIBLE, {"h002", "h003"}),
    ("AdhocModule ad-hoc commands\n== h001 (exit 0)\ndone: 6 changed (run 537c92404584)\n", set()),
])
def test_failed_hosts_reads_every_tools_report(output: str, named: set[str]) -> None:
    assert failed_hosts(output) == named

"""`kubexm health cluster` and `kubexm repair` on real lab nodes: what this machine can run (the OS settings,
a TLS etcd cluster and containerd; no Kubernetes binaries exist here) is reported all ok, then broken one
fault at a time: a stopped etcd member, a partitioned node, a full file system, a stopped runtime. `repair
--yes` starts what was stopped and the report is all ok again."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(lab_env: Path) -> Iterator[Lab]:
    lab = Lab("kxhealth")
    try:
        lab.up(3, "10.213.87.0/24")
        res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "os,etcd,runtime",
                     timeout=1500)
        assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]
        yield lab
    finally:
        lab.down()


def health(lab: Lab, *args: str) -> tuple[int, dict[str, Any]]:
    res = kubexm("health", "cluster", "-f", str(lab.cluster_file), "-o", "json", *args, timeout=300)
    assert "Traceback" not in res.stderr, res.stderr
    try:
        return res.returncode, json.loads(res.stdout)
    except ValueError:
        raise AssertionError(res.stdout[-3000:] + res.stderr[-2000:]) from None


def bad(doc: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """Checks not ok, except load warnings: the lab's nodes share this machine's CPUs with everything else
    running here, so their load is the machine's, not something the lab did."""
    return [(c["status"], c["target"], c["id"], c["reason"]) for c in doc["checks"]
            if c["status"] != "ok" and not (c["id"] == "node.load" and c["status"] == "warn")]


def check(doc: dict[str, Any], check_id: str, target: str) -> dict[str, Any]:
    found = [c for c in doc["checks"] if c["id"] == check_id and c["target"] == target]
    assert len(found) == 1, bad(doc)
    return found[0]


def assert_all_ok(lab: Lab, settle: float = 0) -> dict[str, Any]:
    """The report is all ok (within ``settle`` seconds: etcd re-elects after a member comes back)."""
    deadline = time.monotonic() + settle
    while True:
        code, doc = health(lab)
        if not bad(doc) or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert bad(doc) == [], json.dumps(doc["checks"], indent=1)[-6000:]
    assert code in (0, 3) and code == (3 if any(c["status"] == "warn" for c in doc["checks"]) else 0)
    return doc


def repair(lab: Lab) -> str:
    res = kubexm("repair", "-f", str(lab.cluster_file), "--yes", timeout=900)
    out = res.stdout + res.stderr
    assert "Traceback" not in out, out[-4000:]
    assert res.returncode in (0, 3), out[-5000:]  # 3: the load warnings bad() explains
    assert "repair failed" not in out, out[-5000:]
    return out


def test_a_healthy_lab_reports_all_ok(lab: Lab) -> None:
    doc = assert_all_ok(lab)
    assert [n["name"] for n in doc["nodes"]] == ["node1", "node2", "node3"]
    for node in doc["nodes"]:
        assert node["reachable"] and node["connect_ms"] is not None
        assert {u["unit"]: u["active_state"] for u in node["units"]}["etcd"] == "active"
        assert {u["unit"]: u["active_state"] for u in node["units"]}["containerd"] == "active"
    assert doc["etcd"]["leader"] in ("node1", "node2", "node3")
    assert sorted(m["name"] for m in doc["etcd"]["members"]) == ["node1", "node2", "node3"]
    assert check(doc, "etcd.quorum", "etcd")["reason"] == "3 of 3 members answer (quorum needs 2)"
    # No Kubernetes here: the section says so in one line and the rest stands.
    assert doc["kubernetes"]["reachable"] is False and "no API server answers" in doc["kubernetes"]["message"]
    # The certificates kubexm placed for etcd are read back with days left.
    assert {r["name"] for r in doc["certificates"] if r["host"] == "node2"} >= {"etcd-server", "etcd-peer"}
    table = kubexm("health", "cluster", "-f", str(lab.cluster_file))
    assert table.returncode in (0, 3) and "Kubernetes: no API server answers" in table.stdout, table.stdout[-3000:]


def test_a_failed_unit_kubexm_does_not_manage_is_named(lab: Lab) -> None:
    """systemd's own list of failed units comes from the same one systemctl call as the managed units."""
    ssh(lab, "node3", "systemd-run --unit=kx-broken --quiet false; sleep 1")
    try:
        code, doc = health(lab)
        failed = check(doc, "node.failed-units", "node3")
        assert failed["status"] == "warn" and failed["data"]["units"] == ["kx-broken.service"], failed
        assert check(doc, "node.failed-units", "node1")["status"] == "ok"
        assert code == 3 or any(c["status"] == "fail" for c in doc["checks"])
    finally:
        ssh(lab, "node3", "systemctl reset-failed kx-broken")


def test_a_stopped_etcd_member_fails_by_name_and_repair_starts_it(lab: Lab) -> None:
    assert_all_ok(lab, settle=120)  # from a settled cluster (etcd re-elects after the previous fault)
    ssh(lab, "node2", "systemctl stop etcd")
    code, doc = health(lab)
    assert code == 4
    member = check(doc, "etcd.member", "node2")
    assert member["status"] == "fail" and "etcd member node2 on node node2 does not answer" in member["reason"]
    assert check(doc, "unit.etcd", "node2")["status"] == "fail"
    assert check(doc, "etcd.quorum", "etcd")["status"] == "ok"
    out = repair(lab)
    assert "start etcd on node2" in out
    assert ssh(lab, "node2", "systemctl is-active etcd").strip() == "active"
    assert_all_ok(lab, settle=60)


def test_a_partitioned_node_is_named_unreachable_and_the_rest_is_reported(lab: Lab) -> None:
    assert_all_ok(lab, settle=120)  # from a settled cluster (etcd re-elects after the previous fault)
    lab.partition("node3")
    try:
        code, doc = health(lab)
    finally:
        lab.partition("node3", cut=False)
    assert code == 4
    reach = check(doc, "node.reachable", "node3")
    assert reach["status"] == "fail" and "node3" in reach["reason"] and "unreachable" in reach["reason"]
    assert check(doc, "etcd.member", "node3")["status"] == "fail"
    # The others are still reported in full. (Their etcd may be slow for a moment: a partitioned leader means
    # an election, and that is what the report then says.)
    for node in ("node1", "node2"):
        assert check(doc, "node.reachable", node)["status"] == "ok"
        assert check(doc, "unit.etcd", node)["status"] == "ok"
        assert "/" in {c["data"]["path"] for c in doc["checks"] if c["id"] == "node.disk" and c["target"] == node}
    assert check(doc, "etcd.quorum", "etcd")["reason"] == "2 of 3 members answer (quorum needs 2)"
    assert_all_ok(lab, settle=120)


def test_a_full_file_system_under_var_fails_with_its_path(lab: Lab) -> None:
    assert_all_ok(lab, settle=120)  # from a settled cluster (etcd re-elects after the previous fault)
    # kubelet's root, on a file system of its own and filled past the fail threshold (90%).
    ssh(lab, "node2", "mkdir -p /var/lib/kubelet && mount -t tmpfs -o size=8m kxhealth-fill /var/lib/kubelet && "
                      "fallocate -l 7800k /var/lib/kubelet/fill")
    try:
        code, doc = health(lab)
    finally:
        ssh(lab, "node2", "umount /var/lib/kubelet && rmdir /var/lib/kubelet")
    assert code == 4
    disks = [c for c in doc["checks"] if c["id"] == "node.disk" and c["target"] == "node2"
             and c["data"]["path"] == "/var/lib/kubelet"]
    assert len(disks) == 1 and disks[0]["status"] == "fail", bad(doc)
    assert disks[0]["reason"].startswith("/var/lib/kubelet (kubelet root, on /var/lib/kubelet): 9")
    # Nothing else fails (a slow etcd health check on this shared machine may warn; it is not this fault).
    assert [c for c in bad(doc) if c[0] == "fail" and c[2] != "node.disk"] == []
    assert_all_ok(lab, settle=60)


def test_a_stopped_runtime_fails_and_repair_brings_it_back(lab: Lab) -> None:
    assert_all_ok(lab, settle=120)  # from a settled cluster (etcd re-elects after the previous fault)
    ssh(lab, "node1", "systemctl stop containerd")
    code, doc = health(lab)
    assert code == 4
    unit = check(doc, "unit.containerd", "node1")
    assert unit["status"] == "fail" and "containerd is stopped" in unit["reason"]
    out = repair(lab)
    assert "start containerd on node1" in out and "health after the repair" in out
    assert ssh(lab, "node1", "systemctl is-active containerd").strip() == "active"
    assert_all_ok(lab, settle=60)

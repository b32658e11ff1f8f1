"""`kubexm health cluster` judged on fake nodes that answer the probe as real ones do (see health_fakes)."""

from __future__ import annotations

import asyncio
import json

import pytest

from kubexm.diagnostics import health_checks as hc
from kubexm.diagnostics.health import collect, node_probe
from kubexm.diagnostics.health_checks import Report, evaluate
from kubexm.engine import RunOptions
from kubexm.hosts.shell import UnsafeCommand, shell

try:
    from .health_fakes import IDS, Fleet, cluster, unit
except ImportError:  # collected without a package (no tests/diagnostics/__init__.py)
    from health_fakes import IDS, Fleet, cluster, unit  # type: ignore[no-redef]

COMMAND = "kubexm health cluster -f /srv/hc.yaml"


def report(fleet: Fleet, nodes: list[str] | None = None) -> Report:
    collected = asyncio.run(collect(fleet.cluster, RunOptions(nodes=nodes), factory=fleet.fleet.factory,
                                    command=COMMAND))
    return evaluate(collected, COMMAND)


def checks(r: Report, check_id: str, target: str | None = None) -> list[hc.Check]:
    return [c for c in r.checks if c.id == check_id and (target is None or c.target == target)]


def one(r: Report, check_id: str, target: str | None = None) -> hc.Check:
    found = checks(r, check_id, target)
    assert len(found) == 1, [(c.id, c.target, c.status, c.reason) for c in r.checks]
    return found[0]


def problems(r: Report) -> list[tuple[str, str, str]]:
    return [(c.status, c.target, c.id) for c in r.checks if c.status != "ok"]


@pytest.fixture
def fleet() -> Fleet:
    return Fleet(cluster())


def test_a_healthy_cluster_is_all_ok_from_one_read_only_command_per_node(fleet: Fleet) -> None:
    r = report(fleet)
    assert problems(r) == []
    assert r.status == "ok" and r.exit_code == 0
    for name in ("node1", "node2", "node3"):
        host = fleet.host(name)
        assert len(host.commands) == 1, host.commands  # one round: everything in one command
        assert one(r, "unit.etcd", name).data["active_state"] == "active"
        assert one(r, "etcd.member", name).data["latency_ms"] == pytest.approx(1.553943)
        assert {c.data["path"] for c in checks(r, "node.disk", name)} == {"/", "/var/lib/etcd", "/var/lib/containerd"}
    # kubelet was never installed anywhere: said once, not a failure per node.
    assert "installed on no node" in one(r, "unit.kubelet", "cluster").reason
    assert one(r, "etcd.leader").reason == "leader node1"
    assert one(r, "etcd.quorum").reason == "3 of 3 members answer (quorum needs 2)"
    assert r.kubernetes["reachable"] is False and "not installed" in r.kubernetes["message"]
    # Only the first control-plane node asked the API server.
    assert "kubectl" in fleet.host("node1").commands[0] and "kubectl" not in fleet.host("node2").commands[0]


def test_the_probe_is_verified_read_only() -> None:
    cmd, _ = node_probe(cluster(), "node1", kube=True)
    assert cmd.readonly
    # The verification is real: the same template with a writing program is refused.
    with pytest.raises(UnsafeCommand):
        shell("echo '#kx-section df'; for p in {paths}; do rm -f \"$p\"; done", paths=["/x"], readonly=True)


def test_the_json_document_is_versioned_and_complete(fleet: Fleet) -> None:
    doc = json.loads(json.dumps(report(fleet).document()))
    assert doc["kind"] == "HealthReport" and doc["apiVersion"] == "kubexm.io/health/v1"
    assert set(doc) == {"kind", "apiVersion", "cluster", "generated_at", "duration_seconds", "status", "summary",
                        "all_nodes", "nodes", "etcd", "kubernetes", "certificates", "checks"}
    assert doc["status"] == "ok" and doc["summary"]["fail"] == 0
    node = doc["nodes"][0]
    assert node["name"] == "node1" and node["reachable"] is True and node["kernel"] == "6.1.0-28-amd64"
    assert {u["unit"]: u["active_state"] for u in node["units"]} == {"etcd": "active", "containerd": "active",
                                                                     "kubelet": "inactive"}
    root = next(f for f in node["filesystems"] if f["path"] == "/")
    assert root["used_percent"] == pytest.approx(23.2, abs=0.1)
    assert doc["etcd"]["leader"] == "node1" and doc["etcd"]["raft_index_spread"] == 0
    assert {m["id"] for m in doc["etcd"]["members"]} == {str(i) for i in IDS.values()}
    for c in doc["checks"]:
        assert set(c) == {"section", "id", "target", "status", "reason", "fix", "data"}
        assert c["status"] in ("ok", "warn", "fail") and c["reason"]


def test_stopped_etcd_fails_naming_the_node_and_member_and_quorum_still_holds(fleet: Fleet) -> None:
    fleet["node2"].etcd_up = False
    fleet["node2"].units["etcd"] = unit("inactive", "dead")
    r = report(fleet)
    member = one(r, "etcd.member", "node2")
    assert member.status == "fail"
    assert "etcd member node2 on node node2 does not answer: the etcd unit is inactive" in member.reason
    assert one(r, "unit.etcd", "node2").status == "fail" and "kubexm repair -f /srv/hc.yaml" in member.fix
    assert one(r, "etcd.quorum").status == "ok"  # 2 of 3 answer
    assert r.exit_code == 4


def test_an_unreachable_node_is_named_and_the_others_are_still_reported(fleet: Fleet) -> None:
    fleet.host("node3").down = True
    r = report(fleet)
    reach = one(r, "node.reachable", "node3")
    assert reach.status == "fail" and "node3 (10.0.0.3) is unreachable" in reach.reason
    assert one(r, "etcd.member", "node3").status == "fail"
    assert all(c.status == "ok" for c in r.checks if c.target in ("node1", "node2"))
    assert one(r, "etcd.quorum").reason == "2 of 3 members answer (quorum needs 2)"
    assert r.exit_code == 4


@pytest.mark.parametrize(("used", "status"), [(79, "ok"), (85, "warn"), (95, "fail")])
def test_disk_use_of_the_etcd_data_dir_is_judged_with_its_path(fleet: Fleet, used: int, status: str) -> None:
    size = 1_000_000
    fleet["node2"].df["/var/lib/etcd"] = (size, used * size // 100, size - used * size // 100, 5000, 10, 4990,
                                          "/var/lib/etcd")
    r = report(fleet)
    disk = next(c for c in checks(r, "node.disk", "node2") if c.data["path"] == "/var/lib/etcd")
    assert disk.status == status
    assert disk.reason.startswith(f"/var/lib/etcd (etcd data dir, on /var/lib/etcd): {used}% used")
    assert r.exit_code == hc.EXIT[status]


def test_a_data_dir_with_a_space_is_one_path() -> None:
    fleet = Fleet(cluster('  etcd:\n    dataDir: "/var/lib/etcd data"\n'))
    fleet["node1"].df["/var/lib/etcd data"] = (1000, 950, 50, 100, 1, 99, "/var/lib/etcd data")
    r = report(fleet)
    disk = next(c for c in checks(r, "node.disk", "node1") if c.data["path"] == "/var/lib/etcd data")
    assert disk.status == "fail" and disk.reason == "/var/lib/etcd data (etcd data dir, on /var/lib/etcd data): 95% used"


def test_inodes_running_out_fail(fleet: Fleet) -> None:
    fleet["node1"].df["/"] = (20511312, 4513492, 14934448, 1310720, 1250000, 60720, "/")
    r = report(fleet)
    inodes = next(c for c in checks(r, "node.inodes", "node1") if c.data["path"] == "/")
    assert inodes.status == "fail" and "95% of inodes used" in inodes.reason


def test_a_failed_runtime_and_a_restarting_unit(fleet: Fleet) -> None:
    fleet["node3"].units["containerd"] = unit("failed", "failed", restarts=5, result="exit-code")
    fleet["node1"].units["etcd"] = unit(restarts=4)
    fleet["node2"].failed_other = ["apt-daily.service"]
    r = report(fleet)
    runtime = one(r, "unit.containerd", "node3")
    assert runtime.status == "fail" and runtime.reason == "containerd failed on node3 (result exit-code, 5 restart(s))"
    assert one(r, "unit.etcd", "node1").status == "warn" and one(r, "unit.etcd", "node1").data["restarts"] == 4
    other = one(r, "node.failed-units", "node2")
    assert other.status == "warn" and "apt-daily.service" in other.reason
    # containerd's own failure is its unit check, not listed again among the unmanaged failed units
    assert one(r, "node.failed-units", "node3").status == "ok"


def test_a_host_without_systemd_says_so_once(fleet: Fleet) -> None:
    fleet.host("node3").on(r"#kx-section time", lambda h, m, s: (0, fleet._answer(h, m, s)[1].replace(
        "#kx-section units\n", "#kx-section units\nSystem has not been booted with systemd as init system (PID 1). "
        "Can't operate.\nFailed to connect to bus: Host is down\n#kx-section ignored\n"), ""))
    fleet.host("node3").handlers.reverse()  # the broken answer first
    r = report(fleet)
    units = one(r, "node.units", "node3")
    assert units.status == "warn" and 'systemctl says "Failed to connect to bus: Host is down"' in units.reason
    assert checks(r, "unit.etcd", "node3") == []


def test_a_unit_missing_on_one_node_only_is_drift(fleet: Fleet) -> None:
    del fleet["node2"].units["containerd"]
    r = report(fleet)
    missing = one(r, "unit.containerd", "node2")
    assert missing.status == "fail" and "it is on node1, node3" in missing.reason


def test_etcd_alarms_quota_raft_spread_learners_and_skew(fleet: Fleet) -> None:
    fleet["node1"].alarms = [{"memberID": IDS["node1"], "alarm": 1}]
    fleet["node1"].db_size = int(1.9 * 1024 ** 3)
    fleet["node3"].raft_index = 4182 - 2500
    fleet["node3"].etcd_version = "3.5.9"
    fleet["node2"].took = "250.5ms"
    r = report(fleet)
    assert one(r, "etcd.alarms").status == "fail" and one(r, "etcd.alarms").reason == "alarms: NOSPACE on node1"
    db = one(r, "etcd.db-size")
    assert db.status == "fail" and "(95%)" in db.reason
    assert one(r, "etcd.raft").status == "warn" and "2500 (node3 is behind)" in one(r, "etcd.raft").reason
    skew = one(r, "etcd.version-skew")
    assert skew.status == "warn" and "node3 3.5.9" in skew.reason
    assert one(r, "etcd.member", "node2").status == "warn"  # 250 ms health round trip


def test_a_bigger_quota_from_the_spec_is_used() -> None:
    fleet = Fleet(cluster("  etcd:\n    extraArgs:\n      quota-backend-bytes: '8589934592'\n"))
    fleet["node1"].db_size = int(1.9 * 1024 ** 3)
    assert one(report(fleet), "etcd.db-size").status == "ok"


def test_no_leader_fails(fleet: Fleet) -> None:
    fleet["node3"].leader = "node3"
    r = report(fleet)
    assert one(r, "etcd.leader").status == "fail"


@pytest.mark.parametrize(("offset", "status"), [(0.3, "ok"), (2.0, "warn"), (-7.0, "fail")])
def test_clock_offset(fleet: Fleet, offset: float, status: str) -> None:
    fleet["node2"].clock_offset = offset
    clock = one(report(fleet), "node.clock", "node2")
    assert clock.status == status
    assert clock.data["offset_seconds"] == pytest.approx(offset, abs=0.5)
    if status != "ok":
        assert "kubexm run task SyncTime -f /srv/hc.yaml --nodes node2 -y" in clock.fix


def test_a_slow_round_trip_is_not_read_as_a_skewed_clock(fleet: Fleet) -> None:
    """The answer takes 2.5 s to arrive (a loaded node, a slow link): `date` ran somewhere in that window, so
    the offset is reported with its uncertainty and judged by the least it can be."""
    fleet.host("node2").delay = 2.5
    clock = one(report(fleet), "node.clock", "node2")
    assert clock.status == "ok", clock.reason
    assert clock.data["uncertainty_seconds"] >= 1.2 and abs(clock.data["offset_seconds"]) <= clock.data[
        "uncertainty_seconds"] + 0.5
    fleet["node2"].clock_offset = 9.0  # skewed beyond any round trip: still caught
    assert one(report(fleet), "node.clock", "node2").status == "fail"


def test_sysctl_drift_missing_modules_and_swap_fail_with_the_task_that_fixes_them(fleet: Fleet) -> None:
    fleet["node2"].sysctl["net.ipv4.ip_forward"] = "0"
    fleet["node2"].modules.remove("br_netfilter")
    fleet["node3"].swap_kb = 2097148
    r = report(fleet)
    sysctl = one(r, "node.sysctl", "node2")
    assert sysctl.status == "fail" and "net.ipv4.ip_forward=0 (want 1)" in sysctl.reason
    assert "kubexm run task PrepareNodesOS -f /srv/hc.yaml --nodes node2 -y" in sysctl.fix
    assert one(r, "node.modules", "node2").data["missing"] == ["br_netfilter"]
    assert one(r, "node.swap", "node3").status == "fail"


def test_a_containers_read_only_sysctl_is_the_hosting_machines_and_not_a_failure(fleet: Fleet) -> None:
    fleet["node2"].virt = fleet["node3"].virt = "systemd-nspawn"
    fleet["node2"].sysctl_writable = False
    fleet["node2"].sysctl["net.ipv4.ip_forward"] = "0"
    fleet["node3"].sysctl["net.ipv4.ip_forward"] = "0"  # writable in node3's container: drift kubexm can fix
    r = report(fleet)
    held = one(r, "node.sysctl", "node2")
    assert held.status == "ok" and "net.ipv4.ip_forward=0 is read-only in this systemd-nspawn container" in held.reason
    assert one(r, "node.sysctl", "node3").status == "fail"


def test_nodes_limits_the_round(fleet: Fleet) -> None:
    r = report(fleet, ["node2"])
    assert {c.target for c in r.checks if c.section == "node"} == {"node2"}
    assert fleet.host("node1").commands == [] and fleet.host("node3").commands == []
    assert r.all_nodes is False


def kube_docs(ready_node3: bool = True) -> tuple[dict, dict]:
    def node(name: str, ready: bool) -> dict:
        cond = [{"type": "MemoryPressure", "status": "False"}, {"type": "DiskPressure", "status": "False"},
                {"type": "Ready", "status": "True" if ready else "Unknown", "reason": "NodeStatusUnknown",
                 "message": "Kubelet stopped posting node status."}]
        return {"kind": "Node", "metadata": {"name": name}, "status": {"conditions": cond}}

    def pod(name: str, labels: dict | None = None, ready: bool = True, phase: str = "Running",
            waiting: str | None = None, restarts: int = 0) -> dict:
        state = {"waiting": {"reason": waiting}} if waiting else {"running": {"startedAt": "2026-12-01T10:00:00Z"}}
        return {"metadata": {"name": name, "namespace": "kube-system", "labels": labels or {}},
                "status": {"phase": phase, "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
                           "containerStatuses": [{"name": "c", "ready": ready, "restartCount": restarts,
                                                  "state": state}]}}

    nodes = {"apiVersion": "v1", "kind": "List", "items": [node("node1", True), node("node2", True),
                                                          node("node3", ready_node3)]}
    pods = {"apiVersion": "v1", "kind": "List", "items": [
        pod("kube-apiserver-node1", {"component": "kube-apiserver"}),
        pod("kube-controller-manager-node1", {"component": "kube-controller-manager"}),
        pod("kube-scheduler-node1", {"component": "kube-scheduler"}),
        pod("coredns-5d78c9869d-8kq2x", {"k8s-app": "kube-dns"}),
        pod("coredns-5d78c9869d-vx7lm", {"k8s-app": "kube-dns"}),
        pod("kube-proxy-x8x2s", {"k8s-app": "kube-proxy"}, ready=False, waiting="CrashLoopBackOff", restarts=12),
        pod("metrics-server-6d94bc8694-abcde", ready=False, phase="Pending"),
    ]}
    return nodes, pods


def test_kubernetes_section_reads_nodes_control_plane_coredns_and_bad_pods(fleet: Fleet) -> None:
    fleet["node1"].kube = "up"
    fleet["node1"].kube_nodes, fleet["node1"].kube_pods = kube_docs(ready_node3=False)
    r = report(fleet)
    assert one(r, "kube.api").status == "ok"
    assert one(r, "kube.node", "node3").status == "fail"
    assert "Kubelet stopped posting node status" in one(r, "kube.node", "node3").reason
    assert one(r, "kube.node", "node1").status == "ok"
    assert {c.target: c.status for c in checks(r, "kube.control-plane")} == {
        "kube-apiserver": "ok", "kube-controller-manager": "ok", "kube-scheduler": "ok"}
    assert one(r, "kube.coredns").reason == "CoreDNS 2 of 2 pod(s) ready"
    pods = one(r, "kube.pods")
    assert pods.status == "warn"
    assert pods.reason == "pending: metrics-server-6d94bc8694-abcde; crash-looping: kube-proxy-x8x2s"


def test_no_api_server_is_one_line_and_the_rest_stands(fleet: Fleet) -> None:
    fleet["node1"].kube = "down"
    r = report(fleet)
    api = one(r, "kube.api")
    assert api.status == "fail" and "no API server answers on node1" in api.reason and "refused" in api.reason
    assert [c for c in r.checks if c.section == "kubernetes"] == [api]
    assert one(r, "etcd.quorum").status == "ok" and len(checks(r, "node.reachable")) == 3


def test_the_next_control_plane_node_is_asked_when_the_first_cannot_answer() -> None:
    c = cluster().model_copy(deep=True)
    c.spec.role_groups.control_plane = ["node1", "node2"]
    c.spec.role_groups.worker = ["node3"]
    fleet = Fleet(c)
    fleet.host("node1").down = True
    fleet["node2"].kube = "up"
    fleet["node2"].kube_nodes, fleet["node2"].kube_pods = kube_docs()
    # node2's own probe did not ask; the second command goes to node2 alone.
    fleet.host("node2").on(r"^if test -f /etc/kubernetes/admin.conf", lambda h, m, s: (0, fleet._kube(fleet["node2"]), ""))
    r = report(fleet)
    assert one(r, "kube.api").status == "ok" and "asked on node2" in one(r, "kube.api").reason
    assert len(fleet.host("node2").commands) == 2 and len(fleet.host("node3").commands) == 1


def test_expiring_certificates_warn_with_the_renew_command(fleet: Fleet) -> None:
    from kubexm.pki.layout import etcd_specs
    from kubexm.steps.etcd import cluster_pki

    c = cluster("  pki:\n    certValidityDays: 10\n")
    fleet = Fleet(c)
    pki = cluster_pki(c)
    pki.ensure(etcd_specs(c))
    fleet["node2"].certs = {"/etc/kubernetes/pki/etcd/ca.crt": pki.crt("etcd/ca").read_text(),
                            "/etc/kubernetes/pki/etcd/server.crt": pki.crt("etcd/nodes/node2/server").read_text()}
    r = report(fleet)
    cert = one(r, "certs.expiry", "node2")
    assert cert.status == "warn"
    assert "expiring within 30 days: etcd-server (9 d)" in cert.reason
    assert cert.fix == "kubexm certs renew etcd-server -f /srv/hc.yaml -y"
    assert cert.data["renew"] == ["etcd-server"]
    assert {row["name"] for row in r.certificates if row["host"] == "node2"} == {"etcd-ca", "etcd-server"}


@pytest.mark.parametrize(("text", "count"), [("0-3\n", 4), ("0", 1), ("0-3,8-11", 8), ("0,2,4-5", 4), ("", 0),
                                             ("garbage", 0)])
def test_cpu_lists_are_counted_as_the_kernel_writes_them(text: str, count: int) -> None:
    assert hc.cpu_count(text) == count


def test_the_probe_run_on_this_machine_reads_what_the_machine_says() -> None:
    """The real probe text through a real shell (systemd absent here: the units section says so), parsed."""
    import os
    import platform
    import subprocess
    from pathlib import Path

    from kubexm.diagnostics.health import NodeData, grep_files, parse_sections

    command, _ = node_probe(cluster(), "node2", kube=False)
    res = subprocess.run(["sh", "-c", command.text], capture_output=True, text=True, timeout=60)
    node = NodeData("node2", "10.0.0.2", ["etcd", "worker"], reachable=True, sections=parse_sections(res.stdout))
    node.files = grep_files(node.section("files"))
    info = hc.system_info(node)
    assert info.kernel == platform.release()
    assert info.cpus == os.cpu_count()
    meminfo = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
    assert info.memory["MemTotal"] == int(meminfo["MemTotal"].split()[0])
    pretty = [line for line in Path("/etc/os-release").read_text().splitlines() if line.startswith("PRETTY_NAME=")]
    assert info.os == pretty[0].partition("=")[2].strip('"')
    assert len(info.load) == 3 and info.uptime > 0
    modules = Path("/proc/modules")
    loaded = {line.split()[0] for line in modules.read_text().splitlines()} if modules.exists() else set()
    assert {line.split(" ", 1)[0] for line in node.files.get("/proc/modules", [])} == loaded
    assert "/" in node.section("df-paths").splitlines() and hc.filesystems(node)[0]["path"] == "/"

"""A real TLS etcd cluster on lab nodes: install, health, idempotence, backup/restore, certs, faults."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab

PKI = "/etc/kubernetes/pki/etcd"
ETCDCTL = (f"ETCDCTL_API=3 etcdctl --cacert={PKI}/ca.crt --cert={PKI}/healthcheck-client.crt "
           f"--key={PKI}/healthcheck-client.key")


def all_endpoints(lab: RunningLab) -> str:
    return ",".join(f"https://{lab.address(n)}:2379" for n in lab.nodes)


@pytest.fixture(scope="module")
def etcd_lab(running_lab: RunningLab) -> RunningLab:
    res = kubexm("create", "cluster", "-f", str(running_lab.cluster_file), "-y", "--tags", "etcd")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    return running_lab


def test_tls_cluster_is_healthy_from_every_node_and_refuses_plain_http(etcd_lab: RunningLab) -> None:
    lab = etcd_lab
    for node in lab.nodes:
        out = lab.ssh(node, f"{ETCDCTL} --endpoints={all_endpoints(lab)} endpoint health 2>&1")
        assert out.count("is healthy") == 3, out
    members = lab.ssh("node1", f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 member list")
    assert all(f"https://{lab.address(n)}:2380" in members for n in lab.nodes)
    # Plain HTTP and TLS without a client certificate get nothing.
    plain = lab.ssh("node2", f"ETCDCTL_API=3 etcdctl --endpoints=http://{lab.address('node1')}:2379 "
                             "--dial-timeout=3s endpoint health 2>&1; echo rc=$?")
    assert "rc=0" not in plain and "is healthy" not in plain
    no_cert = lab.ssh("node2", f"ETCDCTL_API=3 etcdctl --endpoints=https://{lab.address('node1')}:2379 "
                               f"--cacert={PKI}/ca.crt --dial-timeout=3s endpoint health 2>&1; echo rc=$?")
    assert "rc=0" not in no_cert


def test_second_create_changes_nothing(etcd_lab: RunningLab) -> None:
    res = kubexm("create", "cluster", "-f", str(etcd_lab.cluster_file), "-y", "--tags", "etcd")
    assert res.returncode == 0
    assert "nothing to change" in res.stdout and "changed" not in res.stdout.split("done:")[-1]


def test_backup_delete_restore_brings_1000_keys_back(etcd_lab: RunningLab, tmp_path: Path) -> None:
    lab = etcd_lab
    local = f"{ETCDCTL} --endpoints=https://127.0.0.1:2379"
    lab.ssh("node1", f"for i in $(seq 1 1000); do echo \"put key$i value-$i\"; done > /tmp/puts && "
                     f"while read -r cmd k v; do {local} put $k $v >/dev/null || exit 1; done < /tmp/puts")
    assert lab.ssh("node2", f"{local} get key --prefix --keys-only | grep -c key").strip() == "1000"
    res = kubexm("backup", "cluster", "-f", str(lab.cluster_file), "--to-location", str(tmp_path), "--include-pki")
    assert res.returncode == 0, res.stdout + res.stderr
    (archive,) = tmp_path.glob("*.tar.gz")
    lab.ssh("node1", f"{local} del key --prefix")
    assert lab.ssh("node3", f"{local} get key --prefix --keys-only | grep -c key || true").strip() == "0"
    res = kubexm("restore", "cluster", "-f", str(lab.cluster_file), "--from", str(archive), "-y")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert lab.ssh("node3", f"{local} get key --prefix --keys-only | grep -c key").strip() == "1000"
    assert lab.ssh("node2", f"{local} get key777 --print-value-only").strip() == "value-777"
    # A tampered archive is refused before anything is stopped.
    with open(archive, "ab") as fh:
        fh.write(b"tampered")
    res = kubexm("restore", "cluster", "-f", str(lab.cluster_file), "--from", str(archive), "-y")
    assert res.returncode != 0 and "checksum mismatch" in res.stderr
    assert lab.ssh("node1", "systemctl is-active etcd").strip() == "active"


def test_backup_fails_over_from_a_down_member(etcd_lab: RunningLab, tmp_path: Path) -> None:
    lab = etcd_lab
    lab.lab.kill("node1")
    try:
        res = kubexm("backup", "cluster", "-f", str(lab.cluster_file), "--to-location", str(tmp_path))
        assert res.returncode == 0, res.stdout + res.stderr
        assert "taken on" in res.stdout and "node2" in res.stdout
        assert "skipped member" in res.stdout and "node1" in res.stdout
    finally:
        lab.lab.start("node1")
    # after its restart the member is healthy again (systemd brings etcd back)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        out = lab.ssh("node1", f"{ETCDCTL} --endpoints={all_endpoints(lab)} endpoint health 2>&1 || true")
        if out.count("is healthy") == 3:
            break
        time.sleep(2)
    assert out.count("is healthy") == 3, out


def test_certs_renew_under_writes_loses_nothing(etcd_lab: RunningLab) -> None:
    lab = etcd_lab
    before = kubexm("certs", "check", "-f", str(lab.cluster_file))
    assert before.returncode == 0, before.stdout + before.stderr

    old = lab.ssh("node2", f"sha256sum {PKI}/server.crt").split()[0]
    endpoints = all_endpoints(lab)
    writer = subprocess.Popen(
        lab.lab.ssh_argv(lab.lab.node(lab.state, "node1"),
                         f"for i in $(seq 1 150); do {ETCDCTL} --endpoints={endpoints} put w$i $i >/dev/null 2>&1 "
                         "&& echo ok $i; sleep 0.1; done"),
        stdout=subprocess.PIPE, text=True)
    res = kubexm("certs", "renew", "-f", str(lab.cluster_file), "-y")
    out, _ = writer.communicate(timeout=120)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    acknowledged = [line.split()[1] for line in out.splitlines() if line.startswith("ok ")]
    assert len(acknowledged) > 100
    stored = set(lab.ssh("node3", f"{ETCDCTL} --endpoints=https://127.0.0.1:2379 get w --prefix --keys-only").split())
    assert {f"w{i}" for i in acknowledged} <= stored
    assert lab.ssh("node2", f"sha256sum {PKI}/server.crt").split()[0] != old



def test_certs_check_exit_code_warns(etcd_lab: RunningLab) -> None:
    res = kubexm("certs", "check", "-f", str(etcd_lab.cluster_file), "--warn-days", "400")
    assert res.returncode == 3
    assert "expiring" in res.stdout and "node3" in res.stdout


def test_member_killed_mid_install_then_rerun_completes(running_lab: RunningLab, etcd_lab: RunningLab) -> None:
    lab = running_lab
    lab.ssh("node3", "systemctl stop etcd && rm -f /etc/etcd.env /var/lib/kubexm/assets/etcd.installed")
    killer = threading.Timer(0.5, lambda: lab.lab.kill("node3"))
    killer.start()
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "etcd", "--skip-preflight")
    killer.join()
    assert res.returncode != 0
    assert "node3" in res.stdout.split("failure(s)")[-1]
    lab.lab.start("node3")
    res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "etcd")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    out = lab.ssh("node3", f"{ETCDCTL} --endpoints={all_endpoints(lab)} endpoint health 2>&1")
    assert out.count("is healthy") == 3


def test_external_etcd_is_checked_not_installed(etcd_lab: RunningLab, kubexm_home: Path, tmp_path: Path) -> None:
    lab = etcd_lab
    pki = kubexm_home / "clusters" / lab.lab.name / "pki" / "etcd"
    text = lab.cluster_file.read_text().replace(f"name: {lab.lab.name}\n", "name: uses-external\n", 1)
    endpoints = ", ".join(f"https://{lab.address(n)}:2379" for n in lab.nodes)
    text = text.replace("  etcd:\n", f"  etcd:\n    type: external\n    endpoints: [{endpoints}]\n"
                                     f"    caFile: {pki}/ca.crt\n    certFile: {pki}/healthcheck-client.crt\n"
                                     f"    keyFile: {pki}/healthcheck-client.key\n", 1)
    external = tmp_path / "external.yaml"
    external.write_text(text)
    res = kubexm("create", "cluster", "-f", str(external), "-y", "--tags", "etcd")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert "external etcd: 3 endpoint(s) healthy" in res.stdout
    assert "InstallEtcdCluster" not in res.stdout
    external.write_text(text.replace(f"https://{lab.address('node3')}:2379", "https://127.0.0.1:1"))
    res = kubexm("create", "cluster", "-f", str(external), "-y", "--tags", "etcd")
    assert res.returncode == 1 and "external etcd is not usable: https://127.0.0.1:1" in res.stdout

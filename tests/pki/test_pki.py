"""The PKI checked with the real openssl and kubectl, not only with Python."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

import pytest

from kubexm.errors import KubexmError
from kubexm.pki import PKI
from kubexm.pki.layout import etcd_specs, kubeconfig_specs, kubernetes_specs
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config

CLUSTER = parse_cluster(sample_config("prod", with_ha=True))


def openssl(*args: str) -> str:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    pki = PKI(tmp_path / "pki")
    pki.ensure([*kubernetes_specs(CLUSTER), *etcd_specs(CLUSTER)])
    pki.ensure_service_account_key()
    return pki


def test_every_leaf_verifies_against_its_ca_with_openssl(pki: PKI) -> None:
    for spec in [*kubernetes_specs(CLUSTER), *etcd_specs(CLUSTER)]:
        if spec.is_ca:
            continue
        out = openssl("verify", "-CAfile", str(pki.crt(spec.ca)), str(pki.crt(spec.path)))
        assert out.strip().endswith(": OK"), out
    # and not against a different CA
    bad = subprocess.run(["openssl", "verify", "-CAfile", str(pki.crt("ca")), str(pki.crt("etcd/healthcheck-client"))],
                         capture_output=True, text=True)
    assert bad.returncode != 0


def test_kubeadm_sans_and_usages(pki: PKI) -> None:
    text = openssl("x509", "-noout", "-text", "-in", str(pki.crt("apiserver")))
    for name in ("DNS:kubernetes.default.svc.cluster.local", "DNS:master2", "DNS:lb.kubexm.local",
                 "IP Address:10.233.0.1", "IP Address:192.168.0.10", "IP Address:192.168.0.13"):
        assert name in text, name
    assert "TLS Web Server Authentication" in text and "Client Authentication" not in text
    etcd = openssl("x509", "-noout", "-text", "-in", str(pki.crt("etcd/nodes/master1/server")))
    for name in ("DNS:master1", "DNS:localhost", "IP Address:192.168.0.11", "IP Address:127.0.0.1", "IP Address:0:0:0:0:0:0:0:1"):
        assert name in etcd, name
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in etcd
    kubelet_client = openssl("x509", "-noout", "-subject", "-in", str(pki.crt("apiserver-kubelet-client")))
    assert "O = kubeadm:cluster-admins" in kubelet_client
    ca = openssl("x509", "-noout", "-text", "-in", str(pki.crt("etcd/ca")))
    assert "CA:TRUE" in ca and "Certificate Sign" in ca


def test_private_keys_are_0600_and_cas_are_reused(pki: PKI) -> None:
    keys = list(pki.root.rglob("*.key"))
    assert keys and all(k.stat().st_mode & 0o777 == 0o600 for k in keys)
    fingerprint = openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(pki.crt("ca")))
    assert pki.ensure([*kubernetes_specs(CLUSTER), *etcd_specs(CLUSTER)]) == []  # nothing to do
    assert openssl("x509", "-noout", "-fingerprint", "-sha256", "-in", str(pki.crt("ca"))) == fingerprint


def test_mismatched_or_half_ca_is_refused(pki: PKI, tmp_path: Path) -> None:
    other = PKI(tmp_path / "other")
    other.ensure(etcd_specs(CLUSTER)[:1])
    pki.key("etcd/ca").write_bytes(other.key("etcd/ca").read_bytes())
    with pytest.raises(KubexmError, match="do not belong together"):
        pki.ensure(etcd_specs(CLUSTER))
    pki.key("etcd/ca").unlink()
    with pytest.raises(KubexmError, match="half a CA"):
        pki.ensure(etcd_specs(CLUSTER))


def test_expiring_leaf_is_renewed_and_sans_change_reissues(tmp_path: Path) -> None:
    short = PKI(tmp_path / "pki", leaf_days=10)
    short.ensure(etcd_specs(CLUSTER))
    info = {i.path: i for i in short.inspect_all()}
    assert info["etcd/healthcheck-client"].status() == "expiring"
    assert info["etcd/ca"].status() == "ok"
    normal = PKI(tmp_path / "pki")
    changes = {c.path: c.reason for c in normal.ensure(etcd_specs(CLUSTER))}
    assert changes["etcd/healthcheck-client"].startswith("renewed: expires in")
    grown = parse_cluster(sample_config("prod", with_ha=True).replace("192.168.0.11", "192.168.0.111"))
    changes = {c.path: c.reason for c in normal.ensure(etcd_specs(grown))}
    assert "192.168.0.111" in changes["etcd/nodes/master1/server"]
    assert "etcd/nodes/master2/server" not in changes


def test_renew_keeps_the_ca_and_changes_serials(pki: PKI) -> None:
    before = {i.path: i for i in pki.inspect_all()}
    changes = pki.renew(etcd_specs(CLUSTER))
    after = {i.path: i for i in pki.inspect_all()}
    assert {c.path for c in changes} == {s.path for s in etcd_specs(CLUSTER) if not s.is_ca}
    assert after["etcd/ca"].serial == before["etcd/ca"].serial
    assert after["etcd/nodes/master1/peer"].serial != before["etcd/nodes/master1/peer"].serial
    openssl("verify", "-CAfile", str(pki.crt("etcd/ca")), str(pki.crt("etcd/nodes/master1/peer")))


def test_ecdsa_keys(tmp_path: Path) -> None:
    ec = PKI(tmp_path / "pki", key_type="ecdsa")
    ec.ensure(etcd_specs(CLUSTER))
    text = openssl("x509", "-noout", "-text", "-in", str(ec.crt("etcd/nodes/master1/server")))
    assert "id-ecPublicKey" in text and "prime256v1" in text
    openssl("verify", "-CAfile", str(ec.crt("etcd/ca")), str(ec.crt("etcd/nodes/master1/server")))


def test_kubeconfigs_are_accepted_by_kubectl(pki: PKI, tmp_path: Path) -> None:
    specs = kubeconfig_specs(CLUSTER)
    assert {"admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet-worker1.conf"} <= set(specs)
    path = tmp_path / "admin.conf"
    path.write_text(pki.kubeconfig(specs["admin.conf"], "prod", "https://lb.kubexm.local:6443"))
    out = subprocess.run(["kubectl", "config", "view", "--kubeconfig", str(path), "--raw", "-o",
                          "jsonpath={.users[0].name} {.clusters[0].cluster.server}"],
                         capture_output=True, text=True, check=True).stdout
    assert out == "kubernetes-admin https://lb.kubexm.local:6443"
    pki.kubeconfig(specs["kubelet-worker1.conf"], "prod", "https://lb.kubexm.local:6443")
    kubelet = pki.crt("kubeconfig/kubelet-worker1")
    assert "O = system:nodes, CN = system:node:worker1" in openssl("x509", "-noout", "-subject", "-in", str(kubelet))


def test_mutual_tls_handshake_between_etcd_server_and_client(pki: PKI) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        ["openssl", "s_server", "-accept", f"127.0.0.1:{port}", "-cert", str(pki.crt("etcd/nodes/master1/server")),
         "-key", str(pki.key("etcd/nodes/master1/server")), "-CAfile", str(pki.crt("etcd/ca")), "-Verify", "1",
         "-verify_return_error", "-www"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                time.sleep(0.05)
        ok = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-servername", "localhost",
             "-cert", str(pki.crt("etcd/healthcheck-client")), "-key", str(pki.key("etcd/healthcheck-client")),
             "-CAfile", str(pki.crt("etcd/ca")), "-verify_return_error", "-verify_hostname", "localhost"],
            input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=10)
        assert "Verify return code: 0 (ok)" in ok.stdout, ok.stdout[-500:] + ok.stderr[-500:]
        no_cert = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(pki.crt("etcd/ca"))],
            input="GET / HTTP/1.0\r\n\r\n", capture_output=True, text=True, timeout=10)
        assert "HTTP/1.0 200" not in no_cert.stdout  # a client without a certificate gets nothing
    finally:
        server.terminate()
        server.wait()


def test_cluster_file_pki_settings_are_used() -> None:
    from kubexm.steps.etcd import cluster_pki

    cluster = parse_cluster(sample_config("edge") + "  pki:\n    keyType: ecdsa\n    certValidityDays: 90\n")
    pki = cluster_pki(cluster)
    pki.ensure(etcd_specs(cluster))
    text = openssl("x509", "-noout", "-text", "-in", str(pki.crt("etcd/healthcheck-client")))
    assert "id-ecPublicKey" in text
    info = {i.path: i for i in pki.inspect_all()}
    assert 88 <= info["etcd/healthcheck-client"].days_left <= 90
    assert info["etcd/ca"].days_left > 3000

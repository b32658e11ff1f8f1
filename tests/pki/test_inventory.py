"""The pieces of `certs check/renew` run for real: the read script in bash and dash, the static-pod restart
with stubbed programs, CA refusals, re-issued SANs and rewritten kubeconfigs checked with openssl."""

from __future__ import annotations

import base64
import datetime as dt
import os
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from ruamel.yaml import YAML

from kubexm.errors import KubexmError, UsageError
from kubexm.pki import PKI
from kubexm.pki.certs import CertSpec, cert_pem, key_pem, sign_leaf
from kubexm.pki.inventory import (
    GROUPS,
    RENEWABLE,
    kubeconfig_cert,
    parse_read,
    read_command,
    resolve_names,
    rewrite_kubeconfig,
)
from kubexm.pki.layout import kubernetes_specs
from kubexm.pki.renewal import check_ca, reissue
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.cert_renew import etcd_health, readyz, restart_static_pod, wait_listening

CLUSTER = parse_cluster(sample_config("prod", with_ha=True))


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], capture_output=True, text=True)


@pytest.fixture
def pki(tmp_path: Path) -> PKI:
    pki = PKI(tmp_path / "pki", key_type="ecdsa")
    pki.ensure(kubernetes_specs(CLUSTER))
    return pki


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_the_read_script_prints_certificates_and_kubeconfigs_but_never_a_key(shell: str, pki: PKI,
                                                                             tmp_path: Path) -> None:
    cert, key = pki.load("apiserver")
    pem = tmp_path / "dir with space" / "kubelet-client-current.pem"
    pem.parent.mkdir()
    pem.write_bytes(cert_pem(cert) + key_pem(key))
    conf = tmp_path / "admin.conf"
    conf.write_text("users:\n- name: a\n  user:\n    client-certificate-data: Zm9v\n    client-key-data: c2VjcmV0\n")
    probe = tmp_path / "sa.pub"
    probe.write_text("x")
    ca, _ = pki.load("ca")
    plain = tmp_path / "ca.crt"
    plain.write_bytes(cert_pem(ca))
    empty = tmp_path / "empty.crt"
    empty.write_bytes(b"")
    cmd = read_command([str(pem), str(tmp_path / "absent.crt"), str(empty), str(plain)], [str(conf)],
                       [str(probe), str(tmp_path / "no")])
    assert cmd.readonly
    res = subprocess.run([shell, "-c", cmd.text], capture_output=True, text=True, check=True)
    assert "PRIVATE KEY" not in res.stdout and "c2VjcmV0" not in res.stdout
    read = parse_read(res.stdout)
    assert set(read.files) == {str(pem), str(plain), str(empty), str(conf)} and read.present == {str(probe)}
    got = x509.load_pem_x509_certificate(read.files[str(pem)].encode())
    assert got == cert
    assert x509.load_pem_x509_certificate(read.files[str(plain)].encode()) == ca
    assert read.files[str(empty)].strip() == ""  # there, and empty: named without content
    assert "client-certificate-data: Zm9v" in read.files[str(conf)]


def test_names_are_validated_with_one_line_errors() -> None:
    assert resolve_names(["all"]) == list(RENEWABLE)
    assert resolve_names(["kubelet", "apiserver"]) == ["apiserver", *GROUPS["kubelet"]]
    with pytest.raises(UsageError) as err:
        resolve_names(["apiserverr"])
    assert "\n" not in err.value.message and "apiserver-kubelet-client" in err.value.message
    with pytest.raises(UsageError) as err:
        resolve_names(["etcd-ca"])
    assert "is a CA" in err.value.message and "rotate-ca" in (err.value.hint or "")


def _expired_ca(pki: PKI) -> None:
    """Replace the cluster CA by one with the same key that expired yesterday."""
    _, key = pki.load("ca")
    old, _ = pki.load("ca")
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=400))
            .not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    pki.crt("ca").write_bytes(cert_pem(cert))


def test_an_expired_ca_or_a_missing_ca_key_is_refused_with_the_fix(pki: PKI) -> None:
    _expired_ca(pki)
    with pytest.raises(KubexmError) as err:
        check_ca(pki, "ca")
    assert "expired" in err.value.message and "rotated" in err.value.message and "\n" not in str(err.value)
    assert "rotate it by hand" in (err.value.hint or "") and "certs renew --all" in (err.value.hint or "")
    with pytest.raises(KubexmError, match=r"CA key .*front-proxy-ca\.key is missing"):
        pki.key("front-proxy-ca").unlink()
        check_ca(pki, "front-proxy-ca")
    with pytest.raises(KubexmError):
        reissue(pki, [s for s in kubernetes_specs(CLUSTER) if s.path == "front-proxy-client"])


def test_reissue_keeps_the_key_and_every_san_and_adds_the_new_ones(pki: PKI, tmp_path: Path) -> None:
    spec = next(s for s in kubernetes_specs(CLUSTER) if s.path == "apiserver")
    # The existing certificate also covers a name the spec no longer lists (a removed node, say).
    ca, ca_key = pki.load("ca")
    _, key = pki.load("apiserver")
    old_spec = CertSpec(spec.path, spec.common_name, "ca", (), (*spec.dns_names, "old-node"),
                        (*spec.ip_addresses, "10.9.9.9"), ("server",))
    pki.crt("apiserver").write_bytes(cert_pem(sign_leaf(old_spec, key, ca, ca_key)))
    before = openssl("x509", "-noout", "-serial", "-in", str(pki.crt("apiserver"))).stdout
    new = CertSpec(spec.path, spec.common_name, "ca", (), (*spec.dns_names, "api.example.org"), spec.ip_addresses,
                   ("server",))
    changes = reissue(pki, [new])
    assert [c.path for c in changes] == ["apiserver"]
    text = openssl("x509", "-noout", "-text", "-in", str(pki.crt("apiserver"))).stdout
    for name in ("DNS:old-node", "IP Address:10.9.9.9", "DNS:api.example.org", "DNS:kubernetes.default.svc"):
        assert name in text, name
    assert openssl("x509", "-noout", "-serial", "-in", str(pki.crt("apiserver"))).stdout != before
    assert openssl("verify", "-CAfile", str(pki.crt("ca")), str(pki.crt("apiserver"))).stdout.strip().endswith(": OK")
    _, key_after = pki.load("apiserver")
    assert key_pem(key_after) == key_pem(key)


def test_a_rewritten_kubeconfig_keeps_the_server_and_carries_the_new_identity(pki: PKI, tmp_path: Path) -> None:
    # Read from the node without its key line (as the read script prints it); names Go would misread.
    text = ("apiVersion: v1\nkind: Config\nclusters:\n- name: \"no\"\n  cluster:\n    certificate-authority: /x/ca.crt\n"
            "    server: https://10.0.0.5:6443\ncontexts:\n- name: ctx\n  context: {cluster: \"no\", user: \"on\"}\n"
            "current-context: ctx\nusers:\n- name: \"on\"\n  user:\n    client-certificate-data: Zm9v\n")
    spec = CertSpec("kubeconfig/scheduler", "system:kube-scheduler", "ca", (), (), (), ("client",))
    pki.issue(spec)
    cert, key = pki.load(spec.path)
    ca, _ = pki.load("ca")
    out = rewrite_kubeconfig(text, cert_pem(ca), cert_pem(cert), key_pem(key))
    doc = YAML(typ="safe").load(out)
    assert doc["clusters"][0]["cluster"]["server"] == "https://10.0.0.5:6443"
    assert doc["clusters"][0]["name"] == "no" and doc["users"][0]["name"] == "on"
    assert b'"no"' in out  # quoted: YAML 1.1 (kubectl) would read a bare no as false
    assert "certificate-authority" not in doc["clusters"][0]["cluster"]
    embedded, uses = kubeconfig_cert(out.decode())
    assert embedded == cert and uses is None
    leaf = tmp_path / "leaf.crt"
    leaf.write_bytes(base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]))
    assert openssl("verify", "-CAfile", str(pki.crt("ca")), str(leaf)).stdout.strip().endswith(": OK")
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == key_pem(key)


def _stubbed(command: str, cwd: Path, listening_for: int) -> tuple[int, list[list[str]]]:
    """Run ``command`` with mv/ss/sleep replaced: ss shows the port for ``listening_for`` calls, then not."""
    log = cwd / "calls"
    log.unlink(missing_ok=True)
    Path(f"{log}.ss").unlink(missing_ok=True)
    prelude = (
        # ss runs in a pipeline's subshell: its call count lives in a file.
        f"mv() {{ echo \"mv $*\" >>{log}; }}; sleep() {{ :; }}; "
        f"ss() {{ echo x >>{log}.ss; if [ \"$(wc -l <{log}.ss)\" -le {listening_for} ]; then "
        "echo 'LISTEN 0 4096 *:6443 *:*'; fi; }; "
        "test() { if [ \"$1\" = -e ]; then case \"$2\" in *manifests*) return 0;; esac; return 1; fi; "
        "[ \"$@\" ]; }\n")
    res = subprocess.run(["bash", "-c", prelude + command], cwd=cwd, capture_output=True, text=True,
                         env={"PATH": os.environ["PATH"]})
    calls = [line.split()[1:] for line in log.read_text().splitlines()] if log.exists() else []
    return res.returncode, calls


def test_static_pod_restart_waits_for_the_pod_to_stop_and_always_puts_the_manifest_back(tmp_path: Path) -> None:
    cmd = restart_static_pod("kube-apiserver", 6443, wait=5)
    manifest, parked = "/etc/kubernetes/manifests/kube-apiserver.yaml", "/etc/kubernetes/kube-apiserver.yaml.kubexm-parked"
    code, calls = _stubbed(cmd.text, tmp_path, listening_for=2)
    assert code == 0 and calls == [["-f", "--", manifest, parked], ["-f", "--", parked, manifest]]
    # The pod never stopped: a failure, and the manifest is back all the same.
    code, calls = _stubbed(cmd.text, tmp_path, listening_for=99)
    assert code != 0 and calls[-1] == ["-f", "--", parked, manifest]


def test_the_health_and_readiness_probes_only_read() -> None:
    assert wait_listening(6443).readonly and etcd_health(["https://10.0.0.1:2379"]).readonly
    probe = readyz("fd00::5")
    assert probe.readonly and "--server=https://[fd00::5]:6443" in probe.text and "--raw=/readyz" in probe.text
    assert not restart_static_pod("kube-scheduler", 10259).readonly

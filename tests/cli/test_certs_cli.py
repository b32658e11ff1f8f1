"""`kubexm certs` as a user types it, each command line its own process: refusals that need no node."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from kubexm.pki import PKI
from kubexm.pki.certs import cert_pem
from kubexm.pki.layout import etcd_specs, kubernetes_specs
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config

KUBEXM = str(Path(sys.executable).with_name("kubexm"))


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=env, timeout=60, stdin=subprocess.DEVNULL)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Path, Path, PKI]:
    """A cluster file whose hosts do not exist (192.168.0.x) and its local PKI: every command here must
    stop before it connects anywhere (it would time out otherwise)."""
    text = sample_config("prod", with_ha=True)
    f = tmp_path / "cluster.yaml"
    f.write_text(text)
    home = tmp_path / "home"
    c = parse_cluster(text)
    pki = PKI(home / "clusters" / c.name / "pki", key_type="ecdsa")
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c)])
    return f, home, pki


def one_line_error(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, out
    return out


def test_an_unknown_name_lists_the_valid_ones(setup: tuple[Path, Path, PKI]) -> None:
    f, home, _ = setup
    res = kubexm("certs", "renew", "apiserverr", "-f", str(f), "-y", home=home)
    assert res.returncode == 2
    out = one_line_error(res)
    assert "unknown certificate name 'apiserverr'" in out
    for name in ("etcd-server", "apiserver-kubelet-client", "admin.conf", "kubelet-client", "kubelet-serving"):
        assert name in out


def test_a_ca_name_or_all_with_names_is_refused(setup: tuple[Path, Path, PKI]) -> None:
    f, home, _ = setup
    res = kubexm("certs", "renew", "front-proxy-ca", "-f", str(f), "-y", home=home)
    assert res.returncode == 2 and "is a CA" in one_line_error(res) and "rotate-ca" in res.stderr
    res = kubexm("certs", "renew", "--all", "apiserver", "-f", str(f), "-y", home=home)
    assert res.returncode == 2 and "--all or certificate names" in one_line_error(res)


def test_an_expired_ca_is_refused_before_any_connection_with_what_to_do(setup: tuple[Path, Path, PKI]) -> None:
    f, home, pki = setup
    old, key = pki.load("ca")
    now = dt.datetime.now(dt.UTC)
    expired = (x509.CertificateBuilder().subject_name(old.subject).issuer_name(old.subject).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(days=30))
               .not_valid_after(now - dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
               .sign(key, hashes.SHA256()))
    pki.crt("ca").write_bytes(cert_pem(expired))
    before = pki.crt("apiserver").read_bytes()
    res = kubexm("certs", "renew", "apiserver", "--plan", "-f", str(f), home=home)
    assert res.returncode == 1
    out = one_line_error(res)
    assert "CA expired on" in out and "must be rotated" in out and "rotate it by hand" in out and "certs renew --all" in out
    assert pki.crt("apiserver").read_bytes() == before


def test_a_missing_ca_key_is_one_line_naming_the_file(setup: tuple[Path, Path, PKI]) -> None:
    f, home, pki = setup
    pki.key("etcd/ca").unlink()
    res = kubexm("certs", "renew", "etcd-server", "-y", "-f", str(f), home=home)
    assert res.returncode == 1
    out = one_line_error(res)
    assert f"{pki.key('etcd/ca')} is missing" in out and "restore" in out


def test_check_refuses_an_unknown_output_format(setup: tuple[Path, Path, PKI]) -> None:
    f, home, _ = setup
    res = kubexm("certs", "check", "-o", "yaml", "-f", str(f), home=home)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    res = kubexm("certs", "check", "--help", home=home)
    assert res.returncode == 0 and "fingerprint_sha256" in res.stdout and "differs_from_local" in res.stdout


def test_renew_help_lists_every_name_it_accepts(tmp_path: Path) -> None:
    from kubexm.pki.inventory import GROUPS, RENEWABLE

    res = kubexm("certs", "renew", "--help", home=tmp_path)
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for name in (*RENEWABLE, *GROUPS):
        assert name in text, name

"""`kubexm certs check/renew` as processes against a real sshd: the node is this machine, reached as a
non-root user through sudo. Only kubeconfigs that restart nothing are renewed here (no kubelet, no systemd
unit runs in this container); restarts are covered by tests/pki/test_cert_steps.py and the lab."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from kubexm.pki import PKI
from kubexm.pki.certs import cert_pem, key_pem, new_key, sign_leaf
from kubexm.pki.inventory import node_inventory
from kubexm.pki.layout import etcd_specs, kubeconfig_specs, kubernetes_specs
from kubexm.spec.loader import load_cluster

from .conftest import SSHD

pytestmark = pytest.mark.integration
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
KUBE = Path("/etc/kubernetes")


def kubexm(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, timeout=180, env=env,
                          stdin=subprocess.DEVNULL)


def write_cluster(sshd: SSHD, path: Path, *, with_unreachable: bool) -> Path:
    hosts = sshd.host_yaml("alpha", privateKeyPath=sshd.key, sudoPassword=sshd.password)
    workers = "[alpha]"
    if with_unreachable:
        # 127.0.0.3 is loopback, but the sshd listens on .1 and .2 only: refused at once.
        hosts += sshd.host_yaml("gamma", address="127.0.0.3", privateKeyPath=sshd.key, sudoPassword=sshd.password)
        workers = "[alpha, gamma]"
    path.write_text(f"apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: itcerts\nspec:\n  hosts:\n"
                    f"{hosts}  roleGroups:\n    etcd: [alpha]\n    control-plane: [alpha]\n    worker: {workers}\n")
    return path


def _kubeconfig(pki: PKI, file: str, cluster_file: Path) -> bytes:
    """A kubeconfig as kubeadm writes it on the node: the cluster CA, but its own key and certificate."""
    c = load_cluster(cluster_file)
    spec = kubeconfig_specs(c)[file]
    ca, ca_key = pki.load("ca")
    key = new_key("ecdsa")
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "kubernetes", "cluster": {
               "certificate-authority-data": base64.b64encode(cert_pem(ca)).decode(), "server": "https://10.1.2.3:6443"}}],
           "contexts": [{"name": "ctx", "context": {"cluster": "kubernetes", "user": spec.common_name}}],
           "current-context": "ctx",
           "users": [{"name": spec.common_name, "user": {
               "client-certificate-data": base64.b64encode(cert_pem(sign_leaf(spec, key, ca, ca_key))).decode(),
               "client-key-data": base64.b64encode(key_pem(key)).decode()}}]}
    import io

    out = io.StringIO()
    YAML().dump(doc, out)
    return out.getvalue().encode()


@pytest.fixture
def node(sshd: SSHD, tmp_path: Path) -> Iterator[tuple[Path, PKI]]:
    """This machine set up as control plane `alpha` of cluster `itcerts` from a local PKI (removed after)."""
    if KUBE.exists():
        pytest.skip("/etc/kubernetes exists on this machine; the test would overwrite it")
    cluster_file = write_cluster(sshd, tmp_path / "c.yaml", with_unreachable=False)
    c = load_cluster(cluster_file)
    pki = PKI(Path(os.environ["KUBEXM_HOME"]) / "clusters" / c.name / "pki", key_type="ecdsa")
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c)])
    pki.ensure_service_account_key()
    try:
        for p in node_inventory(c, "alpha"):
            target = Path(p.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            if p.kind == "cert" and p.local and pki.crt(p.local).is_file():
                target.write_bytes(pki.crt(p.local).read_bytes())
                if p.ca:
                    Path(p.key_path).write_bytes(pki.key(p.local).read_bytes())
                    os.chmod(p.key_path, 0o600)
            elif p.kind == "keypair":
                target.write_bytes(pki.key("sa").read_bytes())
                (target.parent / "sa.pub").write_bytes((pki.root / "sa.pub").read_bytes())
            elif p.name in ("admin.conf", "super-admin.conf"):
                target.write_bytes(_kubeconfig(pki, p.name, cluster_file))
                os.chmod(target, 0o600)
        yield cluster_file, pki
    finally:
        shutil.rmtree(KUBE, ignore_errors=True)


def _doc(res: subprocess.CompletedProcess[str]) -> dict[str, object]:
    doc: dict[str, object] = json.loads(res.stdout)
    return doc


def _rows(doc: dict[str, object], host: str) -> dict[str, dict[str, object]]:
    return {r["name"]: r for r in doc["certificates"] if r["host"] == host}  # type: ignore[attr-defined]


def _embedded(path: Path) -> tuple[bytes, str]:
    doc = YAML(typ="safe").load(path.read_text())
    return base64.b64decode(doc["users"][0]["user"]["client-certificate-data"]), doc["clusters"][0]["cluster"]["server"]


def test_check_reads_the_node_and_renew_replaces_the_kubeconfigs_in_place(node: tuple[Path, PKI],
                                                                          tmp_path: Path) -> None:
    cluster_file, pki = node
    res = kubexm("certs", "check", "-f", str(cluster_file), "-o", "json")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    doc = _doc(res)
    alpha = _rows(doc, "alpha")
    assert alpha["apiserver"]["chains_to"] == "kubernetes" and alpha["apiserver"]["differs_from_local"] is False
    assert alpha["etcd-server"]["chains_to"] == "etcd" and "127.0.0.1" in alpha["etcd-server"]["sans"]  # type: ignore[operator]
    assert alpha["admin.conf"]["chains_to"] == "kubernetes" and alpha["sa"]["status"] == "ok"
    assert alpha["admin.conf"]["subject_cn"] == "kubernetes-admin"

    before = (KUBE / "admin.conf").read_bytes()
    res = kubexm("certs", "renew", "admin.conf", "super-admin.conf", "--plan", "-f", str(cluster_file))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    assert (KUBE / "admin.conf").read_bytes() == before
    assert "admin.conf" in res.stdout and "renew" in res.stdout

    res = kubexm("certs", "renew", "admin.conf", "super-admin.conf", "-y", "-f", str(cluster_file))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for file, local in (("admin.conf", "kubeconfig/admin"), ("super-admin.conf", "kubeconfig/super-admin")):
        path = KUBE / file
        assert path.stat().st_mode & 0o777 == 0o600
        cert, server = _embedded(path)
        assert server == "https://10.1.2.3:6443"  # the node's endpoint is kept
        assert cert == pki.crt(local).read_bytes()
        leaf = tmp_path / f"{file}.crt"
        leaf.write_bytes(cert)
        out = subprocess.run(["openssl", "verify", "-CAfile", str(pki.crt("ca")), str(leaf)], capture_output=True,
                             text=True)
        assert out.stdout.strip().endswith(": OK"), out.stdout + out.stderr
    assert not [p for p in KUBE.iterdir() if p.name.endswith(".kubexm-renew")]
    text = subprocess.run(["openssl", "x509", "-noout", "-subject"], input=_embedded(KUBE / "super-admin.conf")[0].decode(),
                          capture_output=True, text=True).stdout
    assert "O = system:masters" in text and "CN = kubernetes-super-admin" in text

    res = kubexm("certs", "check", "-f", str(cluster_file), "-o", "json")
    assert res.returncode == 0
    assert _rows(_doc(res), "alpha")["admin.conf"]["differs_from_local"] is False


def test_an_unreachable_node_is_named_the_others_complete_and_a_rerun_finishes(node: tuple[Path, PKI], sshd: SSHD,
                                                                               tmp_path: Path) -> None:
    _, pki = node
    cluster_file = write_cluster(sshd, tmp_path / "c2.yaml", with_unreachable=True)
    res = kubexm("certs", "check", "-f", str(cluster_file), "-o", "json")
    assert res.returncode == 1
    doc = _doc(res)
    assert doc["hosts"]["gamma"]["reachable"] is False and _rows(doc, "alpha")  # type: ignore[index]
    assert "gamma" in res.stderr

    res = kubexm("certs", "renew", "admin.conf", "-y", "-f", str(cluster_file))
    assert res.returncode == 1
    assert "certificates not renewed on gamma" in res.stdout and "Traceback" not in res.stdout + res.stderr
    renewed = (KUBE / "admin.conf").read_bytes()
    assert _embedded(KUBE / "admin.conf")[0] == pki.crt("kubeconfig/admin").read_bytes()
    assert (pki.root / "renewal.json").exists()

    # gamma is gone for good: without it, the same command finishes the renewal without re-issuing.
    issued = pki.crt("kubeconfig/admin").read_bytes()
    alone = write_cluster(sshd, tmp_path / "c3.yaml", with_unreachable=False)
    res = kubexm("certs", "renew", "admin.conf", "-y", "-f", str(alone))
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert pki.crt("kubeconfig/admin").read_bytes() == issued and (KUBE / "admin.conf").read_bytes() == renewed
    assert not (pki.root / "renewal.json").exists()

"""`certs rotate-ca` on MemoryHost nodes holding what kubexm and kubeadm put there (tests/pki/test_cert_steps.py):
the three phases end with every leaf verifying against the new CA only (real openssl), one node at a time,
phase after phase; an interrupted rotation resumes at its phase and node; an unhealthy etcd refuses it."""

from __future__ import annotations

import base64
import re
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pki.test_cert_steps import CPS, NAMES, Nodes, failures, install, run
from pki.test_cert_steps import cluster as sample_cluster
from ruamel.yaml import YAML

from kubexm.errors import KubexmError, UsageError
from kubexm.pki import PKI
from kubexm.pki import rotation as rot
from kubexm.pki.inventory import KUBELET_CLIENT
from kubexm.pki.layout import etcd_specs, kubernetes_specs
from kubexm.spec.models import Cluster
from kubexm.steps.etcd import cluster_pki

PKI_DIR = "/etc/kubernetes/pki"


def _sed(h: Any, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    """The sed -i of set_kubeconfig_ca, run by the real GNU sed on a copy of the in-memory file."""
    words = shlex.split(m.string)
    assert words[:3] == ["sed", "-i", "-e"] and words[4] == "--", words[:5]
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / "kubeconfig"
        copy.write_bytes(h.files[words[5]])
        res = subprocess.run(["sed", "-i", "-e", words[3], "--", str(copy)], capture_output=True, text=True)
        h.files[words[5]] = copy.read_bytes()
    return res.returncode, res.stdout, res.stderr


@pytest.fixture
def setup() -> tuple[Cluster, Nodes, PKI]:
    c = sample_cluster()
    pki = cluster_pki(c)
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c)])
    pki.ensure_service_account_key()
    nodes = Nodes(c)
    install(nodes, pki)
    for name in NAMES:
        nodes[name].on(r"^sed -i -e ", _sed)
    for name in CPS:  # kubeadm keeps the CA keys on control planes (the controller-manager signs with ca.key)
        nodes[name].files[f"{PKI_DIR}/ca.key"] = pki.key("ca").read_bytes()
        nodes[name].files[f"{PKI_DIR}/front-proxy-ca.key"] = pki.key("front-proxy-ca").read_bytes()
    return c, nodes, pki


def verify(ca_pem: bytes, leaf: bytes, tmp: Path) -> bool:
    (tmp / "ca.pem").write_bytes(ca_pem)
    (tmp / "leaf.pem").write_bytes(leaf)
    res = subprocess.run(["openssl", "verify", "-CAfile", str(tmp / "ca.pem"), str(tmp / "leaf.pem")],
                         capture_output=True, text=True)
    return res.returncode == 0


def certs_in(pem: bytes) -> list[bytes]:
    return [m.encode() for m in re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n",
                                           pem.decode(), re.S)]


def conf_ca(conf: bytes) -> bytes:
    doc = YAML(typ="safe").load(conf.decode())
    return base64.b64decode(doc["clusters"][0]["cluster"]["certificate-authority-data"])


def conf_client(conf: bytes) -> bytes:
    doc = YAML(typ="safe").load(conf.decode())
    return base64.b64decode(doc["users"][0]["user"]["client-certificate-data"])


def test_kubernetes_ca_rotation_ends_with_every_leaf_on_the_new_ca_only(setup: Any, tmp_path: Path) -> None:
    c, nodes, pki = setup
    old_ca = pki.crt("ca").read_bytes()
    report, shared = run(c, nodes, "RotateCAPipeline", ca_component="kubernetes")
    assert report.ok, failures(report)
    new_ca = pki.crt("ca").read_bytes()
    assert new_ca != old_ca and pki.key("ca").read_bytes() != b""
    assert not (pki.root / rot.RECORD).exists() and not pki.crt("ca-old").exists() and not pki.crt("ca-next").exists()
    assert shared["ca-rotation"]["phases"] == ["start", "trust", "reissue", "drop"]
    for name in NAMES:
        h = nodes[name]
        assert h.files[f"{PKI_DIR}/ca.crt"] == new_ca  # the new CA alone
        conf = h.files["/etc/kubernetes/kubelet.conf"]
        assert conf_ca(conf) == new_ca and f"client-certificate: {KUBELET_CLIENT}" in conf.decode()
        client = h.files[KUBELET_CLIENT]
        assert b"PRIVATE KEY" in client
        assert verify(new_ca, client, tmp_path) and not verify(old_ca, client, tmp_path)
        serving = h.files["/var/lib/kubelet/pki/kubelet.crt"]
        assert verify(new_ca, serving, tmp_path) and not verify(old_ca, serving, tmp_path)
    for name in CPS:
        h = nodes[name]
        assert h.files[f"{PKI_DIR}/ca.key"] == pki.key("ca").read_bytes()  # the controller-manager signs with it
        for leaf in ("apiserver", "apiserver-kubelet-client"):
            crt = h.files[f"{PKI_DIR}/{leaf}.crt"]
            assert crt == pki.crt(leaf).read_bytes()
            assert verify(new_ca, crt, tmp_path) and not verify(old_ca, crt, tmp_path), (name, leaf)
        for conf in ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"):
            text = h.files[f"/etc/kubernetes/{conf}"]
            assert conf_ca(text) == new_ca, (name, conf)
            assert verify(new_ca, conf_client(text), tmp_path) and not verify(old_ca, conf_client(text), tmp_path)
        # The other CAs were not touched.
        assert h.files[f"{PKI_DIR}/front-proxy-ca.crt"] == pki.crt("front-proxy-ca").read_bytes()
        assert h.files[f"{PKI_DIR}/etcd/ca.crt"] == pki.crt("etcd/ca").read_bytes()
        assert not [p for p in h.files if p.endswith(".kubexm-renew") or p.startswith("/var/lib/kubexm/restart")]


def test_each_phase_reaches_every_node_before_the_next_phase_starts(setup: Any) -> None:
    c, nodes, pki = setup
    old_ca = pki.crt("ca").read_bytes()
    seen: list[tuple[str, int]] = []  # (node, CA certificates in its ca.crt) after each placement

    def record(h: Any, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        from pki.test_cert_steps import _moves

        out = _moves(h, m, stdin)
        seen.append((h.name, len(certs_in(h.files.get(f"{PKI_DIR}/ca.crt", b"")))))
        return out

    for name in NAMES:
        nodes[name].handlers.insert(0, (re.compile(r"^(mv -f(T)? --|ln -sfn --) "), record))
    report, _ = run(c, nodes, "RotateCAPipeline", ca_component="kubernetes")
    assert report.ok, failures(report)
    # Trust: every node to two CAs, node by node (control planes, then workers); then re-issue (still two); then one.
    counts = [n for _, n in seen]
    first_single = counts.index(1)
    assert all(n == 2 for n in counts[:first_single]) and all(n == 1 for n in counts[first_single:])
    order = [h for h, _ in seen[:len(NAMES)]]
    assert order == [*CPS, "worker1", "worker2"]
    assert [h for h, _ in seen[first_single:]] == [*CPS, "worker1", "worker2"]
    # The re-issue placements (the second round of two-CA bundles) begin only after every node trusts both.
    assert len(seen) == 3 * len(NAMES)
    assert old_ca not in nodes["master1"].files[f"{PKI_DIR}/ca.crt"]


def test_interrupted_rotation_resumes_at_its_phase_and_node(setup: Any, tmp_path: Path) -> None:
    c, nodes, pki = setup
    nodes["master2"].down = True
    report, shared = run(c, nodes, "RotateCAPipeline", ca_component="etcd")
    assert not report.ok
    (failure,) = failures(report)
    assert failure[1] == "EnterCAPhase" and "master2" in failure[2] and "again" in failure[2]
    record = rot.load(pki)
    assert record is not None and record.component == "etcd" and record.phase == "trust"
    assert record.is_done("trust", "master1", "etcd") and record.is_done("trust", "master3", "etcd")
    assert not record.is_done("trust", "master2", "etcd")
    old, nxt = pki.crt("etcd/ca").read_bytes(), pki.crt("etcd/ca-next").read_bytes()
    assert nodes["master1"].files[f"{PKI_DIR}/etcd/ca.crt"] == old + nxt
    assert nodes["master1"].files[f"{PKI_DIR}/etcd/server.crt"] == pki.crt("etcd/nodes/master1/server").read_bytes()

    # Another component cannot start meanwhile, and upgrade / add nodes are refused naming the command.
    with pytest.raises(UsageError, match="rotate-ca --component etcd"):
        rot.refuse_during_rotation(c, "upgrade")

    nodes["master2"].down = False
    nodes.clear()
    report, shared = run(c, nodes, "RotateCAPipeline", ca_component="etcd")
    assert report.ok, failures(report)
    assert shared["ca-rotation"]["phases"] == ["trust", "reissue", "drop"]
    # master1 and master3 had phase 1: they are not touched again before phase 2 began.
    first_m2_trust = next(i for i, (h, cmd) in enumerate(nodes.log) if h == "master2" and cmd.startswith("mv -f"))
    assert not any(h in ("master1", "master3") and cmd.startswith(("mv -f", "systemctl restart"))
                   for h, cmd in nodes.log[:first_m2_trust])
    new_ca = pki.crt("etcd/ca").read_bytes()
    assert new_ca == nxt and not (pki.root / rot.RECORD).exists()
    for name in CPS:
        h = nodes[name]
        assert h.files[f"{PKI_DIR}/etcd/ca.crt"] == new_ca
        for leaf in ("etcd/server.crt", "etcd/peer.crt", "etcd/healthcheck-client.crt", "apiserver-etcd-client.crt"):
            assert verify(new_ca, h.files[f"{PKI_DIR}/{leaf}"], tmp_path), (name, leaf)
            assert not verify(old, h.files[f"{PKI_DIR}/{leaf}"], tmp_path), (name, leaf)
        # The Kubernetes CA stays as it was.
        assert h.files[f"{PKI_DIR}/ca.crt"] == pki.crt("ca").read_bytes()
    # etcd restarted member by member, each after the health of all members was read.
    # etcd restarted member by member: master2's phase 1 (the others had it), then phase 2, then phase 3.
    restarts = [h for h, cmd in nodes.log if "systemctl restart -- etcd" in cmd]
    assert restarts == ["master2", *CPS, *CPS]
    for name in CPS:  # each restart only after the health of every member was read
        health = [i for i, (h, cmd) in enumerate(nodes.log) if h == name and "endpoint health" in cmd]
        first_restart = next(i for i, (h, cmd) in enumerate(nodes.log) if h == name and "systemctl restart -- etcd" in cmd)
        assert health and health[0] < first_restart


def test_refused_while_an_etcd_member_is_unhealthy(setup: Any) -> None:
    c, nodes, pki = setup
    nodes.etcd_down = {"master3"}
    before = {n: dict(nodes[n].files) for n in NAMES}
    report, _ = run(c, nodes, "RotateCAPipeline", ca_component="kubernetes")
    assert not report.ok
    (failure,) = failures(report)
    assert failure[1] == "RequireHealthyEtcd" and "not healthy" in failure[2] and "2 of 3" in failure[2]
    assert {n: nodes[n].files for n in NAMES} == before
    assert rot.load(pki) is None and not pki.crt("ca-next").exists()


def test_plan_lists_phases_and_nodes_and_touches_nothing(setup: Any) -> None:
    c, nodes, pki = setup
    local = {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()}
    options_extra = {"ca_component": "front-proxy"}
    from kubexm.engine import EventBus, Executor, RunContext, RunOptions, get_registry
    from kubexm.hosts.pool import ConnectionPool

    reports: list[Any] = []
    options = RunOptions(dry_run=True, offline=True, extra=options_extra)
    ctx = RunContext(c, options, bus=EventBus([lambda e: reports.append(e) if e.kind == "report" else None]),
                     pool=ConnectionPool(c, options.connect, factory=nodes.fleet.factory))
    import asyncio

    asyncio.run(Executor(ctx).run_pipeline(get_registry().pipeline("RotateCAPipeline")))
    assert not any(nodes[n].commands for n in NAMES)
    assert {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()} == local
    (event,) = reports
    rows = event.data["rows"]
    assert [(r[0], r[1]) for r in rows] == [(f"{i} {p}", m) for i, p in enumerate(rot.PHASES, 1) for m in CPS]


def test_local_pki_steps_are_safe_to_repeat(tmp_path: Path) -> None:
    pki = PKI(tmp_path / "pki", key_type="ecdsa")
    pki.ensure(etcd_specs(sample_cluster()))
    old = pki.crt("etcd/ca").read_bytes()
    _, change = rot.begin(pki, "etcd")
    assert change is not None
    nxt = pki.crt("etcd/ca-next").read_bytes()
    _, again = rot.begin(pki, "etcd")
    assert again is None and pki.crt("etcd/ca-next").read_bytes() == nxt  # an interrupted start keeps its CA
    assert rot.bundle(pki, "etcd/ca", "trust") == old + nxt
    assert rot.promote(pki, "etcd/ca") and not rot.promote(pki, "etcd/ca")
    assert pki.crt("etcd/ca").read_bytes() == nxt and pki.crt("etcd/ca-old").read_bytes() == old
    assert rot.bundle(pki, "etcd/ca", "reissue") == nxt + old and rot.bundle(pki, "etcd/ca", "drop") == nxt
    (pki.root / rot.RECORD).write_text("{not json")
    with pytest.raises(KubexmError, match="not a readable CA rotation record"):
        rot.load(pki)


def test_upgrade_and_add_are_refused_during_a_service_account_key_rotation(setup: Any) -> None:
    c, _nodes, pki = setup
    rot.refuse_during_rotation(c, "upgrade")  # nothing in progress: allowed
    (pki.root / "sa-rotation.json").write_text("{}")
    with pytest.raises(UsageError, match="kubexm token rotate"):
        rot.refuse_during_rotation(c, "add nodes to")


def test_the_local_admin_kubeconfig_follows_the_rotation(setup: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from pki.test_cert_steps import _moves

    from kubexm.pki.layout import kubeconfig_specs
    from kubexm.steps.kubernetes import kubeconfig_path

    c, nodes, pki = setup
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kube-config"))
    local = kubeconfig_path(c)
    local.parent.mkdir(parents=True, exist_ok=True)
    local.write_text(pki.kubeconfig(kubeconfig_specs(c)["admin.conf"], c.name, "https://lb.kubexm.local:6443"))
    seen: list[int] = []  # CAs the local admin kubeconfig trusts whenever an API server gets new files

    def record(h: Any, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        if h.name == "master2" and "apiserver.crt" in m.string:
            seen.append(len(certs_in(conf_ca(local.read_bytes()))))
        return _moves(h, m, stdin)

    nodes["master2"].handlers.insert(0, (re.compile(r"^(mv -f(T)? --|ln -sfn --) "), record))
    report, _ = run(c, nodes, "RotateCAPipeline", ca_component="kubernetes")
    assert report.ok, failures(report)
    assert seen == [2]  # while API servers change over, this machine's kubectl trusts both CAs
    new_ca = pki.crt("ca").read_bytes()
    assert conf_ca(local.read_bytes()) == new_ca  # and only the new one at the end
    assert verify(new_ca, conf_client(local.read_bytes()), tmp_path)
    merged = YAML(typ="safe").load((tmp_path / "kube-config").read_text())
    assert base64.b64decode(merged["clusters"][0]["cluster"]["certificate-authority-data"]) == new_ca

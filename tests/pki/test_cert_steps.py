"""`certs check` and `certs renew` on MemoryHost nodes that hold what kubexm and kubeadm put there.

The nodes answer the one read command from their in-memory files (the shell script itself runs for real
in test_inventory.py); moves, links and markers change those files, so a second run sees the result of
the first. What the nodes received is checked with the real openssl.
"""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import itertools
import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import NameOID
from ruamel.yaml import YAML
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, RunContext, RunOptions, get_registry
from kubexm.hosts.pool import ConnectionPool
from kubexm.pki import PKI
from kubexm.pki.certs import cert_pem, key_pem, make_ca, new_key, sign_leaf
from kubexm.pki.inventory import KUBELET_CLIENT, node_inventory
from kubexm.pki.layout import etcd_specs, kubeconfig_specs, kubernetes_specs
from kubexm.pki.renewal import RECORD
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.etcd import cluster_pki

CPS = ["master1", "master2", "master3"]
WORKERS = ["worker1", "worker2"]
NAMES = [*CPS, *WORKERS]
MANIFESTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


def cluster() -> Cluster:
    c = parse_cluster(sample_config("prod", with_ha=True))
    c.spec.pki.key_type = "ecdsa"  # fast keys: RSA generation would dominate the run time
    return c


def openssl(*args: str, data: bytes | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["openssl", *args], input=data.decode() if data else None, capture_output=True, text=True)


# -- fake nodes -----------------------------------------------------------------------------------------------------

def _read(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    """What the read script prints (run for real by bash in test_inventory.py) from the node's files."""
    certs, confs, probes = (shlex.split(x) for x in re.findall(r"for f in (.*?); do", m.string))
    out: list[str] = []
    for path in certs:
        if path in h.files:
            out.append(f"#kubexm-file {path}")
            out += [b for b in re.findall(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----",
                                          h.files[path].decode(), re.S)]
    for path in confs:
        if path in h.files:
            out.append(f"#kubexm-file {path}")
            out += [line for line in h.files[path].decode().splitlines() if "client-key-data" not in line]
    out += [f"#kubexm-present {p}" for p in probes if p in h.files]
    return 0, "\n".join(out) + "\n", ""


def _moves(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    for part in m.string.split(" && "):
        words = shlex.split(part)
        if words[:3] == ["mv", "-f", "--"] or words[:3] == ["mv", "-fT", "--"]:
            src, dst = words[3], words[4]
            if src not in h.files:
                return 1, "", f"mv: cannot stat '{src}'"
            h.files[dst] = h.files.pop(src)
            h.modes[dst] = h.modes.pop(src, 0o644)
        elif words[:3] == ["ln", "-sfn", "--"]:
            h.files[words[4]] = h.files[words[3]]  # the link resolves to its target's content
            h.modes[words[4]] = 0o777
    return 0, "", ""


def _touch(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    for path in shlex.split(m.string.split("touch --", 1)[1]):
        h.files[path] = b""
    return 0, "", ""


def _rm(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    for path in shlex.split(m.string)[3:]:
        h.files.pop(path, None)
    return 0, "", ""


class Nodes:
    """A fleet of MemoryHosts and one log of (host, command) across all of them, in the order sent."""

    def __init__(self, c: Cluster) -> None:
        self.c = c
        self.fleet = MemoryFleet(NAMES)
        self.log: list[tuple[str, str]] = []
        self.etcd_down: set[str] = set()
        for _name, h in self.fleet.hosts.items():
            self._wrap(h)
            h.on(r"#kubexm-file", _read)
            h.on(r"^(mv -f(T)? --|ln -sfn --) ", _moves)
            h.on(r"^mkdir -p -- /var/lib/kubexm/restart-pending && touch -- ", _touch)
            h.on(r"^rm -f -- ", _rm)
            h.on(r"curl -fsS", self._health)
            h.on(r"etcdctl .*endpoint health", self._etcdctl_health)

    def _wrap(self, h: MemoryHost) -> None:
        original = h.execute

        def execute(command: str, stdin: bytes | None) -> Any:
            self.log.append((h.name, command))
            return original(command, stdin)

        h.execute = execute  # type: ignore[method-assign]

    def _health(self, h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        urls = shlex.split(re.search(r"for u in (.*?); do", m.string).group(1))  # type: ignore[union-attr]
        down = {f"https://{self.c.host(n).internal_ip}:2379" for n in self.etcd_down}
        return 0, "".join(f"{'down' if u in down else 'up'} {u}\n" for u in urls), ""

    def _etcdctl_health(self, h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        endpoints = re.search(r"--endpoints=(\S+)", m.string).group(1).strip("'").split(",")  # type: ignore[union-attr]
        down = {f"https://{self.c.host(n).internal_ip}:2379" for n in self.etcd_down}
        answers = [{"endpoint": e, "health": e not in down} for e in endpoints]
        return (1 if down else 0), json.dumps(answers), ""

    def __getitem__(self, name: str) -> MemoryHost:
        return self.fleet[name]

    def clear(self) -> None:
        self.log.clear()
        for h in self.fleet.hosts.values():
            h.commands.clear()

    def sent(self, name: str) -> list[str]:
        return [c for h, c in self.log if h == name]


def kubeconfig_text(ca: bytes, cert: bytes | None, key: bytes | None, server: str, user: str,
                    cert_file: str | None = None) -> bytes:
    u: dict[str, Any] = {"client-certificate": cert_file, "client-key": cert_file} if cert_file else {
        "client-certificate-data": base64.b64encode(cert or b"").decode(),
        "client-key-data": base64.b64encode(key or b"").decode()}
    doc = {"apiVersion": "v1", "kind": "Config",
           "clusters": [{"name": "kubernetes", "cluster": {"certificate-authority-data": base64.b64encode(ca).decode(),
                                                          "server": server}}],
           "contexts": [{"name": f"{user}@kubernetes", "context": {"cluster": "kubernetes", "user": user}}],
           "current-context": f"{user}@kubernetes", "users": [{"name": user, "user": u}]}
    import io

    out = io.StringIO()
    YAML().dump(doc, out)
    return out.getvalue().encode()


def install(nodes: Nodes, pki: PKI) -> None:
    """What a kubexm install leaves: its PKI files as placed, kubeadm's kubeconfigs (signed on the node by
    the same CA with their own keys), kubelet's rotated client PEM and self-signed serving certificate."""
    c = nodes.c
    ca_cert, ca_key = pki.load("ca")
    for name in NAMES:
        h = nodes[name]
        ip = c.host(name).internal_ip
        for p in node_inventory(c, name):
            if p.kind == "cert" and p.name != "kubelet-serving":
                assert p.local is not None
                h.files[p.path] = pki.crt(p.local).read_bytes()
                if p.ca is not None:
                    h.files[p.key_path] = pki.key(p.local).read_bytes()
                    h.modes[p.key_path] = 0o600
            elif p.kind == "keypair":
                h.files[p.path] = pki.key("sa").read_bytes()
                h.files[p.path[:-4] + ".pub"] = (pki.root / "sa.pub").read_bytes()
            elif p.kind == "kubeconfig" and p.name != "kubelet.conf":
                assert p.spec is not None
                key = new_key("ecdsa")
                cert = sign_leaf(p.spec, key, ca_cert, ca_key)
                server = f"https://{ip}:6443" if p.name in ("controller-manager.conf", "scheduler.conf") \
                    else "https://lb.kubexm.local:6443"
                h.files[p.path] = kubeconfig_text(cert_pem(ca_cert), cert_pem(cert), key_pem(key), server,
                                                  p.spec.common_name)
                h.modes[p.path] = 0o600
            elif p.name == "kubelet.conf":
                h.files[p.path] = kubeconfig_text(cert_pem(ca_cert), None, None, "https://lb.kubexm.local:6443",
                                                  "default-auth", cert_file=KUBELET_CLIENT)
            elif p.name == "kubelet-client":
                assert p.spec is not None
                key = new_key("ecdsa")
                h.files[p.path] = cert_pem(sign_leaf(p.spec, key, ca_cert, ca_key)) + key_pem(key)
        if "worker" in c.roles_of(name) or name in CPS:
            self_key = new_key("ecdsa")
            h.files["/var/lib/kubelet/pki/kubelet.crt"] = cert_pem(_self_signed(f"{name}-ca@1700000000", self_key))
            h.files["/var/lib/kubelet/pki/kubelet.key"] = key_pem(self_key)
        if name in CPS:
            for component in MANIFESTS:
                h.files[f"/etc/kubernetes/manifests/{component}.yaml"] = f"kind: Pod # {component}\n".encode()


def _self_signed(cn: str, key: Any) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = dt.datetime.now(dt.UTC)
    return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(1).not_valid_before(now).not_valid_after(now + dt.timedelta(days=365))
            .sign(key, hashes.SHA256()))


@pytest.fixture
def setup() -> tuple[Cluster, Nodes, PKI]:
    c = cluster()
    pki = cluster_pki(c)
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c)])
    pki.ensure_service_account_key()
    nodes = Nodes(c)
    install(nodes, pki)
    return c, nodes, pki


def run(c: Cluster, nodes: Nodes, pipeline: str, *, dry_run: bool = False, **extra: Any) -> tuple[Any, dict[str, Any]]:
    options = RunOptions(dry_run=dry_run, retries=1, retry_backoff=0.01, extra=extra)
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=nodes.fleet.factory))
    report = asyncio.run(Executor(ctx).run_pipeline(get_registry().pipeline(pipeline)))
    return report, ctx.shared


def rows(doc: dict[str, Any], host: str) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in doc["certificates"] if r["host"] == host}


def failures(report: Any) -> list[tuple[str, str, str]]:
    return [(f.host, f.step, f.message) for f in report.failures]


# -- check ----------------------------------------------------------------------------------------------------------

def test_check_reads_every_file_from_the_nodes_and_judges_it_against_the_local_pki(setup: Any) -> None:
    c, nodes, _pki = setup
    report, shared = run(c, nodes, "CheckCertsPipeline", warn_days=30)
    assert report.ok, failures(report)
    doc = shared["certs_report"]
    m1 = rows(doc, "master1")
    assert set(m1) >= {"ca", "etcd-ca", "etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver",
                       "apiserver-kubelet-client", "apiserver-etcd-client", "front-proxy-ca", "front-proxy-client", "sa",
                       "admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf",
                       "kubelet-client", "kubelet-serving"}
    assert m1["apiserver"]["chains_to"] == "kubernetes" and m1["apiserver"]["differs_from_local"] is False
    assert "192.168.0.13" in m1["apiserver"]["sans"] and m1["apiserver"]["subject_cn"] == "kube-apiserver"
    assert m1["etcd-server"]["chains_to"] == "etcd" and m1["front-proxy-client"]["chains_to"] == "front-proxy"
    # kubeadm's kubeconfigs: the same CA, but not the local PKI's certificate
    assert m1["admin.conf"]["chains_to"] == "kubernetes" and m1["admin.conf"]["differs_from_local"] in (True, None)
    assert m1["kubelet.conf"]["subject_cn"] == f"(client certificate in {KUBELET_CLIENT})"
    assert m1["kubelet-serving"]["chains_to"] == "self-signed" and m1["kubelet-serving"]["problems"]
    assert m1["sa"]["status"] == "ok"
    w1 = rows(doc, "worker1")
    assert set(w1) == {"ca", "kubelet.conf", "kubelet-client", "kubelet-serving"}
    assert doc["hosts"]["worker1"] == {"reachable": True, "error": None} and doc["status"] == "ok"
    # exactly one command per node, and it only reads
    assert [c for c in nodes.sent("master1") if "#kubexm-file" in c] == nodes.sent("master1")[-1:]
    assert all("client-key-data" not in line for r in doc["certificates"] for line in r["problems"])


def test_check_flags_sans_the_spec_now_needs_a_foreign_certificate_and_expiry(setup: Any) -> None:
    c, nodes, pki = setup
    # The spec gained a SAN after install: the node's apiserver certificate lacks it.
    c.spec.kubernetes.api_server_cert_sans.append("api.example.org")
    # A certificate from another CA on master2, and an almost expired one on master3.
    other = PKI(pki.root.parent / "other")
    other.ensure(kubernetes_specs(c))
    nodes["master2"].files["/etc/kubernetes/pki/front-proxy-client.crt"] = other.crt("front-proxy-client").read_bytes()
    ca_cert, ca_key = pki.load("ca")
    spec = next(s for s in kubernetes_specs(c) if s.path == "apiserver-kubelet-client")
    nodes["master3"].files["/etc/kubernetes/pki/apiserver-kubelet-client.crt"] = cert_pem(
        sign_leaf(spec, new_key("ecdsa"), ca_cert, ca_key, days=5))
    report, shared = run(c, nodes, "CheckCertsPipeline", warn_days=30)
    assert report.ok, failures(report)
    doc = shared["certs_report"]
    problems = rows(doc, "master1")["apiserver"]["problems"]
    assert any("api.example.org" in p and "kubexm certs renew apiserver" in p for p in problems), problems
    fp = rows(doc, "master2")["front-proxy-client"]
    assert fp["chains_to"] is None and fp["differs_from_local"] is True
    assert any("not signed by the local front-proxy CA" in p for p in fp["problems"])
    assert rows(doc, "master3")["apiserver-kubelet-client"]["status"] == "expiring"
    assert doc["status"] == "expiring" and shared["certs_worst"] == "expiring"


def test_check_names_an_unreachable_node_and_still_reports_the_others(setup: Any) -> None:
    c, nodes, _ = setup
    nodes["worker2"].down = True
    _report, shared = run(c, nodes, "CheckCertsPipeline")
    doc = shared["certs_report"]
    assert doc["hosts"]["worker2"]["reachable"] is False and "connection" in doc["hosts"]["worker2"]["error"]
    assert rows(doc, "worker1") and not rows(doc, "worker2")
    assert "worker2" in shared["certs_unreachable"]


# -- renew ----------------------------------------------------------------------------------------------------------

def _verify(pki: PKI, ca: str, pem: bytes, tmp: Path) -> str:
    path = tmp / "leaf.pem"
    path.write_bytes(pem)
    return openssl("verify", "-CAfile", str(pki.crt(ca)), str(path)).stdout.strip()


def _embedded(conf: bytes) -> tuple[bytes, str]:
    doc = YAML(typ="safe").load(conf)
    user = doc["users"][0]["user"]
    return base64.b64decode(user["client-certificate-data"]), doc["clusters"][0]["cluster"]["server"]


def test_renew_all_reissues_places_atomically_and_restarts_node_by_node(setup: Any, tmp_path: Path) -> None:
    c, nodes, pki = setup
    old_apiserver = pki.crt("apiserver").read_bytes()
    old_key = pki.key("apiserver").read_bytes()
    old_cm_server = _embedded(nodes["master2"].files["/etc/kubernetes/controller-manager.conf"])[1]
    report, shared = run(c, nodes, "RenewCertsPipeline", renew=["all"])
    assert report.ok, failures(report)
    assert not (pki.root / RECORD).exists()  # every node done: the renewal is closed

    new_apiserver = pki.crt("apiserver").read_bytes()
    assert new_apiserver != old_apiserver and pki.key("apiserver").read_bytes() == old_key  # same key, new cert
    for name in CPS:
        h = nodes[name]
        assert h.files["/etc/kubernetes/pki/apiserver.crt"] == new_apiserver
        assert _verify(pki, "ca", h.files["/etc/kubernetes/pki/apiserver.crt"], tmp_path).endswith(": OK")
        assert _verify(pki, "etcd/ca", h.files["/etc/kubernetes/pki/etcd/server.crt"], tmp_path).endswith(": OK")
        assert h.modes["/etc/kubernetes/pki/apiserver.key"] == 0o600
        cert, server = _embedded(h.files["/etc/kubernetes/controller-manager.conf"])
        assert _verify(pki, "ca", cert, tmp_path).endswith(": OK")
        assert cert == pki.crt("kubeconfig/controller-manager").read_bytes()
        assert h.modes["/etc/kubernetes/controller-manager.conf"] == 0o600
        if name == "master2":
            assert server == old_cm_server  # the node's own endpoint, as kubeadm wrote it, is kept
        text = openssl("x509", "-noout", "-text", data=h.files["/var/lib/kubelet/pki/kubelet.crt"]).stdout
        assert f"DNS:{name}" in text and "Issuer: CN = kubernetes" in text
        client = h.files[KUBELET_CLIENT]
        assert b"PRIVATE KEY" in client and _verify(pki, "ca", client, tmp_path).endswith(": OK")
        assert not [p for p in h.files if p.endswith(".kubexm-renew") or p.startswith("/var/lib/kubexm/restart")]
        assert all(f"/etc/kubernetes/manifests/{m}.yaml" in h.files for m in MANIFESTS)
    # Atomic: every renewed file was written under a temporary name in its own directory, then moved.
    puts = [c for c in nodes["master1"].commands if c.startswith("<put ")]
    assert puts and all(".kubexm-renew>" in p or "/kubelet-client-" in p for p in puts)

    # One control-plane node at a time, in order; /readyz of that node before the next node starts.
    def first(name: str, needle: str) -> int:
        return next(i for i, (h, cmd) in enumerate(nodes.log) if h == name and needle in cmd)

    def last(name: str, needle: str) -> int:
        return max(i for i, (h, cmd) in enumerate(nodes.log) if h == name and needle in cmd)

    for a, b in itertools.pairwise(CPS):
        assert last(a, "--raw=/readyz") < first(b, "kube-apiserver.yaml.kubexm-parked")
    # On each node: apiserver, then controller-manager, then scheduler, then kubelet; /readyz after the apiserver.
    for name in CPS:
        seq = [first(name, f"{m}.yaml.kubexm-parked") for m in ("kube-apiserver", "kube-controller-manager",
                                                                  "kube-scheduler")]
        assert seq == sorted(seq)
        assert seq[0] < first(name, "--raw=/readyz") < seq[1]
        assert seq[2] < first(name, "systemctl restart -- kubelet")
        readyz = next(cmd for h, cmd in nodes.log if h == name and "--raw=/readyz" in cmd)
        assert f"--server=https://{c.host(name).internal_ip}:6443" in readyz  # this node, not the balancer
    # etcd: members one by one, each only after the health of all members was read
    for name in CPS:
        assert first(name, "endpoint health") < first(name, "systemctl restart -- etcd")
    for a, b in itertools.pairwise(CPS):
        assert last(a, "systemctl restart -- etcd") < first(b, "systemctl restart -- etcd")
    # workers: kubelet only
    w = nodes.sent("worker1")
    assert any("systemctl restart -- kubelet" in x for x in w) and not any("kubexm-parked" in x for x in w)

    # A second run re-issues again (a new renewal), but a check right after finds every node as local.
    report, shared = run(c, nodes, "CheckCertsPipeline")
    for r in shared["certs_report"]["certificates"]:
        if r["host"] != "deploy-machine" and r["name"] not in ("ca", "etcd-ca", "front-proxy-ca", "sa"):
            assert r["differs_from_local"] in (False, None), r


def test_plan_changes_nothing_and_lists_per_node_what_would_be_renewed(setup: Any) -> None:
    c, nodes, pki = setup
    before = {n: dict(nodes[n].files) for n in NAMES}
    local = {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()}
    report, shared = run(c, nodes, "RenewCertsPipeline", dry_run=True, renew=["apiserver", "kubelet-client"])
    assert report.ok, failures(report)
    assert {n: nodes[n].files for n in NAMES} == before
    assert {p: p.read_bytes() for p in pki.root.rglob("*") if p.is_file()} == local
    assert not any(cmd.startswith(("<put", "mv ", "touch", "systemctl restart")) for n in NAMES for cmd in nodes[n].commands)
    plan = shared["renew_plan"]
    assert {r["name"]: r["action"] for r in plan["master1"]} == {"apiserver": "renew", "kubelet-client": "renew"}
    assert plan["worker1"] == [{"name": "kubelet-client", "path": KUBELET_CLIENT, "action": "renew",
                                "why": "re-issued from the same CA", "restart": "kubelet"}]
    statuses = {(r.task, r.status) for r in report.records if r.step == "RenewNodeCerts" and r.host in CPS}
    assert statuses == {("RenewControlPlaneCerts", "would-change"), ("RenewEtcdMemberCerts", "ok")}


def test_renew_named_certificates_touches_only_those_and_what_uses_them(setup: Any, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    c, nodes, pki = setup
    from kubexm.steps.kubernetes import kubeconfig_path

    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kube" / "config"))
    local_admin = kubeconfig_path(c)
    local_admin.write_text("stale\n")  # the deploy machine's admin kubeconfig from `create cluster`
    before = dict(nodes["master1"].files)
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["admin.conf"])
    assert report.ok, failures(report)
    assert _embedded(local_admin.read_bytes())[0] == pki.crt("kubeconfig/admin").read_bytes()
    assert _embedded(nodes["master2"].files["/etc/kubernetes/admin.conf"])[0] == pki.crt("kubeconfig/admin").read_bytes()
    changed = {p for p, v in nodes["master1"].files.items() if before.get(p) != v}
    assert changed == {"/etc/kubernetes/admin.conf"}
    assert not any("systemctl restart" in cmd or "kubexm-parked" in cmd for _, cmd in nodes.log)
    assert not [cmd for n in WORKERS for cmd in nodes[n].commands if cmd.startswith("<put")]


def test_node_unreachable_mid_renew_others_complete_and_a_rerun_finishes_it(setup: Any) -> None:
    c, nodes, pki = setup
    nodes["master2"].down = True
    report, _shared = run(c, nodes, "RenewCertsPipeline", renew=["apiserver", "kubelet-client"])
    assert not report.ok
    failure = failures(report)
    assert failure and failure[-1][1] == "FinishRenewal" and "master2" in failure[-1][2]
    assert "re-run" in failure[-1][2] or "again" in failure[-1][2]
    issued = pki.crt("apiserver").read_bytes()
    for name in ("master1", "master3"):
        assert nodes[name].files["/etc/kubernetes/pki/apiserver.crt"] == issued
    assert nodes["worker1"].files[KUBELET_CLIENT].startswith(pki.crt("kubeconfig/kubelet-worker1").read_bytes())
    assert (pki.root / RECORD).exists()

    nodes["master2"].down = False
    nodes.clear()
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["apiserver", "kubelet-client"])
    assert report.ok, failures(report)
    assert pki.crt("apiserver").read_bytes() == issued  # not re-issued a second time
    assert nodes["master2"].files["/etc/kubernetes/pki/apiserver.crt"] == issued
    for name in ("master1", "master3", "worker1", "worker2"):  # already renewed: skipped by their check
        assert not [cmd for cmd in nodes[name].commands if cmd.startswith(("<put", "mv ", "systemctl restart"))], name
    assert any("kube-apiserver.yaml.kubexm-parked" in cmd for cmd in nodes.sent("master2"))
    assert not (pki.root / RECORD).exists()


def test_etcd_member_is_not_restarted_when_that_would_lose_quorum(setup: Any) -> None:
    c, nodes, _pki = setup
    nodes.etcd_down = {"master2"}
    nodes["master2"].down = True
    report, shared = run(c, nodes, "RenewCertsPipeline", renew=["etcd-server"])
    assert not report.ok
    unfinished = shared["certs_unfinished"]
    assert set(unfinished) == {"master1", "master2", "master3"} and "unreachable" in unfinished["master2"]
    assert "quorum" in unfinished["master1"] and "quorum" in unfinished["master3"]
    for name in ("master1", "master3"):
        assert not any("systemctl restart -- etcd" in cmd for cmd in nodes.sent(name))
        # refused before anything changed on the member
        assert not any(cmd.startswith("<put") for cmd in nodes[name].commands)


def test_a_restart_left_pending_is_made_by_the_next_run(setup: Any) -> None:
    c, nodes, pki = setup
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["scheduler.conf"])
    assert report.ok, failures(report)
    # As a run cut off on master3 after placing the file, before the scheduler restarted, leaves it:
    # the renewal still open and the restart owed on that node.
    from kubexm.pki.renewal import record_pending

    record_pending(pki, ["scheduler.conf"])
    nodes["master3"].files["/var/lib/kubexm/restart-pending/kubexm-static-pod@kube-scheduler"] = b""
    issued = pki.crt("kubeconfig/scheduler").read_bytes()
    nodes.clear()
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["scheduler.conf"])
    assert report.ok, failures(report)
    assert any("kube-scheduler.yaml.kubexm-parked" in cmd for cmd in nodes.sent("master3"))
    assert not any("kubexm-parked" in cmd for cmd in nodes.sent("master1"))
    assert "/var/lib/kubexm/restart-pending/kubexm-static-pod@kube-scheduler" not in nodes["master3"].files
    assert pki.crt("kubeconfig/scheduler").read_bytes() == issued


def test_a_node_that_trusts_another_ca_is_refused(setup: Any) -> None:
    c, nodes, _pki = setup
    other_key = new_key("ecdsa")
    from kubexm.pki.layout import CA

    nodes["master1"].files["/etc/kubernetes/pki/ca.crt"] = cert_pem(make_ca(CA, other_key))
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["apiserver"])
    assert not report.ok
    msg = failures(report)[0]
    assert msg[0] == "master1" and "trusts a different ca CA" in msg[2]
    assert not any(cmd.startswith("<put") for cmd in nodes["master1"].commands)


def test_expired_ca_or_missing_ca_key_stops_before_any_node_changes(setup: Any) -> None:
    c, nodes, pki = setup
    pki.key("front-proxy-ca").unlink()
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["front-proxy-client"])
    assert not report.ok
    assert any("front-proxy-ca.key is missing" in f[2] for f in failures(report))
    assert not any(cmd.startswith(("<put", "mv ")) for n in NAMES for cmd in nodes[n].commands)
    assert kubeconfig_specs(c)  # the spec still loads: nothing else was touched


def test_stacked_etcd_restarts_its_static_pod_member_by_member_keeping_quorum(tmp_path: Path) -> None:
    c = cluster()
    c.spec.etcd.type = "kubeadm"
    pki = cluster_pki(c)
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c)])
    pki.ensure_service_account_key()
    nodes = Nodes(c)
    install(nodes, pki)
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["etcd-server"])
    assert report.ok, failures(report)
    for name in CPS:
        sent = nodes.sent(name)
        health = next(i for i, cmd in enumerate(sent) if "curl -fsS" in cmd)
        park = next(i for i, cmd in enumerate(sent) if "etcd.yaml.kubexm-parked" in cmd)
        assert health < park and not any("kube-apiserver.yaml.kubexm-parked" in cmd for cmd in sent)
        assert not any("systemctl restart -- etcd" in cmd for cmd in sent)  # a static pod, not a unit
        leaf = nodes[name].files["/etc/kubernetes/pki/etcd/server.crt"]
        assert _verify(pki, "etcd/ca", leaf, tmp_path).endswith(": OK")
        assert f"DNS:{name}" in openssl("x509", "-noout", "-text", data=leaf).stdout
    # with one member down, the others are not restarted (2 of 3 would become 1 of 3)
    nodes.etcd_down = {"master3"}
    nodes["master3"].down = True
    nodes.clear()
    report, shared = run(c, nodes, "RenewCertsPipeline", renew=["etcd-server"])
    assert not report.ok and "quorum" in shared["certs_unfinished"]["master1"]
    assert not any("kubexm-parked" in cmd for cmd in nodes.sent("master1"))


def test_the_registry_certificate_is_checked_and_renewed_with_the_service_owning_its_key(tmp_path: Path) -> None:
    from kubexm.steps import registry

    c = cluster()
    c.spec.registry.type = "docker-registry"
    c.spec.role_groups.registry = ["worker1"]
    pki = cluster_pki(c)
    pki.ensure([*kubernetes_specs(c), *etcd_specs(c), *registry.cert_specs(c)])
    pki.ensure_service_account_key()
    nodes = Nodes(c)
    install(nodes, pki)
    _, shared = run(c, nodes, "CheckCertsPipeline")
    w1 = rows(shared["certs_report"], "worker1")
    assert w1["registry-server"]["chains_to"] == "registry" and w1["registry-ca"]["chains_to"] == "registry"
    assert w1["registry-server"]["differs_from_local"] is False

    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["registry"])
    assert report.ok, failures(report)
    h = nodes["worker1"]
    assert h.files[registry.CERT_FILE] == pki.crt("registry/nodes/worker1/server").read_bytes()
    assert _verify(pki, "registry/ca", h.files[registry.CERT_FILE], tmp_path).endswith(": OK")
    tmp_key = f"{registry.TLS_DIR}/.server.key.kubexm-renew"
    sent = nodes.sent("worker1")
    chown = next(i for i, cmd in enumerate(sent) if cmd.startswith("chown") and tmp_key in cmd)
    assert "root:docker-registry" in sent[chown] and "chmod -- 640" in sent[chown]
    move = next(i for i, cmd in enumerate(sent) if cmd.startswith("mv -f --") and tmp_key in cmd)
    restart = next(i for i, cmd in enumerate(sent) if "systemctl restart -- docker-registry" in cmd)
    assert chown < move < restart
    assert not any("systemctl restart -- docker-registry" in cmd for n in CPS for cmd in nodes.sent(n))


def test_without_ss_no_static_pod_is_moved_blindly(setup: Any) -> None:
    c, nodes, _pki = setup
    nodes["master1"].on(r"^command -v ss", lambda h, m, s: (1, "", ""))
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["scheduler.conf"])
    assert not report.ok
    assert any("no `ss` (iproute2)" in f[2] for f in failures(report) if f[0] == "master1")
    assert not any("kubexm-parked" in cmd for cmd in nodes.sent("master1"))
    assert "/var/lib/kubexm/restart-pending/kubexm-static-pod@kube-scheduler" in nodes["master1"].files  # still owed
    assert not any("kubexm-parked" in cmd for cmd in nodes.sent("master2"))  # the roll stopped there

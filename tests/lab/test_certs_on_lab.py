"""Certificates on real nodes running real etcd 3.4: `certs renew` and `certs rotate-ca --component etcd` with a
writer at 10 writes/s and a health poller running the whole time. No write may fail or be lost, a quorum of
members must answer throughout, and afterwards every etcd leaf on every node verifies against the new CA and
not against the old one; every certificate kubexm placed is read back from the nodes with openssl."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import ssl
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from kubexm.lab.lab import Lab

from .conftest import kubexm

pytestmark = pytest.mark.lab
NODE_PKI = "/etc/kubernetes/pki/etcd"
NODES = ("node1", "node2", "node3")


@pytest.fixture(scope="module")
def certlab(lab_env: Path) -> Iterator[Lab]:
    lab = Lab("kxcert")
    try:
        lab.up(3, "10.213.85.0/24")
        res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "etcd", timeout=1200)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
        yield lab
    finally:
        lab.down()


def ssh(lab: Lab, node: str, command: str, stdin: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    state = lab.load()
    assert state is not None
    return subprocess.run(lab.ssh_argv(lab.node(state, node), command), input=stdin, capture_output=True, text=True,
                          timeout=120, check=check)


def addresses(lab: Lab) -> dict[str, str]:
    state = lab.load()
    assert state is not None
    return {n: lab.node(state, n).address for n in NODES}


@dataclass
class Traffic:
    """A client of the cluster from this machine over etcd's HTTP/JSON gateway, with the certificates a client
    has: the health-check client pair of the local PKI (re-read for every request, as renewed files are) and
    trust in the old CA and whatever CA the local PKI holds now (the trust a client gets during a rotation)."""

    pki: Path
    endpoints: list[str]
    old_ca: str
    acked: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    polls: list[tuple[float, int, int]] = field(default_factory=list)  # (time, healthy, answering)
    poll_errors: list[str] = field(default_factory=list)  # why a member did not answer a poll, for the report
    stop: threading.Event = field(default_factory=threading.Event)

    def context(self) -> ssl.SSLContext:
        cas = self.old_ca
        for path in sorted((self.pki / "etcd").glob("ca*.crt")):
            # The rotation promotes and removes ca-next.crt while this reads: a file gone between the listing
            # and the read is the harness racing kubexm, not a member that does not answer.
            with contextlib.suppress(FileNotFoundError):
                cas += path.read_text()
        ctx = ssl.create_default_context(cadata=cas)
        ctx.load_cert_chain(self.pki / "etcd" / "healthcheck-client.crt", self.pki / "etcd" / "healthcheck-client.key")
        return ctx

    def request(self, endpoint: str, path: str, body: dict[str, object] | None, timeout: float) -> dict[str, object]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(endpoint + path, data=data, method="GET" if body is None else "POST")
        with urllib.request.urlopen(req, timeout=timeout, context=self.context()) as res:
            doc: dict[str, object] = json.loads(res.read())
            return doc

    def put(self, i: int) -> None:
        """One write as a client library makes it: to one member, on to the next when that one does not answer,
        given up (a failed write) after 5 seconds."""
        key = f"rot/{i:05d}"
        body = {"key": base64.b64encode(key.encode()).decode(), "value": base64.b64encode(str(i).encode()).decode()}
        deadline = time.monotonic() + 5
        errors = []
        attempt = 0
        while time.monotonic() < deadline:
            endpoint = self.endpoints[(i + attempt) % len(self.endpoints)]
            attempt += 1
            try:
                answer = self.request(endpoint, "/v3/kv/put", body, timeout=2)
            except Exception as exc:  # refused while restarting, TLS, timeout: the next member is asked
                errors.append(f"{endpoint}: {exc}")
                time.sleep(0.05)
                continue
            if "header" in answer:
                self.acked.append(key)
                return
            errors.append(f"{endpoint}: {answer}")
        self.failed.append((key, "; ".join(errors[-3:])))

    def write(self) -> None:
        start, i = time.monotonic(), 0
        while not self.stop.is_set():
            self.put(i)
            i += 1
            time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))  # 10 writes a second

    def poll(self) -> None:
        while not self.stop.is_set():
            healthy = answering = 0
            for endpoint in self.endpoints:
                try:
                    doc = self.request(endpoint, "/health", None, timeout=2)
                except Exception as exc:
                    self.poll_errors.append(f"{time.monotonic():.1f} {endpoint}: {exc}")
                    continue
                answering += 1
                healthy += doc.get("health") == "true"
            self.polls.append((time.monotonic(), healthy, answering))
            time.sleep(0.5)

    def stored(self) -> set[str]:
        prefix = base64.b64encode(b"rot/").decode()
        end = base64.b64encode(b"rot0").decode()
        doc = self.request(self.endpoints[0], "/v3/kv/range", {"key": prefix, "range_end": end, "keys_only": True},
                           timeout=10)
        return {base64.b64decode(str(kv["key"])).decode() for kv in doc.get("kvs", [])}  # type: ignore[union-attr]


def longest_without_quorum(polls: list[tuple[float, int, int]]) -> float:
    """Seconds of the longest stretch in which fewer than two members answered healthy (a leader election)."""
    longest, since = 0.0, None
    for t, healthy, _ in polls:
        if healthy < 2:
            since = t if since is None else since
            longest = max(longest, t - since)
        else:
            since = None
    return longest


def openssl(lab: Lab, node: str, args: str) -> subprocess.CompletedProcess[str]:
    return ssh(lab, node, f"openssl {args} 2>&1", check=False)


def test_renew_and_rotate_the_etcd_ca_under_writes(certlab: Lab, kubexm_home: Path) -> None:
    lab = certlab
    cluster = str(lab.cluster_file)
    pki = kubexm_home / "clusters" / lab.name / "pki"
    old_ca = (pki / "etcd" / "ca.crt").read_text()

    plan = kubexm("certs", "rotate-ca", "--component", "etcd", "--plan", "-f", cluster)
    assert plan.returncode == 0, plan.stdout + plan.stderr
    for text in ("1 trust", "2 reissue", "3 drop", *NODES):
        assert text in plan.stdout, plan.stdout
    assert not (pki / "ca-rotation.json").exists() and not (pki / "etcd" / "ca-next.crt").exists()

    # An unhealthy member: refused in one line, nothing started.
    ssh(lab, "node3", "systemctl stop etcd")
    try:
        refused = kubexm("certs", "rotate-ca", "--component", "etcd", "-y", "-f", cluster)
        assert refused.returncode != 0 and "refusing to rotate a CA: etcd is not healthy" in refused.stdout + \
            refused.stderr, refused.stdout[-2000:] + refused.stderr
        assert not (pki / "ca-rotation.json").exists() and (pki / "etcd" / "ca.crt").read_text() == old_ca
    finally:
        ssh(lab, "node3", "systemctl start etcd")

    traffic = Traffic(pki, [f"https://{a}:2379" for a in addresses(lab).values()], old_ca)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # node3 back and healthy before the clock starts
        try:
            if all(traffic.request(e, "/health", None, 2).get("health") == "true" for e in traffic.endpoints):
                break
        except Exception:
            pass
        time.sleep(1)
    threads = [threading.Thread(target=traffic.write, daemon=True), threading.Thread(target=traffic.poll, daemon=True)]
    for t in threads:
        t.start()
    began = time.monotonic()
    try:
        time.sleep(3)
        t0 = time.monotonic()
        renew = kubexm("certs", "renew", "etcd", "-y", "-f", cluster, timeout=900)
        renew_took = time.monotonic() - t0
        assert renew.returncode == 0, renew.stdout[-3000:] + renew.stderr[-2000:]
        t0 = time.monotonic()
        rotate = kubexm("certs", "rotate-ca", "--component", "etcd", "-y", "-f", cluster, timeout=1500)
        rotate_took = time.monotonic() - t0
        print(rotate.stdout[-6000:])
        assert rotate.returncode == 0, rotate.stdout[-4000:] + rotate.stderr[-2000:]
        time.sleep(3)
    finally:
        traffic.stop.set()
        for t in threads:
            t.join(timeout=30)
    elapsed = time.monotonic() - began

    print(f"kxcert: {len(traffic.acked)} writes acknowledged, {len(traffic.failed)} failed in {elapsed:.0f}s; "
          f"{len(traffic.polls)} health polls, fewest answering {min(a for _, _, a in traffic.polls)}, "
          f"longest with fewer than 2 healthy {longest_without_quorum(traffic.polls):.1f}s; "
          f"renew {renew_took:.0f}s, rotate-ca {rotate_took:.0f}s")
    # Writes: none failed, none lost, at the rate asked.
    assert not traffic.failed, traffic.failed[:5]
    assert len(traffic.acked) >= 0.8 * elapsed * 10, (len(traffic.acked), elapsed)
    stored = traffic.stored()
    assert set(traffic.acked) <= stored, sorted(set(traffic.acked) - stored)[:10]
    # Quorum: at least two members answered every poll; a leader election never left fewer than two healthy
    # for more than a few seconds.
    assert traffic.polls and min(answering for _, _, answering in traffic.polls) >= 2, \
        (traffic.poll_errors[-6:], [p for p in traffic.polls if p[2] < 2])
    assert longest_without_quorum(traffic.polls) <= 5.0, traffic.polls

    # The rotation is closed and the local PKI holds the new CA alone.
    new_ca = (pki / "etcd" / "ca.crt").read_text()
    assert new_ca != old_ca and not (pki / "ca-rotation.json").exists()
    assert not (pki / "etcd" / "ca-old.crt").exists() and not (pki / "etcd" / "ca-next.crt").exists()

    now = dt.datetime.now(dt.UTC)
    ips = addresses(lab)
    for node in NODES:
        ssh(lab, node, "cat > /tmp/kx-old-ca.pem", stdin=old_ca)
        ssh(lab, node, "cat > /tmp/kx-new-ca.pem", stdin=new_ca)
        assert ssh(lab, node, f"cat {NODE_PKI}/ca.crt").stdout == new_ca  # trusts the new CA only
        for leaf in ("server", "peer", "healthcheck-client"):
            path = f"{NODE_PKI}/{leaf}.crt"
            good = openssl(lab, node, f"verify -CAfile /tmp/kx-new-ca.pem {path}")
            assert good.returncode == 0 and good.stdout.strip().endswith(": OK"), (node, leaf, good.stdout)
            bad = openssl(lab, node, f"verify -CAfile /tmp/kx-old-ca.pem {path}")
            assert bad.returncode != 0, (node, leaf, bad.stdout)
            # Read back: issuer, SANs, key usages, validity; the same certificate as the local PKI's.
            text = openssl(lab, node, f"x509 -noout -issuer -enddate -ext subjectAltName,keyUsage,extendedKeyUsage "
                                      f"-in {path}").stdout
            assert "issuer=CN = etcd-ca" in text, text
            assert "Digital Signature, Key Encipherment" in text, text
            local = pki / "etcd" / (f"nodes/{node}/{leaf}.crt" if leaf != "healthcheck-client" else f"{leaf}.crt")
            assert ssh(lab, node, f"cat {path}").stdout == local.read_text()
            if leaf == "healthcheck-client":
                assert "TLS Web Client Authentication" in text and "Server Authentication" not in text, text
            else:
                assert "TLS Web Server Authentication, TLS Web Client Authentication" in text, text
                for san in (f"DNS:{node}", "DNS:localhost", f"IP Address:{ips[node]}", "IP Address:127.0.0.1"):
                    assert san in text, (node, leaf, san, text)
            not_after = dt.datetime.strptime(text.split("notAfter=", 1)[1].splitlines()[0].strip(),
                                             "%b %d %H:%M:%S %Y %Z").replace(tzinfo=dt.UTC)
            assert dt.timedelta(days=364) < not_after - now <= dt.timedelta(days=365), (node, leaf, not_after)
            key_matches = ssh(lab, node, f"openssl x509 -noout -pubkey -in {path} | sha256sum; "
                                         f"openssl pkey -pubout -in {path[:-4]}.key | sha256sum").stdout.split("\n")
            assert key_matches[0].split()[0] == key_matches[1].split()[0]  # the key beside it belongs to it
        ca_text = openssl(lab, node, f"x509 -noout -subject -issuer -ext basicConstraints,keyUsage -in {NODE_PKI}/ca.crt")
        assert "subject=CN = etcd-ca" in ca_text.stdout and "issuer=CN = etcd-ca" in ca_text.stdout
        assert "CA:TRUE" in ca_text.stdout and "Certificate Sign" in ca_text.stdout, ca_text.stdout
        assert ssh(lab, node, "systemctl is-active etcd").stdout.strip() == "active"

    # `certs check` agrees: every etcd file on every node chains to the local (new) CA and equals the local copy.
    check = kubexm("certs", "check", "-f", cluster, "-o", "json")
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr
    doc = json.loads(check.stdout)
    rows = [r for r in doc["certificates"] if r["host"] in NODES]
    assert len(rows) == 3 * 4 and all(r["chains_to"] == "etcd" and not r["problems"] for r in rows), rows
    assert all(r["differs_from_local"] is False for r in rows), rows

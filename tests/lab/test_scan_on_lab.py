"""`kubexm scan cis` on real nodes running kubexm's TLS etcd: a world-readable etcd key fails 1.1.21 naming
the node and the path, `--fix --yes` tightens exactly what failed, and a re-scan passes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kubexm.lab.lab import Lab

from .conftest import kubexm, ssh

pytestmark = pytest.mark.lab
KEY = "/etc/kubernetes/pki/etcd/server.key"


@pytest.fixture(scope="module")
def cis_lab(lab_env: Path) -> Iterator[Lab]:
    """A lab of its own with kubexm's etcd on all three nodes (what this machine can run of a cluster)."""
    lab = Lab("kxcis")
    try:
        lab.up(3, "10.213.91.0/24")
        res = kubexm("create", "cluster", "-f", str(lab.cluster_file), "-y", "--tags", "etcd", timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr
        yield lab
    finally:
        lab.down()


def scan(lab: Lab, *args: str) -> tuple[int, dict[str, Any], str]:
    res = kubexm("scan", "cis", "-f", str(lab.cluster_file), "-o", "json", *args, timeout=600)
    assert "Traceback" not in res.stderr, res.stderr
    return res.returncode, json.loads(res.stdout), res.stderr


def item(doc: dict[str, Any], node: str, ident: str) -> dict[str, Any]:
    found: dict[str, Any] = next(r for r in doc["results"] if r["node"] == node and r["id"] == ident)
    return found


def test_world_readable_etcd_key_fails_then_fix_repairs_it(cis_lab: Lab) -> None:
    lab = cis_lab
    code, doc, _ = scan(lab)
    nodes = ["node1", "node2", "node3"]
    assert all(doc["hosts"][n]["reachable"] for n in nodes)
    for n in nodes:
        # kubexm's etcd: client and peer TLS with client-certificate auth, keys 0600, data directory 0700.
        for ident in ("2.1", "2.2", "2.3", "2.4", "2.5", "2.6", "1.1.11", "1.1.19", "1.1.20", "1.1.21"):
            assert item(doc, n, ident)["status"] == "PASS", (n, item(doc, n, ident))
    assert code in (3, 4), doc["summary"]

    ssh(lab, "node2", f"chmod 0644 {KEY}")
    code, doc, _ = scan(lab)
    assert code == 4
    bad = item(doc, "node2", "1.1.21")
    assert bad["status"] == "FAIL" and f"{KEY}: mode 0644 owner root:root" in bad["found"]
    assert bad["fixable_paths"] == [KEY]
    assert item(doc, "node1", "1.1.21")["status"] == "PASS" and item(doc, "node3", "1.1.21")["status"] == "PASS"

    code, doc, err = scan(lab, "--fix", "--yes")
    assert f"node2: chmod u-xs,g-rwxs,o-rwxt {KEY}" in err, err
    assert item(doc, "node2", "1.1.21")["status"] == "PASS"
    assert ssh(lab, "node2", f"stat -c %a {KEY}").strip() == "600"
    # Only what failed was touched: the other keys and the certificates keep their modes.
    assert ssh(lab, "node2", "stat -c %a /etc/kubernetes/pki/etcd/peer.key /etc/kubernetes/pki/etcd/server.crt"
               ).split() == ["600", "644"]
    assert ssh(lab, "node2", "systemctl is-active etcd").strip() == "active"

    # kubexm writes etcd's env file and unit owner-only itself (1.1.7): nothing of its own for --fix to touch.
    assert "kubexm's default must change" not in err
    assert ssh(lab, "node2", "stat -c %a /etc/etcd.env /etc/systemd/system/etcd.service").split() == ["600", "600"]

    code, doc, _ = scan(lab)
    assert all(item(doc, n, "1.1.21")["status"] == "PASS" for n in nodes)
    # Nothing fails any more; what remains are warnings (1.1.12: etcd runs as root).
    assert [(r["node"], r["id"]) for r in doc["results"] if r["status"] == "FAIL"] == []
    assert code == 3 and item(doc, "node1", "1.1.12")["status"] == "WARN"

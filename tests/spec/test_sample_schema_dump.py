"""Samples load as written, dumps round-trip, secrets stay out of dumps, the schema describes the file."""

from __future__ import annotations

import json

import pytest

from kubexm.spec.default import default_local_cluster, local_host_name
from kubexm.spec.dump import dump_cluster
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config
from kubexm.spec.schema import json_schema


@pytest.mark.parametrize("ha", [False, True])
def test_sample_loads_and_round_trips(ha: bool) -> None:
    cluster = parse_cluster(sample_config("edge", with_ha=ha), "sample.yaml")
    assert cluster.name == "edge"
    assert len(cluster.hosts_with_role("control-plane")) == (3 if ha else 1)
    assert cluster.spec.control_plane_endpoint.load_balancer == ("haproxy-keepalived" if ha else "none")
    again = parse_cluster(dump_cluster(cluster, secrets=True), "dump.yaml")
    assert again == cluster


def test_dump_redacts_secrets_unless_asked() -> None:
    text = sample_config().replace("      user: root", "      user: root\n      password: pw-123-secret", 1)
    cluster = parse_cluster(text, "s.yaml")
    assert "pw-123-secret" not in dump_cluster(cluster)
    assert "<redacted>" in dump_cluster(cluster)
    assert "pw-123-secret" in dump_cluster(cluster, secrets=True)
    assert "pw-123-secret" not in repr(cluster)


def test_default_local_cluster_is_this_machine() -> None:
    cluster = default_local_cluster()
    (host,) = cluster.spec.hosts
    assert host.connection == "local" and host.address == "127.0.0.1"
    assert host.name == local_host_name()
    assert set(cluster.roles_of(host.name)) == {"etcd", "control-plane", "worker"}


def test_schema_names_camel_case_fields() -> None:
    schema = json_schema()
    text = json.dumps(schema)
    for field in ("apiVersion", "roleGroups", "control-plane", "privateKeyPath", "controlPlaneEndpoint"):
        assert f'"{field}"' in text
    assert schema["title"].startswith("kubexm Cluster")


@pytest.mark.parametrize("hostname", ["Büro_PC.local", "-x-", "a" * 62 + "-bcd", "___", "node1"])
def test_any_hostname_gives_a_valid_local_cluster(hostname: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: hostname)
    (host,) = default_local_cluster().spec.hosts
    assert host.name == local_host_name()

"""Nodes pull through the private registry kubexm runs (spec.registry.type docker-registry), trusting its CA:
containerd's certs.d hosts.toml (the registry itself and mirrors of the upstream registries the cluster's images
come from), docker's certs.d and registry-mirrors, CRI-O's registries.conf.d mirrors and certs.d. Every file is
parsed the way the runtime reads it (TOML with tomllib, JSON) and the CA is the one kubexm's PKI issued."""

from __future__ import annotations

import json
import tomllib
from typing import Any

import pytest

from kubexm.errors import StepFailed
from kubexm.pki.certs import load_cert
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.etcd import cluster_pki
from kubexm.steps.registry import REGISTRY_CA, cert_specs
from kubexm.steps.runtime import (
    CERTS_D,
    CRIO_REGISTRIES,
    DOCKER_DAEMON,
    ContainerdConfig,
    CrioConfig,
    DockerConfig,
)

REGISTRY = "10.0.0.9:5000"


def cluster(runtime: str = "containerd", registry: str = "", extra: str = "") -> Cluster:
    return parse_cluster(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: mirrors}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
    - {{name: reg1, address: 10.0.0.9}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], worker: [cp1], registry: [reg1]}}
  containerRuntime:
    type: {runtime}
{extra}  registry:
    type: docker-registry
{registry}    auths:
      - registry: "{REGISTRY}"
        username: puller
        password: pw
""")


def issue_ca(c: Cluster) -> bytes:
    cluster_pki(c).ensure(cert_specs(c))
    return cluster_pki(c).crt(REGISTRY_CA.path).read_bytes()


def test_containerd_trusts_the_registry_ca_and_mirrors_upstream_registries_through_it() -> None:
    c = cluster()
    pem = issue_ca(c)
    assert "kubexm-registry-ca" in load_cert(pem, "registry CA").subject.rfc4514_string()
    files = ContainerdConfig().files(c)
    ca = f"{CERTS_D}/{REGISTRY}/ca.crt"
    assert files[ca][0].encode() == pem
    own = tomllib.loads(files[f"{CERTS_D}/{REGISTRY}/hosts.toml"][0])
    assert own["server"] == f"https://{REGISTRY}"
    assert own["host"][f"https://{REGISTRY}"] == {"capabilities": ["pull", "resolve", "push"], "ca": ca}
    # registry.k8s.io/pause:3.10 is synced as <registry>/pause:3.10: the mirror asks that path.
    for upstream, server in (("registry.k8s.io", "https://registry.k8s.io"),
                             ("docker.io", "https://registry-1.docker.io")):
        doc = tomllib.loads(files[f"{CERTS_D}/{upstream}/hosts.toml"][0])
        assert doc["server"] == server
        assert list(doc["host"]) == [f"https://{REGISTRY}"]
        assert doc["host"][f"https://{REGISTRY}"] == {"capabilities": ["pull", "resolve"], "ca": ca}
    # Every name of the registry host (name, address) gets the CA too.
    assert files[f"{CERTS_D}/reg1:5000/ca.crt"][0].encode() == pem
    # The credentials for pulling from it are in config.toml under its host:port.
    config = tomllib.loads(files["/etc/containerd/config.toml"][0])
    registry = config["plugins"]["io.containerd.grpc.v1.cri"]["registry"]
    assert registry["config_path"] == CERTS_D
    assert registry["configs"][REGISTRY]["auth"] == {"username": "puller", "password": "pw"}


def test_the_private_registry_comes_before_a_mirror_the_spec_names() -> None:
    extra = ("    registryMirrors:\n      - registry: docker.io\n        endpoints: [\"https://mirror.example.test\"]\n")
    c = cluster(extra=extra)
    issue_ca(c)
    doc = tomllib.loads(ContainerdConfig().files(c)[f"{CERTS_D}/docker.io/hosts.toml"][0])
    assert list(doc["host"]) == [f"https://{REGISTRY}", "https://mirror.example.test"]
    assert "ca" not in doc["host"]["https://mirror.example.test"]


def test_a_namespace_override_keeps_the_ca_but_mirrors_nothing() -> None:
    c = cluster(registry=f"    privateRegistry: \"{REGISTRY}\"\n    namespaceOverride: team\n")
    issue_ca(c)
    files = ContainerdConfig().files(c)
    assert f"{CERTS_D}/{REGISTRY}/hosts.toml" in files and f"{CERTS_D}/{REGISTRY}/ca.crt" in files
    assert not any(p.startswith(f"{CERTS_D}/registry.k8s.io/") for p in files)


def test_docker_trusts_the_ca_in_its_certs_d_and_uses_the_registry_as_docker_hub_mirror() -> None:
    c = cluster("docker")
    pem = issue_ca(c)
    files = DockerConfig().files(c)
    assert files[f"/etc/docker/certs.d/{REGISTRY}/ca.crt"][0].encode() == pem
    daemon: dict[str, Any] = json.loads(files[DOCKER_DAEMON][0])
    assert daemon["registry-mirrors"][0] == f"https://{REGISTRY}"
    assert REGISTRY not in daemon.get("insecure-registries", [])


def test_crio_mirrors_upstream_registries_and_trusts_the_ca() -> None:
    c = cluster("crio")
    pem = issue_ca(c)
    files = CrioConfig().files(c)
    assert files[f"/etc/containers/certs.d/{REGISTRY}/ca.crt"][0].encode() == pem
    doc = tomllib.loads(files[CRIO_REGISTRIES][0])
    by_prefix = {e["prefix"]: e for e in doc["registry"]}
    k8s = by_prefix["registry.k8s.io"]
    assert k8s["location"] == "registry.k8s.io" and k8s["insecure"] is False
    assert k8s["mirror"] == [{"location": REGISTRY, "insecure": False}]
    assert by_prefix["docker.io"]["mirror"][0]["location"] == REGISTRY


def test_no_ca_yet_names_registry_up() -> None:
    with pytest.raises(StepFailed) as err:
        ContainerdConfig().files(cluster())
    assert "CA does not exist yet" in err.value.message and "kubexm registry up" in (err.value.hint or "")


def test_without_a_private_registry_nothing_changes() -> None:
    c = parse_cluster("""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: plain}
spec:
  hosts: [{name: cp1, address: 10.0.0.1}]
  roleGroups: {etcd: [cp1], control-plane: [cp1], worker: [cp1]}
""")
    files = ContainerdConfig().files(c)
    assert not any(p.startswith(CERTS_D) for p in files)
    assert "registry-mirrors" not in json.loads(DockerConfig().files(c)[DOCKER_DAEMON][0])

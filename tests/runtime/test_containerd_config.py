"""containerd's config as kubelet needs it: parsed back with tomllib, not string-matched."""

from __future__ import annotations

import tomllib

from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import DEFAULT_K8S_VERSION
from kubexm.spec.sample import sample_config
from kubexm.steps.runtime import containerd_config, registry_hosts, sandbox_image

BASE = sample_config("rt")


def cluster(extra: str = "", k8s: str = "v1.31.2") -> object:
    text = BASE.replace(f"version: {DEFAULT_K8S_VERSION}", f"version: {k8s}") + extra
    return parse_cluster(text)


def test_cgroup_driver_sandbox_image_and_auths() -> None:
    c = cluster("  registry:\n    privateRegistry: reg.internal:5000\n    auths:\n"
                "      - {registry: reg.internal:5000, username: puller, password: pull-secret}\n")
    conf = tomllib.loads(containerd_config(c))  # type: ignore[arg-type]
    cri = conf["plugins"]["io.containerd.grpc.v1.cri"]
    assert conf["version"] == 2
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is True
    assert cri["sandbox_image"] == "reg.internal:5000/pause:3.10"
    assert cri["registry"]["config_path"] == "/etc/containerd/certs.d"
    assert cri["registry"]["configs"]["reg.internal:5000"]["auth"] == {"username": "puller", "password": "pull-secret"}
    cgroupfs = cluster(k8s="v1.30.4").model_copy(deep=True)  # type: ignore[attr-defined]
    cgroupfs.spec.kubernetes.cgroup_driver = "cgroupfs"
    conf = tomllib.loads(containerd_config(cgroupfs))
    assert conf["plugins"]["io.containerd.grpc.v1.cri"]["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert sandbox_image(cgroupfs).endswith("/pause:3.9")


def test_mirrors_and_insecure_registries() -> None:
    text = BASE.replace("    type: containerd\n", "    type: containerd\n    registryMirrors:\n"
                        "      - registry: docker.io\n        endpoints: [https://mirror.internal, http://10.0.0.5:5000]\n"
                        "    insecureRegistries: [10.0.0.5:5000]\n", 1)
    assert "registryMirrors" in text
    c = parse_cluster(text)
    hosts = registry_hosts(c)
    docker = tomllib.loads(hosts["docker.io"])
    assert docker["server"] == "https://docker.io"
    assert list(docker["host"]) == ["https://mirror.internal", "http://10.0.0.5:5000"]
    assert docker["host"]["http://10.0.0.5:5000"]["skip_verify"] is True
    assert "skip_verify" not in docker["host"]["https://mirror.internal"]
    insecure = tomllib.loads(hosts["10.0.0.5:5000"])
    assert insecure["host"]["https://10.0.0.5:5000"]["skip_verify"] is True

"""containerd's config as kubelet needs it: parsed back with tomllib, not string-matched."""

from __future__ import annotations

import tomllib

import pytest

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


def test_unusual_but_valid_registry_values_round_trip() -> None:
    """Names and endpoints the spec accepts, with characters TOML must quote or escape, come back from
    tomllib exactly as given; a password the validation would refuse (a newline) still opens no table."""
    from pydantic import SecretStr

    from kubexm.spec.models import RegistryAuth, RegistryMirror

    c = cluster()
    rt = c.spec.container_runtime  # type: ignore[attr-defined]
    odd = "https://mirror.internal:8443/v2/a%20b/x]#frag?y=1&z=2"
    rt.registry_mirrors = [RegistryMirror(registry="xn--bcher-kva.example:5000", endpoints=[odd, "http://10.0.0.5:5000"]),
                           RegistryMirror(registry="[fd00::5]:5000", endpoints=["https://[fd00::6]:5000"])]
    rt.insecure_registries = ["10.0.0.5:5000", "Reg-1.Example:443"]
    c.spec.registry.auths = [  # type: ignore[attr-defined]
        RegistryAuth(registry="[fd00::5]:5000", username="robot$ci+push", password="p#w'd\\\"]=[x] ü"),
        RegistryAuth.model_construct(registry="a.example", username="u", password=SecretStr("x\"\n[plugins.evil]\n"))]
    conf = tomllib.loads(containerd_config(c))  # type: ignore[arg-type]
    configs = conf["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["configs"]
    assert configs["[fd00::5]:5000"]["auth"] == {"username": "robot$ci+push", "password": "p#w'd\\\"]=[x] ü"}
    assert configs["a.example"]["auth"]["password"] == "x\"\n[plugins.evil]\n"
    assert set(conf["plugins"]) == {"io.containerd.grpc.v1.cri"}  # no value opened a table of its own
    hosts = registry_hosts(c)  # type: ignore[arg-type]
    assert set(hosts) == {"xn--bcher-kva.example:5000", "[fd00::5]:5000", "10.0.0.5:5000", "Reg-1.Example:443"}
    first = tomllib.loads(hosts["xn--bcher-kva.example:5000"])
    assert first["server"] == "https://xn--bcher-kva.example:5000"
    assert list(first["host"]) == [odd, "http://10.0.0.5:5000"]
    assert first["host"]["http://10.0.0.5:5000"]["skip_verify"] is True and "skip_verify" not in first["host"][odd]
    assert tomllib.loads(hosts["[fd00::5]:5000"])["host"] == {"https://[fd00::6]:5000": {"capabilities": ["pull", "resolve"]}}
    assert tomllib.loads(hosts["Reg-1.Example:443"])["host"]["https://Reg-1.Example:443"]["skip_verify"] is True
    from kubexm.steps.runtime import hosts_toml_path

    assert [hosts_toml_path(r) for r in sorted(hosts)] == [f"/etc/containerd/certs.d/{r}/hosts.toml" for r in sorted(hosts)]


@pytest.mark.parametrize("name", ["../../x", "..", ".", "a/b", "reg\n[x]", "reg x", "reg\tx", "reg\x7f", ""])
def test_registry_names_that_are_no_plain_directory_are_refused(name: str) -> None:
    from kubexm.errors import StepFailed
    from kubexm.steps.runtime import hosts_toml_path

    with pytest.raises(StepFailed) as err:
        hosts_toml_path(name)
    assert "\n" not in str(err.value.message) and "cannot name a directory" in err.value.message

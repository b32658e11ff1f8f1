"""docker + cri-dockerd and CRI-O: rendered files parsed back, per-family packages, image archives."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shlex
import tarfile
import tomllib
from pathlib import Path

import pytest
from support.images import docker_archive
from support.memory import MemoryFleet, MemoryHost, default_facts

from kubexm.assets import LocalSource
from kubexm.assets.images import archive_refs, normalize
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.errors import KubexmError
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.runtime import ContainerRuntimeModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.validate import validate_cluster
from kubexm.steps.runtime import (
    CRI_DOCKER_UNIT,
    CRICTL,
    CRIO_AUTH,
    CRIO_CONF,
    CRIO_REGISTRIES,
    DOCKER_DAEMON,
    KUBELET_DOCKER_CONFIG,
    containerd_config,
    crio_config,
    crio_registries,
    docker_daemon_json,
)

SPEC = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: rt}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
    - {{name: w1, address: 10.0.0.2}}
  roleGroups: {{etcd: [cp1], control-plane: [cp1], worker: [w1]}}
  kubernetes: {{version: v1.31.2, cgroupDriver: {driver}}}
  containerRuntime:
    type: {runtime}
    registryMirrors:
      - {{registry: docker.io, endpoints: ["https://hub-mirror.internal", "http://10.0.0.9:5000"]}}
    insecureRegistries: ["10.0.0.9:5000"]
  registry:
    privateRegistry: reg.internal:5000
    auths:
      - {{registry: reg.internal:5000, username: puller, password: 'p"w\\d'}}
{extra}"""


def cluster(runtime: str, driver: str = "systemd", extra: str = "") -> Cluster:
    return parse_cluster(SPEC.format(runtime=runtime, driver=driver, extra=extra))


def test_docker_daemon_json_follows_the_spec() -> None:
    conf = json.loads(docker_daemon_json(cluster("docker", "cgroupfs")))
    assert conf["exec-opts"] == ["native.cgroupdriver=cgroupfs"]
    assert conf["registry-mirrors"] == ["https://hub-mirror.internal", "http://10.0.0.9:5000"]
    assert conf["insecure-registries"] == ["10.0.0.9:5000"]
    assert conf["log-opts"]["max-size"] == "100m" and "data-root" not in conf


def test_docker_refuses_mirrors_of_other_registries() -> None:
    c = cluster("docker")
    c.spec.container_runtime.registry_mirrors[0].registry = "registry.k8s.io"
    assert any("docker mirrors Docker Hub only, not registry.k8s.io" in p for p in validate_cluster(c))
    assert not validate_cluster(cluster("docker"))


def test_crio_dropin_and_registries_parse_back() -> None:
    c = cluster("crio", "cgroupfs")
    conf = tomllib.loads(crio_config(c))
    assert conf["crio"]["runtime"] == {"cgroup_manager": "cgroupfs", "conmon_cgroup": "pod"}
    assert conf["crio"]["image"] == {"pause_image": "reg.internal:5000/pause:3.10", "global_auth_file": CRIO_AUTH}
    regs = tomllib.loads(crio_registries(c))["registry"]
    hub = next(r for r in regs if r["prefix"] == "docker.io")
    assert hub["mirror"] == [{"location": "hub-mirror.internal", "insecure": False},
                             {"location": "10.0.0.9:5000", "insecure": True}]
    assert {"prefix": "10.0.0.9:5000", "location": "10.0.0.9:5000", "insecure": True} in regs


def test_awkward_passwords_stay_inside_toml_strings() -> None:
    conf = tomllib.loads(containerd_config(cluster("containerd")))
    auth = conf["plugins"]["io.containerd.grpc.v1.cri"]["registry"]["configs"]["reg.internal:5000"]["auth"]
    assert auth == {"username": "puller", "password": 'p"w\\d'}


INSTALLED: dict[str, set[str]] = {}


def fake_packages(host: MemoryHost) -> None:
    """Package queries answer from what apt/dnf installed earlier in the run (recorded in INSTALLED)."""
    have = INSTALLED.setdefault(host.name, set())
    host.on(r"^dpkg-query -W \S+ (.*?)(?: 2>/dev/null)?$", lambda h, m, s: (0, "".join(
        f"{n}\tii \n" for n in shlex.split(m.group(1)) if n in have), ""))
    host.on(r"^for p in (.*?); do rpm -q", lambda h, m, s: (0, "".join(
        f"{n}\n" for n in shlex.split(m.group(1)) if n in have), ""))
    host.on(r"(?:apt-get install -y|then dnf install -y) (.*?)(?:; else .*)?$",
            lambda h, m, s: (have.update(shlex.split(m.group(1))), (0, "", ""))[1])


def run_module(c: Cluster, fleet: MemoryFleet, tags: frozenset[str] = frozenset()) -> object:
    INSTALLED.clear()
    options = RunOptions()
    run = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    for name in fleet.hosts:
        fake_packages(fleet[name])
    tasks = ContainerRuntimeModule.tasks_for(c, set(tags), set())
    return asyncio.run(Executor(run).run_tasks([(ContainerRuntimeModule, t) for t in tasks]))


def cri_dockerd_source(tmp_path: Path) -> Path:
    """A local source with a cri-dockerd release archive laid out like upstream's."""
    binary = tmp_path / "cri-dockerd-bin"
    binary.write_bytes(b"#!/bin/sh\necho cri-dockerd\n")
    archive = tmp_path / "cri-dockerd-0.3.11.amd64.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(binary, arcname="cri-dockerd/cri-dockerd")
    source = tmp_path / "source"
    LocalSource(source).add("cri-dockerd", "0.3.11", "amd64", archive)
    return source


def test_docker_branch_on_ubuntu_and_rocky(tmp_path: Path) -> None:
    source = cri_dockerd_source(tmp_path)
    c = cluster("docker", extra=f"  assets: {{localSource: {source}}}\n")
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["cp1"].facts_text = default_facts("cp1").replace("os_id=debian", "os_id=ubuntu")
    fleet["w1"].facts_text = default_facts("w1").replace("os_id=debian", "os_id=rocky") \
        .replace("os_like=", 'os_like="rhel centos fedora"')
    for name in ("cp1", "w1"):
        fleet[name].on(r"^for s in docker crio containerd", lambda h, m, s: (0, "", ""))
        fleet[name].on(r"^systemctl is-enabled", lambda h, m, s: (1, "disabled\n", ""))
    report = run_module(c, fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    # Each family got its own package names, through its own package manager.
    assert {h: pkgs for h, pkgs in INSTALLED.items() if pkgs} == {"cp1": {"docker.io", "containernetworking-plugins"},
                         "w1": {"docker-ce", "containernetworking-plugins"}}
    assert any("apt-get install" in c for c in fleet["cp1"].commands)
    assert any("dnf install" in c for c in fleet["w1"].commands)
    for host in (fleet["cp1"], fleet["w1"]):
        assert json.loads(host.files[DOCKER_DAEMON])["exec-opts"] == ["native.cgroupdriver=systemd"]
        assert b"--pod-infra-container-image=reg.internal:5000/pause:3.10" in host.files[CRI_DOCKER_UNIT]
        assert b"runtime-endpoint: unix:///run/cri-dockerd.sock" in host.files[CRICTL]
        creds = json.loads(host.files[KUBELET_DOCKER_CONFIG])["auths"]["reg.internal:5000"]["auth"]
        assert base64.b64decode(creds).decode() == 'puller:p"w\\d' and host.modes[KUBELET_DOCKER_CONFIG] == 0o600
        installs = [c for c in host.commands if "cri-dockerd" in c and "install -m 0755" in c]
        assert len(installs) == 1 and "tar -xf /var/lib/kubexm/assets/cri-dockerd-0.3.11.amd64.tgz" in installs[0]
        # Unpacked in a private directory with an unguessable name, never a fixed one under /tmp.
        assert "/tmp/" not in installs[0]
        assert re.search(r"mkdir -m 0700 /var/lib/kubexm/assets/\.extract-cri-dockerd-[0-9a-f]{16} ", installs[0])
        started = [c for c in host.commands if c.startswith("systemctl daemon-reload && systemctl enable")]
        assert [c.split()[-1] for c in started] == ["docker", "cri-docker.socket", "cri-docker.service"]


def test_crio_branch_writes_its_files() -> None:
    c = cluster("crio")
    fleet = MemoryFleet(["cp1", "w1"])
    report = run_module(c, fleet)
    assert report.ok  # type: ignore[attr-defined]
    host = fleet["w1"]
    assert INSTALLED["w1"] == {"cri-o", "skopeo", "containernetworking-plugins"}
    assert {CRIO_CONF, CRIO_REGISTRIES, CRIO_AUTH, CRICTL} <= set(host.files)
    assert host.modes[CRIO_AUTH] == 0o600
    assert b"unix:///var/run/crio/crio.sock" in host.files[CRICTL]


def test_runtime_switch_is_refused() -> None:
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["w1"].on(r"^for s in docker crio containerd", lambda h, m, s: (0, "containerd\n", ""))
    report = run_module(cluster("crio"), fleet)
    (failure,) = report.failures  # type: ignore[attr-defined]
    assert failure.host == "w1" and "already runs containerd, the spec asks for crio" in failure.message


def test_image_archive_names(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "img.tar", ["busybox:1.36", "reg.internal:5000/tools/hello:v1"],
                             {"hello": b"hi\n"})
    assert archive_refs(archive) == ["docker.io/library/busybox:1.36", "reg.internal:5000/tools/hello:v1"]
    assert normalize("library/x") == "docker.io/library/x:latest"
    assert normalize("localhost/x:1") == "localhost/x:1"
    assert normalize("quay.io/a/b@sha256:00") == "quay.io/a/b@sha256:00"
    (tmp_path / "junk.tar").write_bytes(b"not a tar")
    with pytest.raises(KubexmError, match="is not a readable image archive"):
        archive_refs(tmp_path / "junk.tar")
    unnamed = docker_archive(tmp_path / "unnamed.tar", [], {"a": b"b"})
    with pytest.raises(KubexmError, match="names no image"):
        archive_refs(unnamed)


def test_images_are_imported_once(tmp_path: Path) -> None:
    archive = docker_archive(tmp_path / "hello.tar", ["kubexm.test/hello:v1"], {"hello": b"hi\n"})
    source = tmp_path / "source"
    LocalSource(source).add("image", "v1", "amd64", archive, name="kubexm.test/hello:v1", group="images")
    c = cluster("containerd", extra=f"  assets: {{localSource: {source}}}\n")
    c.spec.container_runtime.snapshotter = "native"
    fleet = MemoryFleet(["cp1", "w1"])
    fleet["cp1"].on(r"^ctr --namespace=k8s.io images ls -q", lambda h, m, s: (0, "kubexm.test/hello:v1\n", ""))
    imported: list[str] = []
    fleet["w1"].on(r"^ctr --namespace=k8s.io images ls -q", lambda h, m, s: (0, "".join(imported), ""))
    fleet["w1"].on(r"^ctr --namespace=k8s.io images import",
                   lambda h, m, s: (imported.append("kubexm.test/hello:v1\n"), (0, "", ""))[1])
    report = run_module(c, fleet, frozenset({"images"}))
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]  # type: ignore[attr-defined]
    assert not any("images import" in cmd for cmd in fleet["cp1"].commands)  # already present: skipped
    assert "/var/lib/kubexm/images/hello.tar" not in fleet["cp1"].files
    (cmd,) = [c for c in fleet["w1"].commands if "images import" in c]
    assert cmd == ("ctr --namespace=k8s.io images import --snapshotter native /var/lib/kubexm/images/hello.tar"
                   " && rm -f /var/lib/kubexm/images/hello.tar")


@pytest.mark.parametrize("registry", ["../../x", "reg.internal\n[plugins]", "a/b"])
def test_a_registry_that_would_leave_certs_d_is_refused_on_one_line(registry: str) -> None:
    c = cluster("containerd")
    # As if the spec validation had missed it: the step still refuses to build the path.
    c.spec.container_runtime.registry_mirrors[0].registry = registry
    fleet = MemoryFleet(["cp1", "w1"])
    report = run_module(c, fleet)
    failures = [f for f in report.failures if f.step == "ContainerdConfig"]  # type: ignore[attr-defined]
    assert failures
    for f in failures:
        assert "\n" not in f.message and "cannot name a directory under /etc/containerd/certs.d" in f.message
    written = {p for h in ("cp1", "w1") for p in fleet[h].files}
    assert not any("hosts.toml" in p for p in written) and "/etc/containerd/config.toml" not in written


@pytest.mark.parametrize("runtime", ["containerd", "docker", "crio"])
def test_a_dry_run_of_each_runtime_only_reads(runtime: str, tmp_path: Path) -> None:
    # While planning, the engine refuses every command not declared read-only (an internal error, a
    # failure here) and every upload: each step's check must be answerable by reading alone.
    source = cri_dockerd_source(tmp_path)
    c = cluster(runtime, extra=f"  assets: {{localSource: {source}}}\n")
    fleet = MemoryFleet(["cp1", "w1"])
    options = RunOptions(dry_run=True)
    run = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    tasks = ContainerRuntimeModule.tasks_for(c, set(), set())
    report = asyncio.run(Executor(run).run_tasks([(ContainerRuntimeModule, t) for t in tasks]))
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    assert {r.status for r in report.records} <= {"ok", "would-change"}
    assert not any(cmd.startswith("<put") for h in ("cp1", "w1") for cmd in fleet[h].commands)

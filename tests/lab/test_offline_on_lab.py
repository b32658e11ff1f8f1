"""Issue 16 on real nodes: a bundle from the lab's local source plus images built here with umoci, a private
registry on a lab node (`registry up`: Debian's distribution registry, TLS, htpasswd), `offline sync` into it
checked with skopeo, then `create cluster --offline-bundle` on nodes with no route out, and containerd on every
node pulling through the configured mirror with the registry's CA.

This machine has no Kubernetes server binaries: kubeadm, kubelet, kubectl and crictl are stand-in scripts that
exit 1 (as tests/lab/test_kubexm_on_lab.py, the run does everything before kubeadm and stops there)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from kubexm.assets import LocalSource
from kubexm.lab import base
from kubexm.lab.assets import _download_for_base
from kubexm.lab.lab import Lab

from .conftest import KUBEXM, kubexm

pytestmark = pytest.mark.lab
NAME = "kxoff"
SUBNET = "10.213.83.0/24"
USER = "kxoff"
STAND_IN = "#!/bin/sh\necho 'stand-in: this machine has no Kubernetes server binaries' >&2\nexit 1\n"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass
class Offline:
    lab: Lab
    cluster_file: Path
    bundle: Path
    registry: str  # host:port of the private registry
    password: str
    ca: Path
    work: Path

    def ssh(self, node: str, command: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        state = self.lab.load()
        assert state is not None
        return subprocess.run(self.lab.ssh_argv(self.lab.node(state, node), command), capture_output=True,
                              text=True, timeout=300, check=check)


def run(*argv: str, cwd: Path | None = None) -> str:
    res = subprocess.run(argv, capture_output=True, text=True, cwd=cwd, timeout=600, check=False)
    assert res.returncode == 0, f"{argv}: {res.stdout[-2000:]} {res.stderr[-2000:]}"
    return res.stdout


def build_images(layout: Path, refs: list[str]) -> None:
    """Three small images built with umoci (a file each in an otherwise empty root), then every reference the
    cluster needs named in the layout's index.json after one of them, so `offline package --images-from` finds
    each by its full name."""
    if shutil.which("umoci") is None:
        subprocess.run(["apt-get", "install", "-y", "-qq", "umoci"], capture_output=True, check=False, timeout=600)
    assert shutil.which("umoci"), "umoci is needed (apt-get install umoci)"
    run("umoci", "init", "--layout", str(layout))
    for i, tag in enumerate(("one", "two", "three")):
        run("umoci", "new", "--image", f"{layout}:{tag}")
        bundle = layout.parent / f"unpacked-{tag}"
        run("umoci", "unpack", "--image", f"{layout}:{tag}", str(bundle))
        (bundle / "rootfs" / "hello.txt").write_text(f"kxoff image {tag} {i}\n")
        run("umoci", "repack", "--image", f"{layout}:{tag}", str(bundle))
        shutil.rmtree(bundle)
    index_file = layout / "index.json"
    index = json.loads(index_file.read_text())
    built = [m for m in index["manifests"] if (m.get("annotations") or {}).get(REF_NAME) in ("one", "two", "three")]
    assert len(built) == 3
    index["manifests"] = [{**built[i % 3], "annotations": {REF_NAME: ref}} for i, ref in enumerate(refs)]
    index_file.write_text(json.dumps(index))


def local_source(work: Path, lab_source: Path) -> Path:
    """The lab's local source (etcd, node and runtime .debs) copied, plus the registry's packages for its node
    and the Kubernetes stand-ins."""
    root = work / "assets"
    source = LocalSource(root)
    for e in LocalSource(lab_source).entries():
        source.add(str(e["component"]), str(e["version"]), str(e["arch"]), lab_source / str(e["file"]),
                   name=str(e.get("name", "")), group=str(e.get("group", "")))
    debs = work / "registry-debs"
    for deb in _download_for_base(("docker-registry", "curl"), base.base_dir(), debs):
        fields = run("dpkg-deb", "-f", str(deb), "Package", "Version", "Architecture").splitlines()
        values = dict(line.split(": ", 1) for line in fields)
        source.add("deb", values["Version"], values["Architecture"], deb, name=values["Package"], group="registry")
    stand_ins = work / "stand-ins"
    stand_ins.mkdir()
    for name in ("kubeadm", "kubelet", "kubectl"):
        (stand_ins / name).write_text(STAND_IN)
        source.add(name, "v1.33.7", "amd64", stand_ins / name)
    (stand_ins / "crictl").write_text(STAND_IN)
    archive = stand_ins / "crictl-v1.33.0-linux-amd64.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(stand_ins / "crictl", arcname="crictl")
    source.add("crictl", "v1.33.0", "amd64", archive)
    return root


@pytest.fixture(scope="module")
def offline(lab_env: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Offline]:
    lab = Lab(NAME)
    work = tmp_path_factory.mktemp("kxoff")
    try:
        state, _ = lab.up(3, SUBNET)
        text = lab.cluster_file.read_text()
        lab_source = Path(text.split("localSource: ", 1)[1].split("\n", 1)[0].strip())
        node3 = lab.node(state, "node3").address
        registry = f"{node3}:5000"
        password = secrets.token_urlsafe(16)
        assert "    worker: [node2, node3]\n" in text, text
        text = text.replace("    worker: [node2, node3]\n", "    worker: [node2, node3]\n    registry: [node3]\n", 1)
        # No CNI: calico comes as a Helm chart, and the run stops at kubeadm before any network plugin.
        text += "  network:\n    plugin: none\n"
        text = text.replace(f"localSource: {lab_source}", f"localSource: {local_source(work, lab_source)}", 1)
        text += (f"  registry:\n    type: docker-registry\n    auths:\n      - registry: \"{registry}\"\n"
                 f"        username: {USER}\n        password: \"{password}\"\n")
        cluster_file = work / "cluster.yaml"
        cluster_file.write_text(text)

        refs = run(KUBEXM, "offline", "images", "-f", str(cluster_file)).split()
        build_images(work / "images" / "built", [r.split("@", 1)[0] for r in refs])
        bundle = work / "bundle.tar"
        res = kubexm("offline", "package", "-f", str(cluster_file), "-o", str(bundle), "--os", "debian12",
                     "--images-from", str(work / "images"), "--skip", "python,charts", timeout=1800)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]

        from kubexm.spec.loader import load_cluster
        from kubexm.steps.etcd import cluster_pki
        from kubexm.steps.registry import REGISTRY_CA

        res = kubexm("registry", "up", "-f", str(cluster_file), timeout=900)
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        ca = cluster_pki(load_cluster(cluster_file)).crt(REGISTRY_CA.path)
        yield Offline(lab, cluster_file, bundle, registry, password, ca, work)
    finally:
        lab.down()


def test_sync_then_skopeo_reads_an_image_by_digest(offline: Offline) -> None:
    res = subprocess.run([KUBEXM, "offline", "sync", str(offline.bundle),
                          "--registry", offline.registry, "--username", USER, "--password-stdin",
                          "--ca-file", str(offline.ca)], input=offline.password + "\n", capture_output=True,
                         text=True, timeout=900, check=False)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    from kubexm.offline.bundle import read_manifest

    pause = next(i for i in read_manifest(offline.bundle).items if i.name == "registry.k8s.io/pause:3.10")
    certs = offline.work / "skopeo-certs"
    certs.mkdir(exist_ok=True)
    shutil.copyfile(offline.ca, certs / "ca.crt")
    raw = run("skopeo", "inspect", "--raw", "--cert-dir", str(certs), "--creds", f"{USER}:{offline.password}",
              f"docker://{offline.registry}/pause@{pause.digest}")
    assert json.loads(raw)["schemaVersion"] == 2


def test_a_bundle_that_does_not_cover_the_cluster_stops_before_any_node(offline: Offline) -> None:
    other = offline.work / "newer.yaml"
    other.write_text(offline.cluster_file.read_text().replace("spec:\n", "spec:\n  kubernetes:\n    version: v1.34.1\n", 1))
    res = kubexm("create", "cluster", "-f", str(other), "--offline-bundle", str(offline.bundle), "-y")
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "Traceback" not in out
    assert "does not cover cluster" in out and "kubeadm v1.34.1 (amd64)" in out, out
    assert "Preflight" not in out  # nothing ran: no task, no connection


def test_create_from_the_bundle_with_no_route_out_and_pull_through_the_mirror(offline: Offline) -> None:
    for node in ("node1", "node2", "node3"):
        if offline.ssh(node, "ip route show default").stdout.strip():
            offline.ssh(node, "ip route del default")
        assert offline.ssh(node, "ip route show default").stdout.strip() == ""
    res = kubexm("create", "cluster", "-f", str(offline.cluster_file), "--offline-bundle", str(offline.bundle), "-y",
                 timeout=1800)
    out = res.stdout + res.stderr
    print(out[-8000:])  # shown with -rP: what a user sees
    assert "Traceback" not in out, out[-4000:]
    for done in ("PrepareNodesOS", "InstallEtcdCluster", "InstallContainerd", "GenerateKubernetesPKI"):
        assert done in out, out[-4000:]
    # It stopped in Kubernetes' own tasks (the stand-in kubeadm), after everything before them succeeded.
    assert res.returncode != 0
    stopped = [line for line in out.splitlines() if "the run stopped after task" in line]
    assert stopped and "BootstrapFirstMaster" in stopped[0], out[-4000:]
    assert "stand-in: this machine has no Kubernetes server binaries" in out
    # Everything before Kubernetes came from the bundle: packages from its .debs on nodes with no route out,
    # etcd from its archive, and containerd's trust in the registry's CA.
    import hashlib

    ca_digest = hashlib.sha256(offline.ca.read_bytes()).hexdigest()
    for node in ("node1", "node2", "node3"):
        status = offline.ssh(node, "dpkg-query -W -f '${Status}\\n' containerd socat conntrack").stdout
        assert status.count("install ok installed") == 3, status
        assert ".deb" in offline.ssh(node, "ls /var/lib/kubexm/packages/containerd").stdout
        placed = offline.ssh(node, f"sha256sum /etc/containerd/certs.d/{offline.registry}/ca.crt").stdout.split()[0]
        assert placed == ca_digest
        # The bundle's image archives were imported (LoadImages) before Kubernetes.
        assert "registry.k8s.io/kube-apiserver:v1.33.7" in offline.ssh(node, "ctr -n k8s.io images ls -q").stdout
    assert offline.ssh("node1", "systemctl is-active etcd").stdout.strip() == "active"
    # containerd on every node pulls through the private registry, trusting its CA from hosts.toml: the
    # upstream name (the mirror) and the registry's own name.
    for node in ("node1", "node2", "node3"):
        # Control: without the hosts directory the same pull fails (no CA, no mirror, no route out).
        bare = offline.ssh(node, "mkdir -p /tmp/no-hosts && ctr --namespace=k8s.io images pull --hosts-dir /tmp/no-hosts "
                           f"--user {USER}:{offline.password} {offline.registry}/pause:3.10", check=False)
        assert bare.returncode != 0 and "certificate" in (bare.stdout + bare.stderr), bare.stdout + bare.stderr
        hosts = offline.ssh(node, "cat /etc/containerd/certs.d/registry.k8s.io/hosts.toml").stdout
        assert f'[host."https://{offline.registry}"]' in hosts and "ca = " in hosts, hosts
        for ref in ("registry.k8s.io/pause:3.10", f"{offline.registry}/pause:3.10"):
            pulled = offline.ssh(node, "ctr --namespace=k8s.io images pull --hosts-dir /etc/containerd/certs.d "
                                 f"--user {USER}:{offline.password} {ref} && ctr --namespace=k8s.io images ls -q",
                                 check=False)
            assert pulled.returncode == 0, pulled.stdout[-2000:] + pulled.stderr[-2000:]
            assert ref in pulled.stdout.split()

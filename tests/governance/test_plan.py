"""A plan of a spec change on a fleet of in-memory hosts: exactly the files that change, on the nodes that hold
them, as unified diffs of the node's copy against the rendered one; secrets never shown; nothing written."""

from __future__ import annotations

import json
import shlex

from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import RunOptions, Task, all_hosts, role
from kubexm.governance.impact import Impact, Masker
from kubexm.governance.plan import plan_impact
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.steps.common import PutFile, Systemd
from kubexm.steps.os import SYSCTL_FILE, Sysctl, sysctl_text, wanted_sysctl
from kubexm.steps.runtime import CONFIG, KUBELET_DOCKER_CONFIG, ContainerdConfig, hosts_toml_path

BASE = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: gov}}
spec:
  hosts:
    - {{name: cp1, address: 10.0.0.1}}
    - {{name: w1, address: 10.0.0.2}}
    - {{name: e1, address: 10.0.0.3}}
  roleGroups: {{etcd: [e1], control-plane: [cp1], worker: [w1]}}
  system:
    sysctl: {{vm.swappiness: "{swappiness}"}}
  containerRuntime:
    registryMirrors: [{{registry: docker.io, endpoints: ["{mirror}"]}}]
  registry:
    auths: {auths}
"""
OLD_AUTHS = '[{registry: "reg.example.com:5000", username: puller, password: "0ld-Pa55word"}]'
NEW_AUTHS = ('[{registry: "reg.example.com:5000", username: puller, password: "0ld-Pa55word"}, '
             '{registry: "ghcr.example.com", username: robot, password: "N3w-S3cret-value"}]')


def spec(swappiness: str = "10", mirror: str = "https://mirror-a.example.com", auths: str = OLD_AUTHS) -> Cluster:
    return parse_cluster(BASE.format(swappiness=swappiness, mirror=mirror, auths=auths))


TASKS = [
    (None, Task("PrepareOS", hosts=all_hosts(), steps=[Sysctl()])),
    (None, Task("ConfigureContainerd", hosts=role("worker"), steps=[
        ContainerdConfig(), Systemd("containerd", restart_on=(CONFIG,))])),
]


def reads_files(host: MemoryHost, m: object, _: bytes | None) -> tuple[int, str, str]:
    path = shlex.split(m.group(1))[0]  # type: ignore[attr-defined]
    return (0, host.files[path].decode(), "") if path in host.files else (1, "", "No such file")


def live_sysctl(values: dict[str, str]):  # type: ignore[no-untyped-def]
    def answer(host: MemoryHost, m: object, _: bytes | None) -> tuple[int, str, str]:
        return 0, "".join(f"{k}={v}\n" for k, v in values.items()), ""
    return answer


def fleet_as(cluster: Cluster) -> MemoryFleet:
    """Every node as a run of ``cluster`` left it: the files rendered from it, the kernel values applied."""
    fleet = MemoryFleet([h.name for h in cluster.spec.hosts])
    values = wanted_sysctl(cluster)
    for host in cluster.spec.hosts:
        node = fleet[host.name]
        node.on(r"^cat -- (\S+)$", reads_files)
        node.on(r"^printf '%s=' ", live_sysctl(values))
        node.files[SYSCTL_FILE] = sysctl_text(values).encode()
        if host.name in cluster.spec.role_groups.worker:
            for path, (text, mode) in ContainerdConfig().files(cluster).items():
                node.files[path] = text.encode()
                node.modes[path] = mode
    return fleet


def plan(cluster: Cluster, fleet: MemoryFleet, *, stored: Cluster | None = None) -> Impact:
    return plan_impact(cluster, TASKS, RunOptions(), operation="cluster", factory=fleet.factory,
                       masker=Masker.for_clusters(cluster, stored))


def snapshot(fleet: MemoryFleet) -> dict[str, dict[str, bytes]]:
    return {name: dict(host.files) for name, host in fleet.hosts.items()}


def test_unchanged_spec_plans_nothing() -> None:
    cluster = spec()
    impact = plan(cluster, fleet_as(cluster))
    assert impact.changed == [], [(n.name, n.files, n.other, n.problems) for n in impact.changed]


def test_mirror_and_sysctl_change_show_exactly_those_diffs_on_the_right_nodes() -> None:
    fleet = fleet_as(spec())
    before = snapshot(fleet)
    impact = plan(spec(swappiness="30", mirror="https://mirror-b.example.com"), fleet)

    files = {n.name: sorted(f.path for f in n.files) for n in impact.changed}
    hosts_toml = hosts_toml_path("docker.io")
    # The sysctl file everywhere; the mirror only where containerd is configured (the worker).
    assert files == {"cp1": [SYSCTL_FILE], "e1": [SYSCTL_FILE], "w1": sorted([SYSCTL_FILE, hosts_toml])}
    sysctl_diff = impact.nodes["cp1"].files[0].diff
    assert "-vm.swappiness = 10\n" in sysctl_diff and "+vm.swappiness = 30\n" in sysctl_diff
    assert sum(line.startswith(("+", "-")) and not line.startswith(("+++", "---"))
               for line in sysctl_diff.splitlines()) == 2
    mirror = next(f for f in impact.nodes["w1"].files if f.path == hosts_toml)
    assert mirror.change == "modify"
    assert '-[host."https://mirror-a.example.com"]' in mirror.diff
    assert '+[host."https://mirror-b.example.com"]' in mirror.diff
    # hosts.toml is read by containerd as it pulls: no restart; nothing else would change.
    assert all(not n.units and not n.other and not n.problems for n in impact.changed)
    assert impact.risks == []
    # The plan read the nodes and wrote nothing.
    assert snapshot(fleet) == before
    assert not any(c.startswith("<put") for h in fleet.hosts.values() for c in h.commands)


def test_a_new_registry_auth_is_shown_masked_and_restarts_containerd() -> None:
    old = spec()
    fleet = fleet_as(old)
    impact = plan(spec(auths=NEW_AUTHS), fleet, stored=old)

    node = impact.nodes["w1"]
    paths = {f.path: f for f in node.files}
    assert set(paths) == {CONFIG, KUBELET_DOCKER_CONFIG}
    config = paths[CONFIG].diff
    assert '+[plugins."io.containerd.grpc.v1.cri".registry.configs."ghcr.example.com".auth]' in config
    assert '+password = "<redacted>"' in config and '+username = "robot"' in config
    everything = json.dumps(impact.to_dict())
    for secret in ("N3w-S3cret-value", "0ld-Pa55word"):
        assert secret not in everything
    import base64

    for user, pw in (("robot", "N3w-S3cret-value"), ("puller", "0ld-Pa55word")):
        assert base64.b64encode(f"{user}:{pw}".encode()).decode() not in everything
    # config.toml changed, so containerd restarts (on the only worker: no risk to the control plane).
    assert [(u.unit, u.action) for u in node.units] == [("containerd", "restart")]
    assert "changed: " + CONFIG in node.units[0].reason
    assert {n.name for n in impact.changed} == {"w1"}


def test_mode_change_alone_is_shown_without_a_diff() -> None:
    cluster = spec()
    fleet = fleet_as(cluster)
    fleet["w1"].files["/etc/kubexm/token.env"] = b"X=1\n"
    fleet["w1"].modes["/etc/kubexm/token.env"] = 0o644
    put = [(None, Task("Env", hosts=role("worker"), steps=[PutFile(b"X=1\n", "/etc/kubexm/token.env", 0o600)]))]
    impact = plan_impact(cluster, put, RunOptions(), operation="cluster", factory=fleet.factory)
    (change,) = impact.nodes["w1"].files
    assert (change.path, change.change, change.old_attrs, change.new_attrs) == (
        "/etc/kubexm/token.env", "attributes", "644 root:root", "600 root:root")
    assert change.diff == ""
    assert [n.name for n in impact.changed] == ["w1"]


def test_new_file_is_a_creation_diff_against_nothing() -> None:
    cluster = spec()
    fleet = fleet_as(cluster)
    del fleet["cp1"].files[SYSCTL_FILE]
    impact = plan(cluster, fleet)
    (change,) = impact.nodes["cp1"].files
    assert change.change == "create" and change.old_attrs is None
    assert change.diff.startswith("--- /dev/null\n")
    assert "+vm.swappiness = 10\n" in change.diff


def test_masker_hides_private_keys_tokens_and_secret_settings() -> None:
    cluster = spec(auths=NEW_AUTHS)
    masker = Masker.for_clusters(cluster)
    text = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA\nabc\n-----END RSA PRIVATE KEY-----\n"
            "token: abcdef.0123456789abcdef\n"
            '  "password": "something-else",\n'
            "url = https://x/?q=N3w-S3cret-value\n"
            "name = robot\n")
    out = masker.text(text)
    assert "MIIEowIBAAKCAQEA" not in out and "BEGIN RSA PRIVATE KEY" in out
    assert "abcdef.0123456789abcdef" not in out
    assert "something-else" not in out and '"password": "<redacted>",' in out
    assert "N3w-S3cret-value" not in out
    assert "name = robot" in out  # what is not secret stays readable
    assert masker.hidden_path("/etc/kubernetes/pki/apiserver.key")
    assert not masker.hidden_path("/etc/containerd/config.toml")


def test_kernel_value_changed_by_hand_is_a_change_without_a_file() -> None:
    cluster = spec()
    fleet = fleet_as(cluster)
    node = fleet["e1"]
    node.handlers = [(p, h) for p, h in node.handlers if "printf" not in p.pattern]
    node.on(r"^printf '%s=' ", live_sysctl({**wanted_sysctl(cluster), "vm.swappiness": "60"}))
    node.on(r"^test -w ", lambda h, m, _: (0, "vm.swappiness\n", ""))  # the key is writable there
    impact = plan(cluster, fleet)
    assert [n.name for n in impact.changed] == ["e1"]
    assert impact.nodes["e1"].files == []
    assert impact.nodes["e1"].other == [Sysctl().describe()]

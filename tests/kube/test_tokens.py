"""`kubexm token`: the service-account key rotation over three control planes, and bootstrap tokens.

A fake kubeadm on each MemoryHost renders the static pod manifests the way kubeadm does: its default
service-account flags, replaced by the configuration's extraArgs of the same name (v1beta4: a list, a flag may
repeat; v1beta3: a map). kubelet's restart of a changed static pod is a new container id from crictl.
"""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from ruamel.yaml import YAML
from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.engine.events import Event
from kubexm.errors import UsageError
from kubexm.hosts.pool import ConnectionPool
from kubexm.kube.kubeadm import TOKEN_CONFIG
from kubexm.pipelines.tokens import CREATE_TOKEN, DELETE_TOKEN, LIST_TOKENS, ROTATE_SA_KEY, decide
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.etcd import cluster_pki
from kubexm.steps.tokens import (
    NEXT_KEY,
    NEXT_PUB,
    ROTATION_CONFIG,
    SA_KEY,
    SA_PUB,
    VERIFY_BUNDLE,
    Rotation,
    list_tokens_command,
    load_rotation,
    manifest_flags,
    parse_duration,
    parse_tokens,
    save_rotation,
    token_id,
)

MASTERS = ["master1", "master2", "master3"]
NAMES = [*MASTERS, "worker1", "worker2"]
APISERVER = "/etc/kubernetes/manifests/kube-apiserver.yaml"
CONTROLLER = "/etc/kubernetes/manifests/kube-controller-manager.yaml"


def cluster(version: str = "v1.33.7") -> Cluster:
    return parse_cluster(sample_config("ha", with_ha=True).replace("version: v1.33.7", f"version: {version}"))


DEFAULTS = {
    "kube-apiserver": [("service-account-issuer", "https://kubernetes.default.svc.cluster.local"),
                       ("service-account-key-file", SA_PUB), ("service-account-signing-key-file", SA_KEY)],
    "kube-controller-manager": [("service-account-private-key-file", SA_KEY), ("use-service-account-credentials",
                                                                              "true")],
}


def removes_files(host: MemoryHost) -> None:
    """`rm -f -- PATH...` removes the files from the in-memory host."""
    def rm(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        for path in shlex.split(m.group(1)):
            h.files.pop(path, None)
        return 0, "", ""
    host.on(r"^rm -f -- (.+)$", rm)


class FakeControlPlane:
    """kubeadm, crictl and the API server's /readyz on the control-plane hosts; a log across hosts."""

    def __init__(self, fleet: MemoryFleet, fail_on: tuple[str, str] | None = None) -> None:
        self.log: list[tuple[str, str, str]] = []  # (host, component, phase name from the config)
        self.containers: dict[tuple[str, str], int] = {}
        self.fail_on = fail_on  # (host, flag value): kubeadm fails there when the config holds that value
        for name in MASTERS:
            host = fleet[name]
            for component, args in DEFAULTS.items():
                host.files[f"/etc/kubernetes/manifests/{component}.yaml"] = self.manifest(component, args)
                self.containers[(name, component)] = 1
            host.on(r"^kubeadm init phase control-plane (\S+) --config (\S+)$", self.kubeadm_phase)
            host.on(r"^crictl ps -q --name '\^([a-z-]+)\$'$", self.crictl)
            host.on(r"--raw=/readyz", lambda h, m, s: (0, "ok", ""))
            host.on(r"^cat -- (\S+)$", self.cat)
            removes_files(host)

    @staticmethod
    def manifest(component: str, args: list[tuple[str, str]]) -> bytes:
        doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": component, "namespace": "kube-system"},
               "spec": {"containers": [{"name": component, "command": [component, *(f"--{n}={v}" for n, v in args)]}]}}
        out = __import__("io").StringIO()
        YAML().dump(doc, out)
        return out.getvalue().encode()

    def kubeadm_phase(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        component = {"apiserver": "kube-apiserver", "controller-manager": "kube-controller-manager"}[m.group(1)]
        docs = list(YAML(typ="safe").load_all(h.files[m.group(2)].decode()))
        conf = next(d for d in docs if d["kind"] == "ClusterConfiguration")
        init = next(d for d in docs if d["kind"] == "InitConfiguration")
        assert "bootstrapTokens" not in init  # no token is made or written for a manifest phase
        extra = conf["apiServer" if component == "kube-apiserver" else "controllerManager"]["extraArgs"]
        pairs = [(a["name"], a["value"]) for a in extra] if isinstance(extra, list) else list(extra.items())
        if self.fail_on and h.name == self.fail_on[0] and any(v == self.fail_on[1] for _, v in pairs):
            return 1, "", "error execution phase control-plane: boom"
        named = {n for n, _ in pairs}
        args = [*pairs, *((n, v) for n, v in DEFAULTS[component] if n not in named)]
        new = self.manifest(component, sorted(args, key=lambda a: a[0]))
        path = f"/etc/kubernetes/manifests/{component}.yaml"
        if h.files.get(path) != new:
            h.files[path] = new
            self.containers[(h.name, component)] += 1  # kubelet restarts a changed static pod
        signing = dict(pairs).get("service-account-signing-key-file", "")
        keys = [v for n, v in pairs if n == "service-account-key-file"]
        phase = "sign" if "sa-next" in signing else "verify" if keys else "retired"
        self.log.append((h.name, component, phase))
        return 0, "", ""

    @staticmethod
    def cat(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        path = shlex.split(m.group(1))[0]
        return (0, h.files[path].decode(), "") if path in h.files else (1, "", "No such file")

    def crictl(self, h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        return 0, f"{m.group(1)}-{self.containers[(h.name, m.group(1))]}\n", ""


def run(c: Cluster, pipeline: Any, fleet: MemoryFleet, events: list[Event] | None = None, **opts: Any) -> Any:
    extra = opts.pop("extra", {})
    options = RunOptions(extra=extra, **opts)
    sink: list[Event] = [] if events is None else events
    ctx = RunContext(c, options, bus=EventBus([sink.append]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_pipeline(pipeline))


def with_pki(c: Cluster) -> bytes:
    pki = cluster_pki(c)
    pki.ensure_service_account_key()
    return pki.key("sa").read_bytes()


def flags(host: MemoryHost, path: str = APISERVER) -> dict[str, list[str]]:
    return manifest_flags(host.files[path].decode())


def public_of(private_pem: bytes) -> bytes:
    key = serialization.load_pem_private_key(private_pem, password=None)
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def test_rotation_trusts_then_signs_then_retires_one_node_at_a_time() -> None:
    c = cluster()
    old_key = with_pki(c)
    pki = cluster_pki(c)
    fleet = MemoryFleet(NAMES)
    kube = FakeControlPlane(fleet)

    report = run(c, ROTATE_SA_KEY, fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    new_key = (pki.root / "sa-next.key").read_bytes()
    assert new_key != old_key
    # Phase 1 reached every control plane before phase 2 began anywhere, and each went node by node.
    apiserver = [(h, p) for h, comp, p in kube.log if comp == "kube-apiserver"]
    assert apiserver == [("master1", "verify"), ("master2", "verify"), ("master3", "verify"),
                         ("master1", "sign"), ("master2", "sign"), ("master3", "sign")]
    for name in MASTERS:
        host = fleet[name]
        have = flags(host)
        assert sorted(have["service-account-key-file"]) == sorted([SA_PUB, NEXT_PUB])  # both keys verify
        assert have["service-account-signing-key-file"] == [NEXT_KEY]
        assert flags(host, CONTROLLER)["service-account-private-key-file"] == [NEXT_KEY]
        assert host.files[NEXT_KEY] == new_key and host.modes[NEXT_KEY] == 0o600
        assert host.files[NEXT_PUB] == public_of(new_key)
        assert ROTATION_CONFIG not in host.files  # the configuration is removed after each phase
        # Keys travel as files, never on a command line.
        assert not [cmd for cmd in host.commands if "PRIVATE KEY" in cmd]
    rotation = load_rotation(pki)
    assert rotation is not None and rotation.phase == "sign" and rotation.signing_since is not None
    assert rotation.grace_seconds == 24 * 3600

    # Within the grace period a re-run changes nothing: no manifest is rewritten.
    before = len(kube.log)
    again = run(c, ROTATE_SA_KEY, fleet)
    assert again.ok and kube.log[before:] == []

    # After the grace period: the old key is retired everywhere, the new pair is sa.key/sa.pub.
    rotation.signing_since -= 25 * 3600
    save_rotation(pki, rotation)
    report = run(c, ROTATE_SA_KEY, fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    assert [(h, p) for h, comp, p in kube.log[before:] if comp == "kube-apiserver"] == [
        ("master1", "retired"), ("master2", "retired"), ("master3", "retired")]
    assert pki.key("sa").read_bytes() == new_key and (pki.root / "sa.pub").read_bytes() == public_of(new_key)
    assert load_rotation(pki) is None and not (pki.root / "sa-next.key").exists()
    for name in MASTERS:
        host = fleet[name]
        assert flags(host)["service-account-key-file"] == [SA_PUB]
        assert flags(host)["service-account-signing-key-file"] == [SA_KEY]
        assert flags(host, CONTROLLER)["service-account-private-key-file"] == [SA_KEY]
        assert host.files[SA_KEY] == new_key and host.files[SA_PUB] == public_of(new_key)
        assert "rm -f -- /etc/kubernetes/pki/sa-next.key /etc/kubernetes/pki/sa-next.pub " \
               "/etc/kubernetes/pki/sa-verify.pub" in host.commands


def test_v1beta3_verifies_both_keys_through_one_bundle_file() -> None:
    c = cluster("v1.30.6")
    old_key = with_pki(c)
    fleet = MemoryFleet(NAMES)
    FakeControlPlane(fleet)
    report = run(c, ROTATE_SA_KEY, fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    new_key = (cluster_pki(c).root / "sa-next.key").read_bytes()
    for name in MASTERS:
        host = fleet[name]
        assert flags(host)["service-account-key-file"] == [VERIFY_BUNDLE]
        bundle = host.files[VERIFY_BUNDLE]
        assert bundle == public_of(old_key) + public_of(new_key)  # kube-apiserver reads every key in the file
        assert flags(host)["service-account-signing-key-file"] == [NEXT_KEY]


def test_an_interrupted_rotation_resumes_where_it_stopped() -> None:
    c = cluster()
    with_pki(c)
    fleet = MemoryFleet(NAMES)
    kube = FakeControlPlane(fleet, fail_on=("master2", NEXT_KEY))  # master2 fails to switch its signing key
    report = run(c, ROTATE_SA_KEY, fleet)
    assert [f.host for f in report.failures] == ["master2"]
    assert report.stopped_at == "SignWithNewServiceAccountKey"
    assert flags(fleet["master1"])["service-account-signing-key-file"] == [NEXT_KEY]
    assert flags(fleet["master3"])["service-account-signing-key-file"] == [SA_KEY]  # not touched after the failure
    rotation = load_rotation(cluster_pki(c))
    assert rotation is not None and rotation.phase == "verify" and rotation.signing_since is None

    kube.fail_on = None
    before = len(kube.log)
    report = run(c, ROTATE_SA_KEY, fleet)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    # master1 is neither taken back to phase 1 nor switched again; the same new key is used throughout.
    resumed = [(h, p) for h, comp, p in kube.log[before:] if comp == "kube-apiserver"]
    assert resumed == [("master2", "sign"), ("master3", "sign")]
    assert len({fleet[n].files[NEXT_KEY] for n in MASTERS}) == 1
    rotation = load_rotation(cluster_pki(c))
    assert rotation is not None and rotation.phase == "sign"


def test_finish_retires_at_once_and_dry_runs_change_nothing() -> None:
    c = cluster()
    old_key = with_pki(c)
    pki = cluster_pki(c)
    fleet = MemoryFleet(NAMES)
    kube = FakeControlPlane(fleet)
    events: list[Event] = []
    report = run(c, ROTATE_SA_KEY, fleet, events, dry_run=True, extra={"finish": True})
    assert report.ok and kube.log == []
    assert not (pki.root / "sa-next.key").exists() and load_rotation(pki) is None
    assert not [cmd for n in MASTERS for cmd in fleet[n].commands if cmd.startswith(("kubeadm", "<put", "rm "))]
    (plan,) = [e.data for e in events if e.kind == "report"]
    assert [row[2] for row in plan["rows"]] == ["now", "now", "now"]

    report = run(c, ROTATE_SA_KEY, fleet, extra={"finish": True})
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    assert [p for h, comp, p in kube.log if comp == "kube-apiserver" and h == "master1"] == ["verify", "sign",
                                                                                               "retired"]
    assert pki.key("sa").read_bytes() != old_key and load_rotation(pki) is None
    assert fleet["master3"].files[SA_KEY] == pki.key("sa").read_bytes()


def test_the_grace_period_decides_when_the_old_key_goes() -> None:
    now = time.time()
    assert decide(None, now, False, None) == ["start", "verify", "sign"]
    assert decide(None, now, True, None) == ["start", "verify", "sign", "retire"]
    signing = Rotation("sign", now - 7200, 3600 * 24, signing_since=now - 3600)
    assert decide(signing, now, False, None) == []
    assert decide(signing, now, False, 1800) == ["retire"]  # --grace 30m on the re-run
    assert decide(signing, now, True, None) == ["retire"]
    assert decide(Rotation("verify", now, 60), now, False, None) == ["verify", "sign"]
    assert decide(Rotation("retire", now, 60, now - 30), now, False, None) == ["retire"]
    assert parse_duration("24h", "--grace") == 86400 and parse_duration("1h30m", "--grace") == 5400
    assert parse_duration("7d", "--ttl") == 7 * 86400 and parse_duration("0", "--ttl") == 0
    with pytest.raises(UsageError, match="not a duration"):
        parse_duration("tomorrow", "--grace")


def test_an_unhealthy_control_plane_is_not_restarted() -> None:
    c = cluster()
    with_pki(c)
    fleet = MemoryFleet(NAMES)
    kube = FakeControlPlane(fleet)
    fleet["master1"].handlers.insert(0, (re.compile(r"--raw=/readyz"), lambda h, m, s: (1, "", "refused")))
    report = run(c, ROTATE_SA_KEY, fleet)
    (failure,) = report.failures
    assert failure.host == "master1" and "not ready" in failure.message and "\n" not in failure.message
    assert kube.log == []


# -- bootstrap tokens ---------------------------------------------------------------------------------------------

LISTED = ("abcdef\t2031-01-01T00:00:00Z\tauthentication signing\tsystem:bootstrappers:kubeadm:default-node-token\t"
          "join\tworkers\n"
          "ghijkl\t\tauthentication \t\t\n")


def test_listing_reads_ids_and_never_the_secret() -> None:
    cmd = list_tokens_command()
    assert cmd.readonly and "token-secret" not in cmd.text
    template = next(w for w in shlex.split(cmd.text) if w.startswith("go-template="))
    assert '"token-id"' in template and "description" in template
    tokens = parse_tokens(LISTED)
    assert [t.id for t in tokens] == ["abcdef", "ghijkl"]
    assert tokens[0].description == "join\tworkers" and tokens[0].usages == "authentication,signing"
    assert tokens[1].ttl() == "<forever>" and tokens[0].ttl(now=0).endswith("h")


def test_create_list_delete_on_the_first_control_plane() -> None:
    c = cluster()
    fleet = MemoryFleet(NAMES)
    first = fleet["master1"]
    created: list[str] = []

    def create(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
        doc = YAML(typ="safe").load(h.files[TOKEN_CONFIG].decode())
        assert h.modes[TOKEN_CONFIG] == 0o600
        entry = doc["bootstrapTokens"][0]
        assert entry["ttl"] == "2h0m0s" and entry["description"] == "rack 7"
        created.append(entry["token"])
        return 0, entry["token"] + "\n", ""

    removes_files(first)
    first.on(r"^kubeadm token create --config /etc/kubernetes/kubeadm-token.yaml >/dev/null$", create)
    first.on(r"go-template=", lambda h, m, s: (0, "".join(f"{t[:6]}\t\tsigning\t\t\n" for t in created), ""))
    first.on(r"^kubeadm token delete (\S+)$", lambda h, m, s: (created.clear(), (0, "", ""))[1])

    events: list[Event] = []
    options = RunOptions(extra={"ttl": 7200, "description": "rack 7"})
    ctx = RunContext(c, options, bus=EventBus([events.append]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    report = asyncio.run(Executor(ctx).run_pipeline(CREATE_TOKEN))
    ctx_shared = ctx.shared
    assert report.ok
    token = ctx_shared["bootstrap-token"]
    assert re.fullmatch(r"[a-z0-9]{6}\.[a-z0-9]{16}", token) and created == [token]
    assert TOKEN_CONFIG not in first.files  # removed after kubeadm read it
    assert not [cmd for n in NAMES for cmd in fleet[n].commands if token in cmd]
    assert not [e for e in events if token in json.dumps(e.to_dict(), default=str)]
    assert not fleet["master2"].commands  # only the first control plane

    ctx = RunContext(c, RunOptions(), bus=EventBus([]), pool=ConnectionPool(c, RunOptions().connect,
                                                                               factory=fleet.factory))
    assert asyncio.run(Executor(ctx).run_pipeline(LIST_TOKENS)).ok
    assert [t["id"] for t in ctx.shared["bootstrap-tokens"]] == [token[:6]]

    report = run(c, DELETE_TOKEN, fleet, extra={"token_id": token[:6]})
    assert report.ok and created == []
    assert f"kubeadm token delete {token[:6]}" in first.commands
    deletes = len([cmd for cmd in first.commands if cmd.startswith("kubeadm token delete")])
    assert run(c, DELETE_TOKEN, fleet, extra={"token_id": token[:6]}).ok  # already gone: nothing to do
    assert len([cmd for cmd in first.commands if cmd.startswith("kubeadm token delete")]) == deletes


def test_a_full_token_on_the_command_line_is_refused() -> None:
    assert token_id("abcdef") == "abcdef"
    with pytest.raises(UsageError, match="token id only"):
        token_id("abcdef.0123456789abcdef")
    with pytest.raises(UsageError, match="not a bootstrap token id"):
        token_id("ABC")


def test_rotation_record_survives_a_restart_of_kubexm(tmp_path: Path) -> None:
    c = cluster()
    pki = cluster_pki(c)
    save_rotation(pki, Rotation("sign", 10.0, 3600, 20.0))
    loaded = load_rotation(pki)
    assert loaded == Rotation("sign", 10.0, 3600, 20.0) and loaded.retire_after() == 3620.0

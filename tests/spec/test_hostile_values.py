"""Hostile values in every string field of the cluster file: refused with one line naming the field, or carried.

The fields are found by walking the models, so a field added later is covered without editing this file;
a string field with no validated type fails ``test_every_string_field_is_validated_or_listed``. Free text
(passwords, extra-arg values, sysctl values, deploy-machine paths) has no grammar: such a field must be
listed in ``CARRIED_VERBATIM`` with why its value is harmless, and the corpus checks that it is accepted
exactly as written (end to end, the lead's tests send those values to hosts).
"""

from __future__ import annotations

import contextlib
import copy
import io
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pytest
from pydantic import BaseModel, SecretStr

from kubexm.errors import SpecError
from kubexm.spec.fields import Kind
from kubexm.spec.loader import _build, _parse_yaml, _yaml, parse_cluster
from kubexm.spec.models import Cluster

# id -> value. Embedded forms append the value to a valid example of the field ('/' first for the .. cases).
HOSTILE: dict[str, str] = {
    "semicolon": ";reboot",
    "subshell": "$(touch /tmp/kubexm-pwned)",
    "backticks": "`reboot`",
    "single-quote": "it's",
    "double-quote": 'say "hi"',
    "space": "two words",
    "newline": "line\nnext: 1",
    "carriage-return": "line\rnext",
    "nul": "nul\x00byte",
    "tab": "a\tb",
    "dotdot": "..",
    "traversal": "../../x",
    "leading-dash": "-rf",
    "unicode": "café",
    "rtl-mark": "ab\u200fc",
    "rtl-override": "abc\u202edef",
}
LEADING_ONLY = {"leading-dash"}  # appended to a valid value it is just a suffix
CONTROL = {"newline", "carriage-return", "nul", "tab", "rtl-mark", "rtl-override"}
LINE_BREAKING = {"newline", "carriage-return", "nul"}

# Free-text fields: accepted as written except control and invisible characters (secrets: except line breaks
# and NUL). Why each is harmless verbatim.
CARRIED_VERBATIM: dict[str, str] = {
    "spec.hosts[].password": "secret: sent to the SSH library, never to a shell or file",
    "spec.hosts[].privateKeyPassphrase": "secret: given to the SSH library to decrypt the key",
    "spec.hosts[].sudoPassword": "secret: written to sudo -S's stdin, one line",
    "spec.hosts[].privateKeyPath": "deploy machine: read by Python (Path.expanduser), never sent",
    "spec.bastions[].password": "secret: sent to the SSH library",
    "spec.bastions[].privateKeyPath": "deploy machine: read by Python, never sent",
    "spec.kubernetes.apiServerExtraArgs{}": "one argv word / YAML value, written by the YAML dumper or quoted",
    "spec.kubernetes.controllerManagerExtraArgs{}": "one argv word / YAML value",
    "spec.kubernetes.schedulerExtraArgs{}": "one argv word / YAML value",
    "spec.kubernetes.kubeletExtraArgs{}": "one argv word / YAML value",
    "spec.etcd.caFile": "deploy machine: read by Python's ssl module",
    "spec.etcd.certFile": "deploy machine: read by Python's ssl module",
    "spec.etcd.keyFile": "deploy machine: read by Python's ssl module",
    "spec.etcd.extraArgs{}": "one argv word of the etcd unit (systemd-escaped by the renderer)",
    "spec.registry.auths[].username": "base64 in JSON and a TOML string (writer libraries); ':' refused",
    "spec.registry.auths[].password": "secret: base64 in JSON and a TOML string",
    "spec.registry.auths[].caFile": "deploy machine path",
    "spec.addons[].manifests[]": "URLs are validated as URLs; other values are deploy-machine paths read by Python",
    "spec.system.sysctl{}": "value of a sysctl.d line (whole rest of line) and one quoted argv word",
    "spec.assets.localSource": "deploy machine: a directory read by Python",
}
# Fields whose nested values go to a YAML/JSON writer and never onto a config line by themselves.
STRUCTURED = {"spec.addons[].values": "Helm values: dumped as a YAML document by ruamel"}

# Hostile ids a validated kind accepts (suffix '+': in the embedded form), on purpose.
ACCEPTED_BY_KIND: dict[str, set[str]] = {
    # Any printable path: quoted as one word in commands, escaped by each config format's writer. The lead's
    # tests take such paths end to end (tests/lab: etcd data dir with a space and shell syntax).
    "abs-path": {"semicolon+", "subshell+", "backticks+", "single-quote+", "double-quote+", "space+", "unicode+"},
    "schedule": {"space", "space+", "dotdot"},  # calendar expressions have spaces and ranges (Mon..Fri)
    "url": {"dotdot+", "traversal+"},  # a URL path; the server resolves it
}

# A valid value of each kind (also used for map keys and values around the hostile one).
EXAMPLES: dict[str, Any] = {
    "text": "hello", "secret": "s3cret", "local-path": "~/.ssh/id_ed25519", "manifest-source": "/tmp/extra.yaml",
    "registry-user": "puller", "address": "node9.example.com", "ntp-server": "ntp.example.com", "ip": "10.0.0.99",
    "cidr": "10.233.64.0/18", "dns-name": "cluster.local", "dns-label": "extra", "cert-san": "api.example.com",
    "node-name": "node1", "cluster-name": "prod", "user": "root", "interface": "eth0",
    "registry-host": "reg.internal:5000", "registry": "reg.internal:5000", "repository-path": "mirror",
    "image": "docker.io/library/haproxy:2.8", "image-tag": "v0.8.9", "version": "v1.33.7",
    "url": "https://example.com", "chart": "ingress-nginx", "abs-path": "/var/lib/kubexm-test",
    "package": "curl", "sysctl-key": "net.ipv4.ip_forward", "sysctl-value": "1", "kernel-module": "br_netfilter",
    "timezone": "UTC", "identifier": "etcd", "sha256": "0" * 64, "flag-name": "audit-log-maxage", "arg-value": "30",
    "feature-gate": "SidecarContainers", "schedule": "daily", "dns-upstream": "1.1.1.1",
    "label-key": "example.com/role", "label-value": "edge", "taint": "dedicated=edge:NoSchedule",
}

BASE = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: prod
  labels: {team: infra}
spec:
  hosts:
    - name: node1
      address: 192.168.0.11
      internalAddress: 10.0.0.11
      user: root
      password: pw
      privateKeyPath: ~/.ssh/id_ed25519
      privateKeyPassphrase: phrase
      sudoPassword: sudo-pw
      bastion: jump
      labels: {example.com/role: edge}
      taints: ["dedicated=edge:NoSchedule"]
    - name: node2
      address: 192.168.0.12
  bastions:
    - {name: jump, address: jump.example.com, user: ops, password: pw, privateKeyPath: ~/.ssh/jump}
  roleGroups:
    etcd: [node1]
    control-plane: [node1]
    worker: [node2]
    loadbalancer: []
    registry: [node2]
  controlPlaneEndpoint:
    domain: lb.kubexm.local
    interface: eth0
  kubernetes:
    version: v1.33.7
    clusterName: cluster.local
    apiServerCertSANs: [api.example.com]
    apiServerExtraArgs: {audit-log-maxage: "30"}
    controllerManagerExtraArgs: {node-cidr-mask-size: "24"}
    schedulerExtraArgs: {v: "2"}
    kubeletExtraArgs: {v: "2"}
    featureGates: {SidecarContainers: true}
  etcd:
    dataDir: /var/lib/etcd
    endpoints: [https://10.0.0.50:2379]
    caFile: ~/etcd/ca.crt
    certFile: ~/etcd/client.crt
    keyFile: ~/etcd/client.key
    backup: {directory: /var/backups/etcd, schedule: daily}
    extraArgs: {quota-backend-bytes: "8589934592"}
  containerRuntime:
    version: 1.7.27
    sandboxImage: registry.k8s.io/pause:3.10
    registryMirrors:
      - {registry: docker.io, endpoints: [https://mirror.internal]}
    insecureRegistries: [reg.internal:5000]
    dataRoot: /var/lib/containerd
  network:
    interface: eth1
    calico: {version: v3.29.1}
    flannel: {version: v0.26.1}
    cilium: {version: 1.16.5}
  registry:
    privateRegistry: reg.internal:5000
    namespaceOverride: mirror
    auths:
      - {registry: reg.internal:5000, username: puller, password: pull-pw, caFile: ~/reg-ca.crt}
  addons:
    - name: extra
      namespace: extra
      chart: ingress-nginx
      repo: https://kubernetes.github.io/ingress-nginx
      version: 4.11.3
      values: {controller: {replicaCount: 2}}
      manifests: [/tmp/extra.yaml]
  dns:
    upstreamServers: [1.1.1.1]
  storage:
    nfs: {server: nfs.example.com, path: /export/k8s}
    localPath: {path: /opt/local-path-provisioner, version: v0.0.30}
  system:
    ntpServers: [ntp.example.com]
    timezone: UTC
    sysctl: {vm.max_map_count: "262144"}
    packages: [curl]
  assets:
    localSource: ~/kubexm-assets
    mirror: https://mirror.example.com/kubexm
    checksums: {etcd: {v3.5.99: {amd64: "%s"}}}
  pki:
    autoRenew: {onCalendar: weekly}
  cost:
    instanceTypes: [{name: m5.large, monthly: 70}]
""" % ("0" * 64)


# --- walking the models -------------------------------------------------------------------------

ITEM, KEY, VALUE = "[]", "{key}", "{}"


@dataclass(frozen=True)
class Leaf:
    """One string position: the field's location, then list/map steps to the string inside its value."""

    loc: tuple[str | int, ...]
    steps: tuple[str, ...]
    kind: Kind | None
    examples: tuple[Any, ...]  # for each step: the valid map value (KEY) or map key (VALUE) around the string

    @property
    def name(self) -> str:
        text = ""
        for part in self.loc:
            text += "[]" if isinstance(part, int) else ("." if text else "") + str(part)
        return text + "".join(s for s in self.steps if s != KEY) + ("{key}" if KEY in self.steps else "")

    @property
    def display(self) -> str:
        """The path as the loader prints it."""
        text = ""
        for part in self.loc:
            text += f"[{part}]" if isinstance(part, int) else ("." if text else "") + str(part)
        return text


def _strip_optional(ann: Any) -> Any:
    if get_origin(ann) in (Union, types.UnionType):
        args = [a for a in get_args(ann) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return ann


def _kind(ann: Any) -> Kind | None:
    if get_origin(ann) is Annotated:
        return next((m for m in ann.__metadata__ if isinstance(m, Kind)), None)
    return None


def _base_type(ann: Any) -> Any:
    return get_args(ann)[0] if get_origin(ann) is Annotated else ann


def example(ann: Any) -> Any:
    ann = _strip_optional(ann)
    kind = _kind(ann)
    if kind is not None:
        return EXAMPLES[kind.name]
    base = _base_type(ann)
    if get_origin(base) is list:
        return [example(get_args(base)[0])]
    if get_origin(base) is dict:
        key, value = get_args(base)
        return {example(key): example(value)}
    if get_origin(base) is Literal:
        return get_args(base)[0]
    if base is bool:
        return True
    raise AssertionError(f"no example for {ann!r}")


def _leaves_of(ann: Any, loc: tuple[str | int, ...], steps: tuple[str, ...], examples: tuple[Any, ...],
               metadata: list[Any]) -> typing.Iterator[Leaf]:
    ann = _strip_optional(ann)
    kind = _kind(ann) or next((m for m in metadata if isinstance(m, Kind)), None)
    base = _base_type(ann)
    if isinstance(base, type) and issubclass(base, BaseModel):
        yield from walk(base, loc + ((0,) if ITEM in steps else ()))
    elif base is str or base is SecretStr:
        yield Leaf(loc, steps, kind, examples)
    elif get_origin(base) is list:
        (item,) = get_args(base)
        yield from _leaves_of(item, loc, (*steps, ITEM), (*examples, None), [])
    elif get_origin(base) is dict and get_args(base)[1] is object:  # free-form data (Helm values)
        yield Leaf(loc, (*steps, "<any>"), None, examples)
    elif get_origin(base) is dict:
        key, value = get_args(base)
        yield from _leaves_of(key, loc, (*steps, KEY), (*examples, example(value)), [])
        yield from _leaves_of(value, loc, (*steps, VALUE), (*examples, example(key)), [])
    else:
        assert base in (bool, int, float) or get_origin(base) is Literal, f"{loc}: unexpected type {ann!r}"


def walk(model: type[BaseModel], loc: tuple[str | int, ...] = ()) -> typing.Iterator[Leaf]:
    for name, field in model.model_fields.items():
        alias = field.alias or name
        sub = (*loc, alias)
        ann = field.annotation
        base = _strip_optional(ann)
        if get_origin(base) is list and isinstance(get_args(base)[0], type) and issubclass(get_args(base)[0], BaseModel):
            yield from walk(get_args(base)[0], (*sub, 0))
            continue
        yield from _leaves_of(ann, sub, (), (), list(field.metadata))


LEAVES = [leaf for leaf in walk(Cluster) if leaf.loc[:1] != ("apiVersion",) and leaf.loc[:1] != ("kind",)]


def test_every_string_field_is_validated_or_listed() -> None:
    names = {leaf.name for leaf in LEAVES}
    unvalidated = [leaf.name for leaf in LEAVES if leaf.kind is None and leaf.name.removesuffix("<any>") not in STRUCTURED]
    assert not unvalidated, f"string fields with no validated type (use a type of kubexm.spec.fields): {unvalidated}"
    free = {leaf.name for leaf in LEAVES if leaf.kind is not None and leaf.kind.free_text}
    assert free - set(CARRIED_VERBATIM) == set(), "free-text fields not listed in CARRIED_VERBATIM"
    assert set(CARRIED_VERBATIM) - free == set(), "CARRIED_VERBATIM lists fields that are not free text (any more)"
    assert {n.removesuffix("<any>") for n in names if n.endswith("<any>")} == set(STRUCTURED)
    assert len(LEAVES) > 80  # the walk found the whole tree


# --- applying the corpus ------------------------------------------------------------------------

def test_base_is_valid() -> None:
    parse_cluster(BASE, "base.yaml")


# The round-trip data (with lines) is parsed once; each case sets its value in place and puts the old one back.
BASE_DATA = _parse_yaml(BASE, "hostile.yaml")


def _wrap(steps: tuple[str, ...], examples: tuple[Any, ...], value: Any) -> Any:
    if not steps:
        return value
    inner = _wrap(steps[1:], examples[1:], value)
    if steps[0] == ITEM:
        return [inner]
    if steps[0] == KEY:
        return {inner: examples[0]}
    return {examples[0]: inner}


@contextlib.contextmanager
def _set(leaf: Leaf, value: str) -> typing.Iterator[dict[str, Any]]:
    node: Any = BASE_DATA
    for part in leaf.loc[:-1]:
        node = node[part]  # every parent exists in BASE
    last = leaf.loc[-1]
    missing = object()
    old = node.get(last, missing)
    node[last] = _wrap(leaf.steps, leaf.examples, value)
    try:
        yield BASE_DATA
    finally:
        if old is missing:
            del node[last]
        else:
            node[last] = old


def _validate(leaf: Leaf, value: str) -> Cluster:
    with _set(leaf, value) as data:
        return _build(copy.copy(data), "hostile.yaml", (), True)


def _via_text(leaf: Leaf, value: str) -> Cluster:
    """The same, through YAML text and the public loader (the dumper escapes the control characters)."""
    with _set(leaf, value) as data:
        out = io.StringIO()
        _yaml().dump(data, out)
    return parse_cluster(out.getvalue(), "hostile.yaml")


def _expected_accepted(leaf: Leaf) -> set[str]:
    assert leaf.kind is not None
    if leaf.kind.free_text:
        refused = LINE_BREAKING if leaf.kind.name == "secret" else CONTROL
        ids = set(HOSTILE) - refused
        return ids | {f"{i}+" for i in ids - LEADING_ONLY}
    return ACCEPTED_BY_KIND.get(leaf.kind.name, set())


def _cases(leaf: Leaf) -> list[tuple[str, str]]:
    assert leaf.kind is not None
    base = EXAMPLES[leaf.kind.name]
    cases = [(hid, value) for hid, value in HOSTILE.items()]
    for hid, value in HOSTILE.items():
        if hid not in LEADING_ONLY:
            cases.append((f"{hid}+", base + ("/" if hid in ("dotdot", "traversal") else "") + value))
    return cases


def _carried(cluster: Cluster, leaf: Leaf, value: str) -> bool:
    node: Any = cluster
    for part in leaf.loc:
        node = node[part] if isinstance(part, int) else getattr(node, _field_name(type(node), str(part)))
    for step in leaf.steps:
        if step == ITEM:
            node = node[0]
        elif step == KEY:
            return value in node
        else:
            node = next(iter(node.values()))
    if isinstance(node, SecretStr):
        node = node.get_secret_value()
    return bool(node == value)


def _field_name(model: type[BaseModel], alias: str) -> str:
    return next(n for n, f in model.model_fields.items() if alias in (n, f.alias))


HOST_LEAVES = [leaf for leaf in LEAVES if leaf.kind is not None]


@pytest.mark.parametrize("leaf", HOST_LEAVES, ids=[leaf.name for leaf in HOST_LEAVES])
def test_hostile_values(leaf: Leaf) -> None:
    accepted = _expected_accepted(leaf)
    wrong: list[str] = []
    for hid, value in _cases(leaf):
        try:
            cluster = (_via_text if hid == "newline" else _validate)(leaf, value)
        except SpecError as err:
            problems = err.problems
            if hid in accepted:
                wrong.append(f"{hid}: refused although listed as accepted: {problems}")
                continue
            assert all("\n" not in p and "\r" not in p for p in problems), problems
            naming = [p for p in problems if p.split(": ", 2)[1].startswith(leaf.display)]
            if not naming:
                wrong.append(f"{hid}: refused without naming {leaf.display}: {problems}")
            elif not naming[0].startswith("hostile.yaml:") or naming[0].startswith("hostile.yaml:1: "):
                wrong.append(f"{hid}: no line number: {naming[0]}")
            if leaf.kind is not None and leaf.kind.name == "secret" and value in str(problems):
                wrong.append(f"{hid}: a secret echoed in {problems}")
            continue
        if hid not in accepted:
            wrong.append(f"{hid}: {value!r} accepted")
        elif not _carried(cluster, leaf, value):
            wrong.append(f"{hid}: {value!r} not carried verbatim")
    assert not wrong, "\n".join(wrong)

"""Unusual but valid values of the cluster file, taken through the whole `create cluster` pipeline.

tests/spec/test_hostile_values.py proves each field refuses what it must. This is the other half: what a
field accepts (a data dir with a space and ``$(...)``, extra args with ``=``, ``,``, quotes and backquotes,
a registry password with ``$``, ``;`` and quotes, package names with ``+``, ``.`` and ``~``, ...) reaches the
hosts verbatim and harmless. Every value carries a marker (``xqNN``), and after a full run against in-memory
hosts (preflight to addons, every task):

- each marker in a command sits in one shell word that holds the whole value, every character of it taken
  literally by the shell (tests/support/shell_words.py), also inside ``sh -c`` scripts;
- every command, run for real with bash and dash in a sandbox with stand-in programs, creates none of the
  ``/tmp/PWNED-xqNN`` files the values ask for;
- every uploaded file carrying a marker parses with its format's reader (TOML, YAML as Go's YAML 1.1 reads
  it, JSON, systemd units and environment files, sysctl.d, chrony, hosts) and holds the whole value;
- values a field refuses stop `kubexm create cluster --dry-run --offline` with one line naming the field.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml as pyyaml  # PyYAML reads YAML 1.1, as the Go programs kubexm feeds (kubeadm, kubelet, helm) do
from support import sandbox
from support.create_run import CreateRun, asset_source, run_create
from support.shell_words import scripts, words

from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster


def pwn(marker: str) -> str:
    return f"$(touch /tmp/PWNED-{marker})"


def tick(marker: str) -> str:
    return f"`touch /tmp/PWNED-{marker}`"


# marker -> (field, value). Each value is valid for its field and carries its marker.
ACCEPTED: dict[str, tuple[str, str]] = {
    "xq01": ("spec.etcd.dataDir", "/var/lib/kxm xq01/etcd data;" + pwn("xq01")),
    "xq02": ("spec.containerRuntime.dataRoot", "/var/lib/ctr 'xq02' \"q\" \\b " + tick("xq02")),
    "xq03": ("spec.storage.localPath.path", "/opt/local path/xq03 café " + pwn("xq03")),
    "xq04": ("spec.storage.nfs.path", "/export/k8s xq04;touch /tmp/PWNED-xq04 &"),
    "xq05": ("spec.storage.nfs.server", "nfs-xq05.example.com"),
    "xq06": ("spec.kubernetes.apiServerExtraArgs.audit-log-path", "/var/log/kube audit xq06;" + pwn("xq06") + ".log"),
    "xq07": ("spec.kubernetes.apiServerExtraArgs.enable-admission-plugins", "NodeRestriction,xq07=on, 'q' \"dq\""),
    "xq08": ("spec.kubernetes.controllerManagerExtraArgs.cluster-signing-duration",
             "xq08 it's \"dq\" " + tick("xq08") + " 50%n"),
    "xq09": ("spec.kubernetes.schedulerExtraArgs.v", "2 xq09 $HOME |&;<> é"),
    "xq10": ("spec.kubernetes.kubeletExtraArgs.node-labels", "a=b,c=xq10;" + pwn("xq10")),
    "xq11": ("spec.etcd.extraArgs.quota-backend-bytes", "8589934592 xq11 " + pwn("xq11") + " 50%n \\ 'q' \"dq\" $HOME"),
    "xq12": ("spec.registry.auths[0].username", "robot$xq12 'u'"),
    "xq13": ("spec.registry.auths[0].password", "p'a\"ss xq13 " + pwn("xq13") + " `id` ;\\ %s"),
    "xq14": ("spec.registry.auths[0].registry", "reg-xq14.internal:5000"),
    "xq15": ("spec.system.sysctl value", "1024 65000 xq15 " + pwn("xq15")),
    "xq16": ("spec.system.sysctl key", "net.ipv4.conf.xq16.rp_filter"),
    "xq17": ("spec.system.packages[0]", "libxq17+plus.x~1"),
    "xq18": ("spec.system.packages[1]", "xq18-tools"),
    "xq19": ("spec.system.ntpServers[0]", "ntp-xq19.example.com"),
    "xq23": ("spec.controlPlaneEndpoint.interface", "bond0.xq23_x-1"),
    "xq24": ("spec.network.interface", "en.xq24_y-1"),
    "xq25": ("spec.dns.upstreamServers[0]", "/etc/xq25-resolv.conf"),
    "xq26": ("spec.kubernetes.apiServerCertSANs[0]", "api-xq26.example.com"),
    "xq27": ("spec.kubernetes.apiServerCertSANs[1]", "*.xq27.example.com"),
    "xq28": ("spec.containerRuntime.registryMirrors[0].endpoints[0]", "https://mirror-xq28.internal:5000/v2;a&b=1!,+"),
    "xq29": ("spec.containerRuntime.insecureRegistries[0]", "reg-xq29.internal:5000"),
    "xq30": ("spec.containerRuntime.sandboxImage", "reg.internal:5000/xq30/pause:3.10-xq30"),
    "xq31": ("spec.registry.privateRegistry", "reg.internal:5000/xq31/sub"),
    "xq32": ("spec.registry.namespaceOverride", "xq32/k8s"),
    "xq33": ("spec.addons[0].name", "xq33"),
    "xq34": ("spec.addons[0].repo", "https://charts-xq34.example.com/path;x&y=1"),
    "xq35": ("spec.addons[0].version", "1.2.3+xq35"),
    "xq36": ("spec.addons[0].values.note", "xq36 it's \"q\" " + pwn("xq36") + " `id` no"),
    "xq37": ("spec.addons[0].values key", "xq37 key;" + pwn("xq37")),
    "xq41": ("spec.hosts[0].name", "cp1-xq41"),
    "xq42": ("metadata.name", "prod-xq42"),
    "xq43": ("spec.kubernetes.clusterName", "xq43.local"),
    "xq46": ("spec.controlPlaneEndpoint.domain", "lb-xq46.local"),
    "xq47": ("spec.addons[0].chart", "repo-xq47/chart-xq47"),
}
# Forms kubexm derives from a value on purpose, each as safe as the value: a sysctl key as its /proc/sys path,
# names as identifiers ('-' to '_') for preflight's probe variables and keepalived's instance names.
FORMS: dict[str, tuple[str, ...]] = {
    "xq16": ("net/ipv4/conf/xq16/rp_filter",),
    "xq41": ("cp1_xq41",),
    "xq42": ("prod_xq42",),
    "xq28": ("mirror-xq28.internal:5000/v2;a&b=1!,+",),  # a CRI-O mirror location has no scheme
}


def forms(marker: str) -> tuple[str, ...]:
    return (ACCEPTED[marker][1], *FORMS.get(marker, ()))


# Accepted, but never sent to a node by `create cluster`; they must not show up there either.
DEPLOY_ONLY: dict[str, tuple[str, str]] = {
    "xq38": ("spec.addons[1].manifests[0]", "read on the deploy machine; only its content is sent"),
    "xq39": ("spec.hosts[0].privateKeyPath", "read on the deploy machine by the SSH library"),
    "xq40": ("spec.hosts[0].password", "given to the SSH library"),
    # spec.hosts[].labels are accepted and shown by `kubexm get nodes`, but no step applies them (reported).
    "xq21": ("spec.hosts[0].labels key", "not applied to the node by any step"),
    "xq22": ("spec.hosts[0].labels value", "not applied to the node by any step"),
    "xq45": ("spec.etcd.backup.directory", "used by `kubexm backup`, not by create"),
}


def v(marker: str) -> str:
    return ACCEPTED[marker][1]


def cluster_document(source: str, manifest: str, runtime: str) -> dict[str, Any]:
    mirrors = [{"registry": "docker.io", "endpoints": [v("xq28")]}]
    return {
        "apiVersion": "kubexm.io/v1alpha1", "kind": "Cluster",
        "metadata": {"name": v("xq42")},
        "spec": {
            "hosts": [
                {"name": v("xq41"), "address": "192.168.0.11", "internalAddress": "10.0.0.11",
                 "privateKeyPath": "~/keys/id xq39 $(x)", "password": "pw xq40 $(touch /tmp/PWNED-xq40)",
                 "labels": {"example.com/xq21": "no", "tier": "xq22-on_x.y"}},
                {"name": "worker1", "address": "192.168.0.12", "labels": {"y": "on"}},
            ],
            "roleGroups": {"etcd": [v("xq41")], "control-plane": [v("xq41")], "worker": ["worker1"]},
            "controlPlaneEndpoint": {"domain": v("xq46"), "address": "10.0.0.100",
                                     "loadBalancer": "haproxy-keepalived", "interface": v("xq23")},
            "kubernetes": {"version": "v1.33.7", "clusterName": v("xq43"), "dnsDomain": v("xq43"),
                           "apiServerCertSANs": [v("xq26"), v("xq27")],
                           "apiServerExtraArgs": {"audit-log-path": v("xq06"), "enable-admission-plugins": v("xq07")},
                           "controllerManagerExtraArgs": {"cluster-signing-duration": v("xq08")},
                           "schedulerExtraArgs": {"v": v("xq09")},
                           "kubeletExtraArgs": {"node-labels": v("xq10")}},
            "etcd": {"dataDir": v("xq01"), "extraArgs": {"quota-backend-bytes": v("xq11")},
                     "backup": {"directory": "/var/backups/etcd xq45;" + pwn("xq45")}},
            "containerRuntime": {"type": runtime, "dataRoot": v("xq02"), "sandboxImage": v("xq30"),
                                 "registryMirrors": mirrors, "insecureRegistries": [v("xq29")]},
            "network": {"plugin": "calico", "interface": v("xq24")},
            "registry": {"privateRegistry": v("xq31"), "namespaceOverride": v("xq32"),
                         "auths": [{"registry": v("xq14"), "username": v("xq12"), "password": v("xq13")}]},
            "addons": [
                {"name": v("xq33"), "namespace": "xq33-ns", "chart": v("xq47"), "repo": v("xq34"),
                 "version": v("xq35"), "values": {"note": v("xq36"), "flag": "no", v("xq37"): "on"}},
                {"name": "plain", "manifests": [manifest]},
            ],
            "dns": {"nodelocaldns": True, "upstreamServers": [v("xq25"), "tls://10.0.0.53"]},
            "storage": {"nfs": {"server": v("xq05"), "path": v("xq04")}, "localPath": {"path": v("xq03")}},
            "system": {"ntpServers": [v("xq19"), "10.0.0.200"], "timezone": "Etc/GMT+8",
                       "sysctl": {"net.ipv4.ip_local_port_range": v("xq15"), v("xq16"): "2"},
                       "packages": [v("xq17"), v("xq18")]},
            "assets": {"localSource": source},
        }}


@dataclass
class Created:
    cluster: Cluster
    run: CreateRun
    runtime: str


def create(tmp: Path, runtime: str, packages: list[str] | None = None) -> Created:
    manifest = tmp / "my manifests xq38" / "app.yaml"
    manifest.parent.mkdir(parents=True)
    manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\n")
    doc = cluster_document("/nowhere", str(manifest), runtime)
    source = asset_source(tmp, parse_cluster(json.dumps(doc)))
    doc["spec"]["assets"]["localSource"] = str(source)
    if packages is not None:
        doc["spec"]["system"]["packages"] = packages
    cluster = parse_cluster(json.dumps(doc), "hostile.yaml")
    return Created(cluster, run_create(cluster), runtime)


RUNTIMES = ["containerd", "docker", "crio"]


@pytest.fixture(scope="module", params=RUNTIMES)
def created(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Created:
    mp = pytest.MonkeyPatch()
    tmp = tmp_path_factory.mktemp(f"create-{request.param}")
    mp.setenv("KUBEXM_HOME", str(tmp / "home"))
    mp.setenv("KUBECONFIG", str(tmp / "kubeconfig"))
    try:
        return create(tmp, request.param)
    finally:
        mp.undo()


def test_the_whole_pipeline_runs_to_the_end(created: Created) -> None:
    report = created.run.report
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    for task in ("PreflightChecks", "PrepareNodesOS", "SyncTime", "InstallEtcdCluster", "SetupLoadBalancer",
                 "InstallKubernetes", "BootstrapFirstMaster", "JoinWorkers", "FetchKubeconfig", "InstallCNI",
                 "InstallNodeLocalDNS", "InstallStorage", "InstallAddons"):
        assert task in report.tasks_run, task
    runtime_task = {"containerd": "InstallContainerd", "docker": "InstallDocker", "crio": "InstallCrio"}
    assert runtime_task[created.runtime] in report.tasks_run


# --- commands -----------------------------------------------------------------------------------

def _problems_in_command(command: str) -> list[str]:
    problems = []
    for script in scripts(command):
        for word in words(script):
            for marker, (field, _) in ACCEPTED.items():
                if marker not in word.text or any(marker in s for s in scripts(word.text)[1:]):
                    continue
                if not any(word.holds_literally(form) for form in forms(marker)):
                    problems.append(f"{field} ({marker}) is split, altered or expanded in word {word.text!r} of "
                                    f"{command!r}")
    return problems


def test_every_value_reaches_commands_as_one_literal_word(created: Created) -> None:
    problems = [p for _, command in created.run.commands() for p in _problems_in_command(command)]
    assert not problems, "\n".join(problems[:20])
    # The check looks at what it should: the package names and the chart reach commands.
    sent = "\n".join(c for _, c in created.run.commands())
    for marker in ("xq17", "xq18", "xq33", "xq34", "xq35", "xq41", "xq47"):
        assert marker in sent, marker


def test_the_word_check_catches_a_value_split_or_expanded() -> None:
    value = v("xq01")
    assert not _problems_in_command(f"rm -rf -- {shlex.quote(value)}")
    assert _problems_in_command(f"rm -rf -- {value}")  # unquoted: split at the space and the ';'
    assert _problems_in_command(f'rm -rf -- "{value}"')  # double quotes still run $(...)
    assert _problems_in_command(f"sh -c {shlex.quote('rm -rf ' + value)}")  # quoted once, split by the inner sh


def test_no_value_is_executed_when_the_commands_run(created: Created, tmp_path: Path) -> None:
    why = sandbox.available()
    if why:
        pytest.skip(why)
    commands = list(dict.fromkeys(c for _, c in created.run.commands()))
    assert len(commands) > 100
    root = sandbox.run_all(commands, tmp_path)
    assert not sorted(p.name for p in (root / "tmp").iterdir() if p.name.startswith("PWNED"))
    # The sandbox does run what it is given: a command that expands a value unquoted leaves the file.
    root = sandbox.run_all([f"echo {v('xq01')}"], tmp_path / "probe")
    assert (root / "tmp" / "PWNED-xq01").exists()


def test_values_never_sent_stay_on_the_deploy_machine(created: Created) -> None:
    for host, command in created.run.commands():
        for marker, (field, why) in DEPLOY_ONLY.items():
            assert marker not in command, f"{field} ({why}) reached {host}: {command!r}"
    for host, path, data in created.run.uploads():
        for marker, (field, why) in DEPLOY_ONLY.items():
            assert marker not in path, f"{field} ({why}) reached {host}:{path}"
            assert _opaque(data) or marker.encode() not in data, f"{field} ({why}) reached {host}:{path}"


# --- files --------------------------------------------------------------------------------------

def _strings(node: Any) -> Iterator[str]:
    if isinstance(node, str):
        yield node
        if node.lstrip().startswith(("{", "[")):  # JSON inside a YAML string (a ConfigMap's config.json)
            with contextlib.suppress(ValueError):
                yield from _strings(json.loads(node))
        # A Calico interface is an anchored regular expression of the name; a docker/CRI-O auth is base64.
        if node.startswith("^") and node.endswith("$"):
            yield "\x00regex\x00" + node
        if re.fullmatch(r"[A-Za-z0-9+/]{8,}={0,2}", node):
            with contextlib.suppress(ValueError, UnicodeDecodeError):
                yield base64.b64decode(node, validate=True).decode()
    elif isinstance(node, dict):
        for key, item in node.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(node, list):
        for item in node:
            yield from _strings(item)


def _holds(strings: list[str], value: str) -> bool:
    for s in strings:
        if s.startswith("\x00regex\x00"):
            if re.fullmatch(s.removeprefix("\x00regex\x00"), value):
                return True
        elif value in s:
            return True
    return False


def _env_file(text: str) -> dict[str, str]:
    """systemd's EnvironmentFile= reader (src/basic/env-file.c, parse_env_file_internal), for KEY=value lines."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip()[0] in "#;":
            continue
        key, _, rest = line.partition("=")
        value, state, i = "", "pre", 0
        while i < len(rest):
            c = rest[i]
            if state == "pre":
                if c == "'":
                    state = "single"
                elif c == '"':
                    state = "double"
                elif c == "\\":
                    value, i, state = value + rest[i + 1:i + 2], i + 1, "value"
                elif not c.isspace():
                    value, state = value + c, "value"
            elif state == "value":
                if c == "\\":
                    value, i = value + rest[i + 1:i + 2], i + 1
                else:
                    value += c
            elif state == "single":
                if c == "'":
                    state = "pre"
                else:
                    value += c
            elif state == "double":
                if c == '"':
                    state = "pre"
                elif c == "\\":
                    nxt = rest[i + 1:i + 2]
                    value += nxt if nxt in '"\\`$' else "\\" + nxt
                    i += 1
                else:
                    value += c
            i += 1
        out[key.strip()] = value.rstrip() if state == "value" else value
    return out


def _unit_words(text: str) -> list[str]:
    """Words of the values of a systemd unit file: ``%%`` read as ``%``, any other specifier kept as ``\x01%x`` (so
    a value whose ``%`` systemd would expand no longer matches), quotes removed and C escapes undone as systemd's
    extract_first_word does."""
    out: list[str] = []
    for line in text.splitlines():
        if "=" not in line or line.lstrip().startswith(("#", ";", "[")):
            continue
        _, _, rest = line.partition("=")
        rest = re.sub(r"%(.)", lambda m: "%" if m.group(1) == "%" else "\x01%" + m.group(1), rest)
        word, quote, i, started = "", "", 0, False
        while i < len(rest):
            c = rest[i]
            if c == "\\" and i + 1 < len(rest):
                nxt = rest[i + 1]
                word += {"n": "\n", "t": "\t", "s": " "}.get(nxt, nxt)
                started, i = True, i + 2
                continue
            if quote:
                if c == quote:
                    quote = ""
                else:
                    word += c
            elif c in "'\"":
                quote, started = c, True
            elif c.isspace():
                if started:
                    out.append(word)
                word, started = "", False
            else:
                word, started = word + c, True
            i += 1
        if started:
            out.append(word)
    return out


def _format(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    if name.endswith(".kubexm-new"):
        name = name.removesuffix(".kubexm-new")
    if name.endswith(".toml"):
        return "toml"
    if name.endswith((".yaml", ".yml")) or name in ("admin.conf", "kubelet.conf"):
        return "yaml"
    if name.endswith(".json"):
        return "json"
    if name.endswith(".env"):
        return "env"
    if name.endswith((".service", ".socket")) or "/systemd/system/" in path:
        return "unit"
    if path.startswith("/etc/sysctl.d/"):
        return "sysctl"
    if path.startswith(("/etc/crio/", "/etc/containers/")):  # CRI-O's drop-ins and registries.conf.d are TOML
        return "toml"
    if name in ("hosts", "chrony.conf", "haproxy.cfg", "keepalived.conf"):
        return "words"
    return "unknown"


def _file_strings(path: str, data: bytes) -> list[str]:
    text = data.decode()
    kind = _format(path)
    if kind == "toml":
        return list(_strings(tomllib.loads(text)))
    if kind == "yaml":
        return list(_strings(list(pyyaml.safe_load_all(text))))
    if kind == "json":
        return list(_strings(json.loads(text)))
    if kind == "env":
        return list(_strings(_env_file(text)))
    if kind == "unit":
        return _unit_words(text)
    if kind == "sysctl":
        return [part.strip() for line in text.splitlines() if "=" in line for part in line.split("=", 1)]
    if kind == "words":
        return [w for line in text.splitlines() if not line.lstrip().startswith("#") for w in shlex.split(line)]
    raise AssertionError(f"{path}: no reader for this file's format in the test; add one")


def _opaque(data: bytes) -> bool:
    """PEM and archives: their base64 or binary data hold any few letters by chance (no spec value goes there)."""
    return data.startswith(b"-----BEGIN ") or b"\x00" in data


def _parsed_uploads(run: CreateRun) -> Iterator[tuple[str, str, list[str]]]:
    """(host, path, strings as the file's reader sees them) of every uploaded config file."""
    for host, path, data in run.uploads():
        if _opaque(data) or (_format(path) == "unknown" and not any(m.encode() in data for m in ACCEPTED)):
            continue
        yield host, path, _file_strings(path, data)


def test_the_readers_read_as_systemd_and_sh_do() -> None:
    assert _env_file("A='it'\"'\"'s $X'\nB=\"a\\$b \\q\"\n# c\nC=plain  \n") == {"A": "it's $X", "B": "a$b \\q", "C": "plain"}
    assert "50%n" in _unit_words('ExecStart=/x "50%%n"')
    assert "50%n" not in _unit_words('ExecStart=/x "50%n"')  # systemd would expand %n to the unit name
    assert _unit_words('ExecStart=/x "a b" c\\ d \'e"f\'') == ["/x", "a b", "c d", 'e"f']


def test_the_word_reader_splits_as_the_shell_does(created: Created) -> None:
    compared = 0
    for _, command in created.run.commands():
        if "$(" in command or "`" in command or "#" in command:
            continue
        lexer = shlex.shlex(command, posix=True, punctuation_chars=";&|()<>")
        lexer.whitespace_split = True
        expected = [t for t in lexer if not (t and set(t) <= set(";&|()<>"))]
        assert [w.text for w in words(command)] == expected, command
        compared += 1
    assert compared > 100


def test_config_files_carry_each_value_escaped_for_their_format(created: Created) -> None:
    problems = []
    found: set[str] = set()
    for host, path, strings in _parsed_uploads(created.run):
        data = dict((p, d) for h, p, d in created.run.uploads() if h == host)[path]
        for marker, (field, _) in ACCEPTED.items():
            if marker.encode() not in data and not any(marker in s for s in strings):
                continue
            if any(_holds(strings, form) for form in forms(marker)):
                found.add(marker)
            else:
                problems.append(f"{host}:{path}: {field} ({marker}) is not intact after parsing as {_format(path)}")
    assert not problems, "\n".join(problems)
    # Values that live in files reached them (the free-text ones above all).
    expected = {"xq01", "xq03", "xq04", "xq06", "xq07", "xq08", "xq09", "xq10", "xq11", "xq12", "xq13", "xq15",
                "xq19", "xq23", "xq24", "xq25", "xq28", "xq36", "xq37"}
    if created.runtime != "crio":
        expected.add("xq02")
    missing = [f"{ACCEPTED[m][0]} ({m})" for m in sorted(expected - found)]
    assert not missing, f"reached no config file: {missing}"


def test_uploaded_paths_hold_values_only_whole(created: Created) -> None:
    for host, path, _ in created.run.uploads():
        for marker, (field, value) in ACCEPTED.items():
            for part in path.split("/"):
                whole = value in part or (value.startswith("/") and path.startswith(value + "/"))
                assert marker not in part or whole, f"{field}: {host}:{path}"


def test_yaml_1_1_words_stay_strings(created: Created) -> None:
    [(_, _, data)] = [(h, p, d) for h, p, d in created.run.uploads() if p.endswith("/xq33-values.yaml")]
    values = pyyaml.safe_load(data.decode())
    assert values["flag"] == "no" and values[v("xq37")] == "on"
    assert values["note"] == v("xq36")


def test_every_accepted_value_reached_a_host(created: Created) -> None:
    sent = "\n".join(c for _, c in created.run.commands()) + "\n".join(
        path + "\n" + "\n".join(strings) for _, path, strings in _parsed_uploads(created.run))
    missing = [f"{field} ({m})" for m, (field, _) in ACCEPTED.items() if m not in sent]
    assert not missing, missing


# --- package pins and architectures ------------------------------------------------------------------

@pytest.mark.parametrize("package", ["curl=7.88.1-10+deb12u8", "libc6:amd64"])
def test_package_versions_and_architectures_install(package: str, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEXM_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "kubeconfig"))
    created = create(tmp_path, "containerd", packages=[package])
    assert created.run.report.ok, [(f.host, f.step, f.message) for f in created.run.report.failures]


# --- refused values, through the CLI ---------------------------------------------------------------

REFUSED = [
    ("spec.etcd.dataDir", ["spec", "etcd", "dataDir"], "var/lib/etcd"),
    ("spec.etcd.dataDir", ["spec", "etcd", "dataDir"], "/var/lib/../etc"),
    ("spec.etcd.dataDir", ["spec", "etcd", "dataDir"], "/var/lib/etcd\nExecStartPre=/bin/sh -c id"),
    ("spec.system.packages[0]", ["spec", "system", "packages"], ["curl;touch /tmp/PWNED-xq-cli"]),
    ("spec.system.packages[0]", ["spec", "system", "packages"], ["-oAPT::Update::Pre-Invoke::=id"]),
    ("spec.system.ntpServers[0]", ["spec", "system", "ntpServers"], ["ntp.example.com iburst\nallow all"]),
    ("spec.controlPlaneEndpoint.interface", ["spec", "controlPlaneEndpoint", "interface"], "eth0@vlan"),
    ("spec.hosts[0].labels.tier", ["spec", "hosts", 0, "labels"], {"tier": "café"}),
    ("spec.kubernetes.kubeletExtraArgs.v", ["spec", "kubernetes", "kubeletExtraArgs"], {"v": "2\n--x=y"}),
    ("spec.registry.auths[0].username", ["spec", "registry", "auths", 0, "username"], "user:name"),
    ("spec.addons[0].name", ["spec", "addons", 0, "name"], "../../etc"),
]


@pytest.mark.parametrize(("field", "where", "value"), REFUSED, ids=[f"{f}={v!r}" for f, _, v in REFUSED])
def test_refused_values_stop_the_cli_with_one_line_naming_the_field(field: str, where: list[Any], value: Any,
                                                                    tmp_path: Path) -> None:
    doc = cluster_document("/nowhere", "/tmp/app.yaml", "containerd")
    node: Any = doc
    for part in where[:-1]:
        node = node[part]
    node[where[-1]] = value
    spec = tmp_path / "hostile.yaml"
    spec.write_text(json.dumps(doc, indent=1))
    kubexm = str(Path(sys.executable).with_name("kubexm"))
    res = subprocess.run([kubexm, "create", "cluster", "-f", str(spec), "--dry-run", "--offline"],
                         capture_output=True, text=True, timeout=120,
                         env={"KUBEXM_HOME": str(tmp_path / "home"), "PATH": "/usr/bin:/bin"})
    assert res.returncode == 2, res.stdout[-1000:] + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert errors, res.stderr
    naming = [line for line in errors if f": {field}:" in line or f": {field} " in line]
    assert naming, f"no error line names {field}: {res.stderr}"
    assert naming[0].startswith(f"error: {spec}:"), naming[0]
    assert not Path("/tmp/PWNED-xq-cli").exists()

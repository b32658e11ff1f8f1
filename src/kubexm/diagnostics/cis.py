"""`kubexm scan cis`: the CIS Kubernetes Benchmark items that can be read from the nodes.

Each node is read with one read-only command (modes and owners of the files the benchmark names, the static
pod manifests, kubelet's configuration and flags, etcd's environment file); every item of
``kubexm.diagnostics.cis_checks`` is then judged here, on the deploy machine. ``--fix`` turns the failed file
items into ``kubexm.steps.cis_fix.FixFileModes`` steps; settings kubexm generates are reported with the
cluster-file change that fixes them, never patched on the node behind kubexm's back.
"""

from __future__ import annotations

import base64
import contextlib
import re
import shlex
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kubexm.diagnostics.cis_checks import (
    BENCHMARK,
    BY_ID,
    ETCD_ENV,
    KUBELET_CONFIG,
    KUBELET_FLAGS_FILES,
    MANIFESTS,
    Component,
    FileCheck,
    Scope,
    SettingCheck,
    Status,
)
from kubexm.engine.context import HostContext
from kubexm.engine.selectors import Selector, deploy_machine
from kubexm.engine.step import Step
from kubexm.engine.task import Task
from kubexm.errors import NotApplicable
from kubexm.hosts.shell import Cmd, shell
from kubexm.spec.models import Cluster

PKI_ROOT = "/etc/kubernetes/pki"
ETCD_UNIT = "/etc/systemd/system/etcd.service"
STATIC_PODS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")
RANK: dict[str, int] = {"PASS": 0, "INFO": 0, "WARN": 1, "FAIL": 2}
EXIT = {"PASS": 0, "WARN": 3, "FAIL": 4}
SHARED_READS = "cis_reads"
SHARED_UNREACHABLE = "cis_unreachable"
SHARED_REPORT = "cis_report"


# -- what a node holds --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FileStat:
    mode: int
    owner: str  # user:group
    kind: str  # find's %y: f file, d directory, l symlink

    def describe(self) -> str:
        return f"mode {self.mode:04o} owner {self.owner}"


@dataclass
class NodeRead:
    stats: dict[str, FileStat] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)


def scopes(cluster: Cluster, node: str) -> set[Scope]:
    """Which groups of items concern ``node``, from its roles and where etcd runs."""
    roles = set(cluster.roles_of(node))
    out: set[Scope] = set()
    etcd = cluster.spec.etcd.type
    if "control-plane" in roles:
        out |= {"control-plane", "kubelet", "pki"}
    if "worker" in roles:
        out.add("kubelet")
    if (etcd == "kubexm" and "etcd" in roles) or (etcd == "kubeadm" and "control-plane" in roles):
        out |= {"etcd", "pki"}
    return out


def etcd_data_dir(cluster: Cluster) -> str:
    from kubexm.steps.etcd_node import data_dir

    return data_dir(cluster)


def etcd_spec_files(cluster: Cluster) -> list[str]:
    """What stands for etcd's pod specification: kubeadm's manifest, or kubexm's unit and environment file."""
    if cluster.spec.etcd.type == "kubeadm":
        return [f"{MANIFESTS}/etcd.yaml"]
    return [ETCD_ENV, ETCD_UNIT]


@dataclass(frozen=True)
class Inputs:
    """What to read on one node: paths to stat, trees to stat recursively, files to read whole."""

    stats: tuple[str, ...]
    trees: tuple[str, ...]
    files: tuple[str, ...]


def node_inputs(cluster: Cluster, node: str) -> Inputs:
    mine = scopes(cluster, node)
    stats: list[str] = []
    for check in BY_ID.values():
        if isinstance(check, FileCheck) and check.scope in mine:
            for p in check.paths:
                if p == "@etcd-data-dir":
                    stats.append(etcd_data_dir(cluster))
                elif p == "@etcd-spec":
                    stats += etcd_spec_files(cluster)
                elif not p.startswith("@"):
                    stats.append(p)
    files: list[str] = []
    if "control-plane" in mine:
        files += [f"{MANIFESTS}/{c}.yaml" for c in STATIC_PODS]
    if "etcd" in mine:
        files.append(f"{MANIFESTS}/etcd.yaml" if cluster.spec.etcd.type == "kubeadm" else ETCD_ENV)
    if "kubelet" in mine:
        files += [KUBELET_CONFIG, *KUBELET_FLAGS_FILES]
    trees = (PKI_ROOT,) if "pki" in mine else ()
    return Inputs(tuple(dict.fromkeys(stats)), trees, tuple(dict.fromkeys(files)))


def read_command(inputs: Inputs) -> Cmd:
    """One read-only command: ``#stat MODE USER:GROUP TYPE PATH`` per existing path (trees recursively), then
    ``#file PATH`` and the file's base64 on one line per readable file. Missing paths print nothing."""
    stats = list(inputs.stats) or ["/nonexistent-kubexm-cis"]
    trees = list(inputs.trees) or ["/nonexistent-kubexm-cis"]
    files = list(inputs.files) or ["/nonexistent-kubexm-cis"]
    return shell("find {stats} -maxdepth 0 -printf '#stat %m %u:%g %y %p\\n' 2>/dev/null; "
                 "find {trees} -printf '#stat %m %u:%g %y %p\\n' 2>/dev/null; "
                 "for f in {files}; do if test -f \"$f\"; then printf '#file %s\\n' \"$f\"; "
                 "base64 -w0 -- \"$f\"; echo; fi; done; true",
                 stats=stats, trees=trees, files=files, readonly=True)


def parse_read(stdout: str) -> NodeRead:
    read = NodeRead()
    lines = stdout.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("#stat "):
            parts = line.split(" ", 4)
            if len(parts) == 5 and re.fullmatch(r"[0-7]{1,4}", parts[1]):
                read.stats[parts[4]] = FileStat(int(parts[1], 8), parts[2], parts[3])
        elif line.startswith("#file ") and i + 1 < len(lines):
            with contextlib.suppress(ValueError):  # undecodable: judged as unreadable
                read.files[line[6:]] = base64.b64decode(lines[i + 1], validate=True).decode(errors="replace")
            i += 1
        i += 1
    return read


# -- settings as written ------------------------------------------------------------------------------------

def _yaml_docs(text: str) -> list[Any]:
    try:
        return [d for d in YAML(typ="safe").load_all(text) if d is not None]
    except YAMLError:
        return []


def flags_of(args: Iterable[str]) -> dict[str, str]:
    """``--name=value`` / ``--name`` words of a command line as {name: value} (the last one wins, as in Go)."""
    out: dict[str, str] = {}
    for word in args:
        if isinstance(word, str) and word.startswith("--"):
            name, sep, value = word[2:].partition("=")
            out[name] = value if sep else "true"
    return out


def manifest_flags(text: str) -> dict[str, str] | None:
    """The flags of a static pod's first container (command and args); None when it does not parse."""
    for doc in _yaml_docs(text):
        try:
            container = doc["spec"]["containers"][0]
        except (KeyError, IndexError, TypeError):
            continue
        return flags_of([*(container.get("command") or []), *(container.get("args") or [])])
    return None


def env_assignments(text: str) -> dict[str, str]:
    """``NAME=value`` lines of an environment file, values unquoted as systemd and sh read them."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        name, _, raw = line.partition("=")
        try:
            out[name.strip()] = " ".join(shlex.split(raw))
        except ValueError:
            out[name.strip()] = raw
    return out


def etcd_env_flags(text: str) -> dict[str, str]:
    """etcd reads ``ETCD_CERT_FILE`` as ``--cert-file``."""
    return {k[5:].lower().replace("_", "-"): v for k, v in env_assignments(text).items() if k.startswith("ETCD_")}


def kubelet_flags(files: dict[str, str]) -> dict[str, str]:
    """kubelet's own flags: kubeadm's KUBELET_KUBEADM_ARGS, then the administrator's KUBELET_EXTRA_ARGS."""
    out: dict[str, str] = {}
    for path in KUBELET_FLAGS_FILES:
        for value in env_assignments(files.get(path, "")).values():
            out.update(flags_of(value.split()))
    return out


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ",".join(_text(v) for v in value)
    if isinstance(value, dict):
        return ",".join(f"{k}={_text(v)}" for k, v in value.items())
    return str(value)


def _config_value(config: Any, dotted: str) -> str | None:
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return None if node is None else _text(node)


@dataclass(frozen=True)
class Source:
    """Where one component's settings were read on one node."""

    where: str
    flags: dict[str, str] | None = None  # flags (static pods, etcd); None: not readable
    config: Any = None  # kubelet: config.yaml as data
    kubelet_flags: dict[str, str] = field(default_factory=dict)


def component_source(cluster: Cluster, component: Component, read: NodeRead) -> Source | None:
    """None: the component's settings are not on this node (file absent)."""
    if component == "kubelet":
        text = read.files.get(KUBELET_CONFIG)
        if text is None:
            return None
        docs = _yaml_docs(text)
        return Source(KUBELET_CONFIG, config=docs[0] if docs and isinstance(docs[0], dict) else None,
                      kubelet_flags=kubelet_flags(read.files))
    if component == "etcd" and cluster.spec.etcd.type == "kubexm":
        env = read.files.get(ETCD_ENV)
        return None if env is None else Source(ETCD_ENV, etcd_env_flags(env))
    path = f"{MANIFESTS}/{component}.yaml"
    text = read.files.get(path)
    return None if text is None else Source(path, manifest_flags(text))


# -- judging ------------------------------------------------------------------------------------------------

@dataclass
class Result:
    node: str
    id: str
    title: str
    status: Status
    found: str
    remediation: str
    # --fix: {path: (the most permissive mode allowed or None, the owner wanted or None)}
    fixes: dict[str, tuple[int | None, str | None]] = field(default_factory=dict)
    kind: str = "file"  # file | setting
    # Paths kubexm itself writes with a mode this item refuses: its default must change, --fix leaves them.
    defaults: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"node": self.node, "id": self.id, "title": self.title, "status": self.status, "found": self.found,
                "remediation": self.remediation, "kind": self.kind, "fixable_paths": sorted(self.fixes),
                "kubexm_defaults": self.defaults}


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h))+")


def _zero_duration(value: str) -> bool:
    v = value.strip()
    if v in ("0", ""):
        return True
    if not _DURATION.fullmatch(v):
        return False
    return all(float(n) == 0 for n, _ in re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", v))


def _passes(check: SettingCheck, value: str | None) -> bool:
    op, want = check.op, check.value
    wanted = (want,) if isinstance(want, str) else want
    if op == "unset":
        return value is None
    if op == "gate":
        gates = [g.split("=", 1) for g in _split(value or "")]
        return not any(len(g) == 2 and g[0].strip() == want and g[1].strip().lower() == "false" for g in gates)
    if op == "nonzero":
        return value is None or not _zero_duration(value)
    if op == "ne":
        return value is None or value.lower() != str(want).lower()
    if value is None or value == "":
        return op == "lacks"
    items = _split(value)
    if op == "eq":
        return value.lower() == str(want).lower()
    if op == "set":
        return True
    if op == "has":
        return all(w in items for w in wanted)
    if op == "lacks":
        return not any(w in items for w in wanted)
    if op == "within":
        return bool(items) and all(i in wanted for i in items)
    raise ValueError(f"unknown op {op}")


def judge_setting(node: str, check: SettingCheck, source: Source | None) -> Result:
    base = Result(node, check.id, check.title, "INFO", "", check.remediation, kind="setting")
    if source is None:
        base.found = f"{_where(check.component)} not found on this node"
        return base
    if source.flags is None and source.config is None:
        base.found = f"{source.where} could not be parsed"
        base.status = "WARN"
        return base
    ok = True
    found = []
    for key in check.keys:
        value, where = _lookup(check, key, source)
        shown = f"--{check.flag}" if where == "flag" else key if check.component == "kubelet" else f"--{key}"
        if value is None:
            default = f" (default {check.default})" if check.default is not None else ""
            found.append(f"{shown} not set{default}")
            effective = check.default
        elif check.component == "kubelet" and where != "flag" and check.op == "nonzero" and _zero_duration(value):
            # kubelet's config defaulting replaces a zero duration with its default: 0s in the file is not "off".
            found.append(f"{shown}: {value} (kubelet reads it as its default {check.default})")
            effective = check.default
        else:
            found.append(f"{shown}={value}" + (f" (a kubelet flag: overrides {key})" if where == "flag" else ""))
            effective = value
        ok = ok and _passes(check, effective)
    base.found = "; ".join(found) + f" in {source.where}"
    base.status = "PASS" if ok else ("WARN" if check.manual else "FAIL")
    return base


def _where(component: Component) -> str:
    if component == "kubelet":
        return KUBELET_CONFIG
    if component == "etcd":
        return "etcd's configuration"
    return f"{MANIFESTS}/{component}.yaml"


def _lookup(check: SettingCheck, key: str, source: Source) -> tuple[str | None, str]:
    if check.component == "kubelet":
        if check.flag and check.flag in source.kubelet_flags:
            return source.kubelet_flags[check.flag], "flag"
        return _config_value(source.config, key), "config"
    return (source.flags or {}).get(key), "flags"


def resolve_paths(check: FileCheck, cluster: Cluster, read: NodeRead) -> list[str]:
    out: list[str] = []
    for p in check.paths:
        if p == "@etcd-data-dir":
            out.append(etcd_data_dir(cluster))
        elif p == "@etcd-spec":
            out += etcd_spec_files(cluster)
        elif p.startswith("@pki"):
            under = [q for q in read.stats if q == PKI_ROOT or q.startswith(PKI_ROOT + "/")]
            if p == "@pki-certs":
                under = [q for q in under if q.endswith(".crt") and read.stats[q].kind == "f"]
            elif p == "@pki-keys":
                under = [q for q in under if q.endswith(".key") and read.stats[q].kind == "f"]
            out += sorted(under)
        else:
            out.append(p)
    return [p for p in dict.fromkeys(out) if p in read.stats]


def judge_file(node: str, check: FileCheck, cluster: Cluster, read: NodeRead,
               generated: dict[str, tuple[int, str]] | None = None) -> Result:
    base = Result(node, check.id, check.title, "INFO", "", check.remediation)
    generated = generated or {}
    paths = resolve_paths(check, cluster, read)
    if not paths:
        base.found = "no such file on this node"
        return base
    bad = []
    for p in paths:
        st = read.stats[p]
        too_open = check.mode is not None and st.mode & ~check.mode & 0o7777
        wrong_owner = check.owner is not None and st.owner != check.owner
        if too_open or wrong_owner:
            bad.append(f"{p}: {st.describe()}")
            written = generated.get(p)
            if too_open and check.mode is not None and written and written[0] & ~check.mode & 0o7777:
                # A chmod here would be undone by kubexm's next run of the step that writes the file.
                base.defaults.append(f"{p} is written with mode {written[0]:04o} by {written[1]}")
            elif check.fixable:
                base.fixes[p] = (check.mode if too_open else None, check.owner if wrong_owner else None)
    if bad:
        base.status = "WARN" if check.manual else "FAIL"
        base.found = "; ".join(bad)
        if base.defaults:
            base.remediation = (f"kubexm's own default: {'; '.join(base.defaults)}; that default must change "
                                f"(then `kubexm create cluster` rewrites the file); until then: {check.remediation}")
    else:
        base.status = "PASS"
        if len(paths) == 1:
            base.found = f"{paths[0]}: {read.stats[paths[0]].describe()}"
        else:
            modes = sorted({f"{read.stats[p].mode:04o}" for p in paths})
            owners = sorted({read.stats[p].owner for p in paths})
            base.found = f"{len(paths)} paths, modes {'/'.join(modes)}, owners {'/'.join(owners)}"
    return base


def judge_node(cluster: Cluster, node: str, read: NodeRead,
               generated: dict[str, tuple[int, str]] | None = None) -> list[Result]:
    mine = scopes(cluster, node)
    out: list[Result] = []
    sources: dict[Component, Source | None] = {}
    for check in BY_ID.values():
        if isinstance(check, FileCheck):
            if check.scope in mine:
                out.append(judge_file(node, check, cluster, read, generated))
            continue
        scope: Scope = "kubelet" if check.component == "kubelet" else \
            "etcd" if check.component == "etcd" else "control-plane"
        if scope not in mine:
            continue
        if check.component not in sources:
            sources[check.component] = component_source(cluster, check.component, read)
        out.append(judge_setting(node, check, sources[check.component]))
    return out


def worst(results: Iterable[Result]) -> Status:
    status: Status = "PASS"
    for r in results:
        if RANK[r.status] > RANK[status]:
            status = r.status
    return status


def report_document(cluster: Cluster, reads: dict[str, NodeRead], unreachable: dict[str, str],
                    generated: dict[str, dict[str, tuple[int, str]]] | None = None,
                    notes: list[str] | None = None) -> dict[str, Any]:
    """`scan cis -o json`: {"benchmark", "cluster", "status": PASS|WARN|FAIL, "summary": {STATUS: count},
    "hosts": {NAME: {"reachable", "error"}}, "results": [{"node", "id", "title", "status", "found",
    "remediation", "kind": file|setting, "fixable_paths", "kubexm_defaults"}], "notes": [what the scan could
    not establish, one line each]}."""
    results: list[Result] = []
    hosts: dict[str, dict[str, Any]] = {}
    for h in cluster.spec.hosts:
        if h.name in unreachable:
            hosts[h.name] = {"reachable": False, "error": unreachable[h.name]}
        elif h.name in reads:
            hosts[h.name] = {"reachable": True, "error": None}
            results += judge_node(cluster, h.name, reads[h.name], (generated or {}).get(h.name))
    summary = {s: sum(1 for r in results if r.status == s) for s in ("PASS", "FAIL", "WARN", "INFO")}
    return {"benchmark": BENCHMARK, "cluster": cluster.name, "status": worst(results), "summary": summary,
            "hosts": hosts, "results": [r.as_json() for r in results], "notes": list(notes or []),
            "_results": results}


def public(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if not k.startswith("_")}


def exit_code(doc: dict[str, Any]) -> int:
    return EXIT[str(doc["status"])]


def junit(doc: dict[str, Any]) -> str:
    """JUnit XML as Jenkins and GitLab read it: a testsuite per node, a testcase per item; FAIL is a
    <failure>, WARN and INFO are <skipped> with the reason, an unreachable node is one <error>."""
    suites = ET.Element("testsuites", name=f"kubexm scan cis ({doc['benchmark']})")
    totals = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    by_node: dict[str, list[dict[str, Any]]] = {}
    for r in doc["results"]:
        by_node.setdefault(r["node"], []).append(r)
    for node, state in doc["hosts"].items():
        suite = ET.SubElement(suites, "testsuite", name=node)
        counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        if not state["reachable"]:
            case = ET.SubElement(suite, "testcase", classname=f"cis.{node}", name="read the node")
            ET.SubElement(case, "error", message=str(state["error"]), type="unreachable")
            counts["tests"] += 1
            counts["errors"] += 1
        for r in by_node.get(node, []):
            case = ET.SubElement(suite, "testcase", classname=f"cis.{node}", name=f"{r['id']} {r['title']}")
            counts["tests"] += 1
            if r["status"] == "FAIL":
                fail = ET.SubElement(case, "failure", message=r["found"], type="FAIL")
                fail.text = f"found: {r['found']}\nremediation: {r['remediation']}"
                counts["failures"] += 1
            elif r["status"] in ("WARN", "INFO"):
                ET.SubElement(case, "skipped", message=f"{r['status']}: {r['found']}")
                counts["skipped"] += 1
            out = ET.SubElement(case, "system-out")
            out.text = f"{r['status']}: {r['found']}"
        for k, v in counts.items():
            suite.set(k, str(v))
            totals[k] += v
    for k, v in totals.items():
        suites.set(k, str(v))
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def table_rows(doc: dict[str, Any]) -> list[list[str]]:
    """Judged items one per row; the items a node has nothing for (INFO) folded into one row per node."""
    rows = [[r["node"], r["id"], r["status"], r["title"], r["found"], "" if r["status"] == "PASS" else r["remediation"]]
            for r in doc["results"] if r["status"] != "INFO"]
    info: dict[str, list[str]] = {}
    for r in doc["results"]:
        if r["status"] == "INFO":
            info.setdefault(r["node"], []).append(r["id"])
    rows += [[node, "-", "INFO", f"{len(ids)} item(s) not judged: their files are not on this node", ", ".join(ids),
              "`-o json` lists them"] for node, ids in info.items()]
    rows += [[name, "-", "ERROR", "read the node", str(s["error"]), "check the connection"]
             for name, s in doc["hosts"].items() if not s["reachable"]]
    return rows


# -- --fix --------------------------------------------------------------------------------------------------

Wants = tuple[tuple[str, int | None, str | None], ...]


def fix_plan(doc: dict[str, Any]) -> dict[str, Wants]:
    """{node: ((path, most permissive mode allowed, owner), ...)} for every failed or warned file item kubexm
    may fix; items on the same path are merged (the strictest mode wins)."""
    merged: dict[str, dict[str, tuple[int | None, str | None]]] = {}
    for r in doc["_results"]:
        if r.status not in ("FAIL", "WARN"):
            continue
        for path, (mode, owner) in r.fixes.items():
            have_mode, have_owner = merged.setdefault(r.node, {}).get(path, (None, None))
            if mode is not None:
                have_mode = mode if have_mode is None else have_mode & mode
            merged[r.node][path] = (have_mode, owner or have_owner)
    return {node: tuple((p, m, o) for p, (m, o) in sorted(paths.items())) for node, paths in sorted(merged.items())}


def kubexm_defaults(doc: dict[str, Any]) -> list[Result]:
    """Failed file items whose paths kubexm itself writes too open (see ``generated_modes``)."""
    return [r for r in doc["_results"] if r.defaults and r.status in ("FAIL", "WARN")]


def unfixed_settings(doc: dict[str, Any]) -> list[Result]:
    """Failed setting items: kubexm generates them from the cluster file, so they are fixed there."""
    return [r for r in doc["_results"] if r.kind == "setting" and r.status in ("FAIL", "WARN")]


# -- steps --------------------------------------------------------------------------------------------------

def scanned_hosts() -> Selector:
    return Selector("cis-scanned", lambda c: [h.name for h in c.spec.hosts if scopes(c, h.name)])


@dataclass(frozen=True)
class CollectCis(Step):
    """Read what the benchmark items judge on this node, with one read-only command."""

    mutates = False

    def describe(self) -> str:
        return "read file modes, owners, static pod manifests, kubelet and etcd configuration"

    async def run(self, host: HostContext) -> None:
        from kubexm.steps.certs import reach

        if not scopes(host.cluster, host.name):
            raise NotApplicable("no role of this node is covered by the benchmark")
        command = read_command(node_inputs(host.cluster, host.name))

        async def read() -> NodeRead:
            res = await host.run(command, check=False, timeout=host.timeout_for("check"),
                                 display="read the CIS benchmark inputs")
            return parse_read(res.stdout)

        host.run_ctx.shared.setdefault(SHARED_READS, {})[host.name] = await reach(host, read, SHARED_UNREACHABLE)


def generated_modes(host: HostContext) -> tuple[dict[str, tuple[int, str]], list[str]]:
    """{path: (mode, the kubexm module that writes it)} for the files kubexm's own steps place on this node:
    a failing mode there is kubexm's default, fixed in kubexm, not by a chmod its next run would undo. Also the
    groups whose files could not be listed (a spec their steps refuse), each with why: the scan still judges
    what it read there, without knowing which of those files kubexm writes, and the report says so."""
    from kubexm.errors import KubexmError
    from kubexm.steps.common import Template
    from kubexm.steps.etcd import install_steps, member_files
    from kubexm.steps.kubernetes import KubeletUnit, control_plane_files

    cluster, roles = host.cluster, set(host.cluster.roles_of(host.name))

    def etcd() -> dict[str, int]:
        files = {step.dest: step.mode for step in install_steps(host) if isinstance(step, Template)}
        return {**files, **{remote: mode for _, remote, mode in member_files(host.name)}}

    groups: list[tuple[str, str, Callable[[], dict[str, int]]]] = []
    if cluster.spec.etcd.type == "kubexm" and "etcd" in roles:
        groups.append(("etcd", "kubexm.steps.etcd", etcd))
    if "control-plane" in roles:
        groups.append(("control plane", "kubexm.steps.kubernetes",
                       lambda: {remote: mode for _, remote, mode in control_plane_files(cluster)}))
    if roles & {"control-plane", "worker"}:
        groups.append(("kubelet", "kubexm.steps.kubernetes",
                       lambda: {p: mode for p, (_, mode) in KubeletUnit().files(cluster).items()}))
    out: dict[str, tuple[int, str]] = {}
    problems: list[str] = []
    for what, module, files in groups:
        try:
            out.update({path: (mode, module) for path, mode in files().items()})
        except KubexmError as exc:
            problems.append(f"{host.name}: the {what} files kubexm writes could not be listed ({exc.message}); "
                            "their modes are judged without knowing which are kubexm's defaults")
    return out, problems


@dataclass(frozen=True)
class CisReport(Step):
    """Judge every item on every node read; one table (the JSON and JUnit forms come from the same data)."""

    mutates = False

    def describe(self) -> str:
        return f"judge the {BENCHMARK} items"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        reads: dict[str, NodeRead] = run.shared.get(SHARED_READS, {})
        generated: dict[str, dict[str, tuple[int, str]]] = {}
        notes: list[str] = []
        for name in reads:
            generated[name], problems = generated_modes(run.host(name))
            notes += problems
        doc = report_document(run.cluster, reads, run.shared.get(SHARED_UNREACHABLE, {}), generated, notes)
        run.shared[SHARED_REPORT] = doc
        summary = ", ".join(f"{n} {s}" for s, n in doc["summary"].items())
        run.emit_report(f"{BENCHMARK}: {summary}", ["node", "id", "status", "check", "found", "remediation"],
                        table_rows(doc))



def scan_task() -> Task:
    """Every covered node read at once; the judging runs once on the deploy machine."""
    return Task("ScanCis", steps=[CollectCis()], hosts=scanned_hosts(), tags=frozenset({"cis"}),
                then=[CisReport()], then_on=deploy_machine(), on_failure="continue",
                description="read every node once, judge the CIS benchmark items")


def fix_task(plan: dict[str, Wants]) -> Task:
    """``fix_plan``'s paths, each node its own."""
    from kubexm.steps.cis_fix import FixFileModes

    return Task("FixCisFileModes", steps=lambda host: [FixFileModes(plan[host.name])],
                hosts=Selector("cis-fix", lambda c: [h.name for h in c.spec.hosts if h.name in plan]),
                tags=frozenset({"cis"}), description="tighten the modes and owners the CIS scan flagged")

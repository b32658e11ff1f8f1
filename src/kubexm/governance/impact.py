"""The impact of a change, node by node: files with their diffs, units restarting, drains, etcd membership, risks.

Built by ``kubexm.governance.plan`` from a connected dry run; rendered as a table, JSON or markdown. Every text
taken from a node or rendered from the spec passes ``Masker`` before it is kept: secrets of the cluster file,
private keys and tokens never reach a diff.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from kubexm.spec.models import Cluster
from kubexm.state.redact import REDACTED, is_secret_key, spec_secret_values

Severity = Literal["error", "warn", "info"]

# A private key in PEM (any algorithm, encrypted or not): the whole block is hidden.
_PEM_KEY = re.compile(r"-----BEGIN ([A-Z0-9 ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.S)
# kubeadm bootstrap tokens (``abcdef.0123456789abcdef``) wherever they appear.
_BOOTSTRAP_TOKEN = re.compile(r"\b[a-z0-9]{6}\.[a-z0-9]{16}\b")
# ``key = value``, ``key: value`` and ``"key": "value"`` lines of TOML, YAML, JSON and env files; the value is a
# scalar (a table or list opening on the line is left alone, its own lines are judged one by one).
_SETTING = re.compile(r"""^(?P<head>\s*-?\s*["']?(?P<key>[A-Za-z0-9_.\-]+)["']?\s*[:=]\s*)"""
                      r"""(?P<value>[^\s{\[].*?)(?P<tail>,?)\s*$""")
# Paths whose content is never shown, whatever it holds.
_KEY_PATH = re.compile(r"(\.key|-key\.pem|\.pem\.key|/id_[a-z0-9]+|token[^/]*|\.kubeconfig|\.conf\.key)$")


def secret_values(cluster: Cluster) -> list[str]:
    """Every secret of the cluster file and the forms files carry them in, longest first (masked whole)."""
    return spec_secret_values(cluster)


@dataclass
class Masker:
    """Hides secrets in text before it is shown or kept."""

    secrets: list[str] = field(default_factory=list)

    @classmethod
    def for_clusters(cls, *clusters: Cluster | None) -> Masker:
        values = {v for c in clusters if c is not None for v in secret_values(c)}
        return cls(sorted(values, key=len, reverse=True))

    def text(self, text: str) -> str:
        text = _PEM_KEY.sub(lambda m: f"-----BEGIN {m.group(1)}-----\n{REDACTED}\n-----END {m.group(1)}-----", text)
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        text = _BOOTSTRAP_TOKEN.sub(REDACTED, text)
        return "\n".join(self._line(line) for line in text.split("\n"))

    @staticmethod
    def _line(line: str) -> str:
        m = _SETTING.match(line)
        if not m or not is_secret_key(m.group("key")) or m.group("value") == REDACTED:
            return line
        value = m.group("value")
        quote = value[0] if value[:1] in "\"'" and value[-1:] == value[0] and len(value) > 1 else ""
        return f"{m.group('head')}{quote}{REDACTED}{quote}{m.group('tail')}"

    @staticmethod
    def hidden_path(path: str) -> bool:
        """A file whose content is never shown (private keys, token files)."""
        return bool(_KEY_PATH.search(path))


@dataclass
class FileChange:
    """One file a step would write: a new file, new content, or only a new mode/owner."""

    path: str
    step: str
    change: Literal["create", "modify", "attributes"]
    old_attrs: str | None  # "<mode> <user>:<group>" on the node now (None: missing)
    new_attrs: str
    diff: str = ""  # unified diff, secrets masked; empty for attribute-only changes and hidden content
    note: str = ""  # why there is no diff (binary, too large, private key, only a secret changed)


@dataclass
class UnitAction:
    unit: str
    action: str  # restart, reload-or-restart, start
    reason: str


@dataclass
class NodeImpact:
    name: str
    roles: list[str]
    files: list[FileChange] = field(default_factory=list)
    units: list[UnitAction] = field(default_factory=list)
    drained: bool = False
    etcd: list[str] = field(default_factory=list)  # membership changes: "add", "remove"
    other: list[str] = field(default_factory=list)  # would-change steps with no file of their own, by description
    problems: list[str] = field(default_factory=list)  # checks that could not answer, failures of the dry run

    @property
    def empty(self) -> bool:
        return not (self.files or self.units or self.drained or self.etcd or self.other or self.problems)


@dataclass
class Risk:
    severity: Severity
    rule: str
    message: str
    nodes: list[str] = field(default_factory=list)


@dataclass
class Impact:
    cluster: str
    operation: str
    nodes: dict[str, NodeImpact] = field(default_factory=dict)
    risks: list[Risk] = field(default_factory=list)
    connected: bool = True
    failed: int = 0  # steps that failed during the dry run: the plan stops short of them

    def node(self, name: str, roles: list[str]) -> NodeImpact:
        if name not in self.nodes:
            self.nodes[name] = NodeImpact(name, roles)
        return self.nodes[name]

    @property
    def changed(self) -> list[NodeImpact]:
        return [n for n in self.nodes.values() if not n.empty]

    def to_dict(self) -> dict[str, Any]:
        return {"cluster": self.cluster, "operation": self.operation, "connected": self.connected, "failed": self.failed,
                "nodes": [asdict(n) for n in self.changed], "risks": [asdict(r) for r in self.risks]}


def unified_diff(path: str, old: str | None, new: str, label: str = "planned") -> str:
    """The node's copy (``old``, None when absent) against ``new``, as ``diff -u`` prints it; ``label`` names
    where ``new`` comes from (``planned`` in a plan, ``spec`` in `config diff`)."""
    lines = difflib.unified_diff((old or "").splitlines(keepends=True), new.splitlines(keepends=True),
                                 fromfile=f"{path} (node)" if old is not None else "/dev/null",
                                 tofile=f"{path} ({label})")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)


def text_change(masker: Masker, path: str, old: str | None, new: str | None, *, exists: bool,
                label: str = "planned") -> tuple[str, str]:
    """(diff, note) for a file going from ``old`` (the node's text; None when absent or unreadable as text) to
    ``new`` (None: binary or too large), both masked first: a diff, or a note saying why none is shown. The one
    way `kubexm plan` and `kubexm config diff` show a file's change."""
    if masker.hidden_path(path):
        return "", "content not shown (a private key or token)"
    if new is None or (exists and old is None):
        return "", "binary or too large for a diff: content differs"
    old_masked = None if old is None else masker.text(old)
    new_masked = masker.text(new)
    if old_masked == new_masked:
        return "", "only a secret value changes (not shown)"
    return unified_diff(path, old_masked, new_masked, label), ""


def assess(cluster: Cluster, impact: Impact, rolling: dict[str, bool]) -> list[Risk]:
    """Risks of the change as a whole. ``rolling``: per unit, whether the tasks restarting it go one node at a
    time (a restart of every member at once costs etcd its quorum whatever the member count)."""
    risks: list[Risk] = []
    cps = [h.name for h in cluster.hosts_with_role("control-plane")]
    etcd = [h.name for h in cluster.hosts_with_role("etcd")] if cluster.spec.etcd.type == "kubexm" else []
    workers = [h.name for h in cluster.hosts_with_role("worker")]
    restarting: dict[str, list[str]] = {}
    for node in impact.nodes.values():
        for unit in node.units:
            restarting.setdefault(unit.unit.removesuffix(".service"), []).append(node.name)
    # What takes the API server down on a control plane when it restarts.
    control_plane_units = ("kubelet", "containerd", "docker", "cri-docker", "crio", "kube-apiserver")
    hit = sorted({n for u in control_plane_units for n in restarting.get(u, []) if n in cps})
    if hit and len(cps) == 1:
        risks.append(Risk("warn", "single-control-plane-restart",
                          f"the only control plane {hit[0]} restarts "
                          f"{', '.join(sorted(u for u in control_plane_units if hit[0] in restarting.get(u, [])))}: "
                          "the API server is unavailable meanwhile", hit))
    elif hit and set(hit) == set(cps) and not all(rolling.get(u, False) for u in control_plane_units
                                                  if restarting.get(u)):
        risks.append(Risk("warn", "all-control-planes-restart",
                          "every control plane restarts in the same task: the API server is unavailable meanwhile",
                          hit))
    members = sorted(set(restarting.get("etcd", [])) & set(etcd))
    if members:
        quorum = len(etcd) // 2 + 1
        if len(etcd) == 1:
            risks.append(Risk("warn", "single-etcd-restart",
                              f"etcd has one member ({members[0]}) and it restarts: the cluster's store is "
                              "unavailable meanwhile", members))
        elif not rolling.get("etcd", False) and len(etcd) - len(members) < quorum:
            risks.append(Risk("error", "etcd-quorum-loss",
                              f"etcd restarts on {len(members)} of {len(etcd)} members at once, leaving fewer than "
                              f"the {quorum} a quorum needs: writes stop until they are back", members))
    removed = [n.name for n in impact.nodes.values() if "remove" in n.etcd]
    added = [n.name for n in impact.nodes.values() if "add" in n.etcd]
    if removed or added:
        after = len(set(etcd) - set(removed) | set(added))
        if after and after % 2 == 0:
            risks.append(Risk("warn", "etcd-even-members",
                              f"etcd will have {after} members: an even count tolerates no more failures than "
                              f"{after - 1}", removed + added))
        if removed and after < 3 and len(etcd) >= 3:
            risks.append(Risk("warn", "etcd-below-three",
                              f"etcd goes down to {after} member(s): it no longer survives a node failure", removed))
    drained = sorted(n.name for n in impact.nodes.values() if n.drained)
    if drained:
        schedulable = set(workers) or set(cps)
        # Drained one at a time (an upgrade), a node's pods go to the others; drained together (or removed),
        # they need a node outside the whole set.
        alone = [d for d in drained if not schedulable - {d}]
        if alone or (not schedulable - set(drained) and not rolling.get("drain", False)):
            risks.append(Risk("warn", "no-worker-left",
                              f"{', '.join(drained)} drained with no other worker: their pods have nowhere to go "
                              "until the node is back", drained))
    return risks

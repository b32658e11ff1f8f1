"""Policy: rules in CEL (cel-python) evaluated against the spec, the local PKI and a plan's impact.

Rule files are YAML: ``rules: [{id, severity, description, deny + message | violations, enabled}]``. The built-in
pack is ``governance/policies/*.yaml``; files of ``--policy-dir`` add rules, and replace a built-in rule of the
same id. ``deny`` is a CEL boolean (true: broken, ``message`` says how); ``violations`` a CEL list of strings, one
violation each. Both read ``input`` (``policy_input``).
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from kubexm.errors import KubexmError, UsageError
from kubexm.spec.dump import plain_data
from kubexm.spec.models import SUPPORTED_K8S_MINORS, Cluster

Severity = Literal["error", "warn", "info"]
SEVERITY_RANK = {"info": 0, "warn": 1, "error": 2}
# Exit code of `kubexm plan` when a violation is at or above --policy-fail-on (1-4 are taken: failures, usage,
# connection and lock errors; certs check uses 3 and 4 for expiry).
POLICY_EXIT = 5
# The label that marks a test cluster: rules meant for production (etcd member count, schedulable control
# planes) do not apply to it.
TEST_LABEL = "kubexm.io/environment"
TEST_ENVIRONMENTS = ("test", "dev", "lab")
DEFAULT_MIN_CERT_DAYS = 30


class PolicyError(KubexmError):
    """A rule file that cannot be read, parsed or compiled."""

    exit_code = 2


class PolicyViolation(KubexmError):
    """Violations at or above the --policy-fail-on threshold (the plan was printed before)."""

    exit_code = POLICY_EXIT


class RuleSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    severity: Severity = "error"
    description: str = ""
    enabled: bool = True
    deny: str | None = None
    message: str | None = None
    violations: str | None = None

    @model_validator(mode="after")
    def _one_form(self) -> RuleSpec:
        if (self.deny is None) == (self.violations is None):
            raise ValueError("give exactly one of `deny` (with `message`) or `violations`")
        if self.deny is not None and not self.message:
            raise ValueError("`deny` needs a `message`")
        return self


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[RuleSpec]


@dataclass
class Rule:
    spec: RuleSpec
    source: str
    program: Any  # celpy Runner

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass
class Violation:
    rule: str
    severity: Severity
    message: str
    source: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _compile(spec: RuleSpec, source: str) -> Rule:
    import celpy
    from celpy.celparser import CELParseError

    env = celpy.Environment()
    text = spec.deny if spec.deny is not None else spec.violations
    assert text is not None
    try:
        return Rule(spec, source, env.program(env.compile(text)))
    except CELParseError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "syntax error"
        raise PolicyError(f"{source}: rule {spec.id}: not valid CEL: {first}",
                          hint="see https://github.com/google/cel-spec for the language") from None


def _read(text: str, source: str) -> list[Rule]:
    try:
        data = YAML(typ="safe").load(text)
        rules = RuleFile.model_validate(data)
    except YAMLError as exc:
        raise PolicyError(f"{source}: not YAML: {str(exc).splitlines()[0]}", hint="fix the rule file") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise PolicyError(f"{source}: {where}: {err['msg']}",
                          hint="a rule file is `rules:` with id, severity, and deny+message or violations") from None
    return [_compile(spec, source) for spec in rules.rules]


def load_rules(policy_dirs: list[Path] | None = None) -> list[Rule]:
    """The built-in pack, then each directory's ``*.yaml``/``*.yml`` in name order; a later rule with the same
    id replaces an earlier one; disabled rules are dropped."""
    rules: dict[str, Rule] = {}
    pack = resources.files("kubexm.governance") / "policies"
    for entry in sorted(pack.iterdir(), key=lambda e: e.name):
        if entry.name.endswith((".yaml", ".yml")):
            for rule in _read(entry.read_text(), f"built-in {entry.name}"):
                rules[rule.id] = rule
    for directory in policy_dirs or []:
        if not directory.is_dir():
            raise UsageError(f"--policy-dir {directory}: not a directory", hint="name a directory of *.yaml rule files")
        files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
        if not files:
            raise UsageError(f"--policy-dir {directory} holds no *.yaml rule file", hint="add rule files or drop the flag")
        for path in files:
            try:
                text = path.read_text()
            except (OSError, UnicodeDecodeError) as exc:
                raise PolicyError(f"{path}: cannot read it: {exc}", hint="check the file") from None
            for rule in _read(text, str(path)):
                rules[rule.id] = rule
    return [r for r in rules.values() if r.spec.enabled]


def _minor(version: str | None) -> int:
    try:
        return int((version or "").lstrip("v").split(".")[1])
    except (IndexError, ValueError):
        return -1


def local_certificates(cluster: str) -> list[dict[str, Any]]:
    """Expiry of every certificate of the cluster's PKI on this machine (none yet: empty). Only reads."""
    from kubexm.pki.certs import inspect, load_cert

    home = Path(os.environ.get("KUBEXM_HOME") or Path.home() / ".kubexm").expanduser()
    root = home / "clusters" / cluster / "pki"
    out = []
    if root.is_dir():
        for crt in sorted(root.rglob("*.crt")):
            try:
                info = inspect(load_cert(crt.read_bytes(), str(crt)), str(crt.relative_to(root))[:-4])
            except (OSError, KubexmError, ValueError):
                continue  # an unreadable file is `certs check`'s to report
            out.append({"name": info.path, "daysLeft": info.days_left, "notAfter": info.not_after.isoformat(),
                        "isCa": info.is_ca})
    return out


def policy_input(cluster: Cluster, *, impact: dict[str, Any] | None = None, applied_version: str | None = None,
                 certificates: list[dict[str, Any]] | None = None,
                 min_cert_days: int = DEFAULT_MIN_CERT_DAYS) -> dict[str, Any]:
    """What rules read as ``input``: the spec (by its YAML names, defaults filled in, secrets redacted) and
    facts derived from it, the local PKI's expiry, the version the cluster runs (as stored) and the plan."""
    spec = plain_data(cluster.model_dump(by_alias=True, mode="python")["spec"])
    version = cluster.spec.kubernetes.version
    labels = dict(cluster.metadata.labels)
    return {
        "cluster": {"name": cluster.name, "labels": labels, "test": labels.get(TEST_LABEL) in TEST_ENVIRONMENTS},
        "spec": _json_safe(spec),
        "roles": {"etcd": [h.name for h in cluster.hosts_with_role("etcd")],
                  "controlPlane": [h.name for h in cluster.hosts_with_role("control-plane")],
                  "worker": [h.name for h in cluster.hosts_with_role("worker")]},
        "etcd": {"type": cluster.spec.etcd.type, "version": cluster.spec.etcd.version,
                 "members": [h.name for h in cluster.hosts_with_role("etcd")] if cluster.spec.etcd.type != "external"
                 else [str(e) for e in cluster.spec.etcd.endpoints]},
        "kubernetes": {"version": version, "minor": _minor(version), "supportedMinors": list(SUPPORTED_K8S_MINORS),
                       "appliedVersion": applied_version or "", "appliedMinor": _minor(applied_version)},
        "mirrorEndpoints": [str(e) for m in cluster.spec.container_runtime.registry_mirrors for e in m.endpoints],
        "certificates": certificates if certificates is not None else local_certificates(cluster.name),
        "settings": {"minCertDays": min_cert_days, "now": dt.datetime.now(dt.UTC).isoformat()},
        "plan": impact or {"nodes": [], "risks": []},
    }


def _json_safe(value: Any) -> Any:
    """Plain JSON types for CEL: None becomes "" (CEL's null compares with nothing), other scalars stay."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    if value is None:
        return ""
    if isinstance(value, bool | int | float | str):
        return value
    return str(value)


def evaluate(rules: list[Rule], data: dict[str, Any]) -> list[Violation]:
    """Every violation, worst first. A rule that fails to evaluate is itself an error violation: a broken rule
    must not pass silently."""
    import celpy

    activation = {"input": celpy.json_to_cel(data)}
    found: list[Violation] = []
    for rule in rules:
        try:
            result = rule.program.evaluate(activation)
            if isinstance(result, Exception):
                raise result
        except Exception as exc:  # CELEvalError and the errors CEL functions raise
            found.append(Violation(rule.id, "error", f"rule could not be evaluated: {_eval_error(exc)}", rule.source))
            continue
        if rule.spec.deny is not None:
            if not isinstance(result, celpy.celtypes.BoolType | bool):
                found.append(Violation(rule.id, "error", f"`deny` gave {type(result).__name__}, not a boolean",
                                       rule.source))
            elif bool(result):
                found.append(Violation(rule.id, rule.spec.severity, rule.spec.message or rule.id, rule.source))
        elif isinstance(result, list):  # ListType, or a plain list from `+`
            found += [Violation(rule.id, rule.spec.severity, str(m), rule.source) for m in result]
        else:
            found.append(Violation(rule.id, "error", f"`violations` gave {type(result).__name__}, not a list",
                                   rule.source))
    return sorted(found, key=lambda v: -SEVERITY_RANK[v.severity])


def _eval_error(exc: Exception) -> str:
    args = getattr(exc, "args", ())
    return str(args[0]) if args else type(exc).__name__


def fails(violations: list[Violation], threshold: str) -> bool:
    """Any violation at or above ``threshold`` (error or warn)."""
    return any(SEVERITY_RANK[v.severity] >= SEVERITY_RANK[threshold] for v in violations)

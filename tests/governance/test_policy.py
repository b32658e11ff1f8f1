"""The built-in CEL policy pack: each rule fires on the spec it is about and stays quiet on a compliant one;
user rules add to and replace built-in ones; broken rules are errors, never silent passes."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest

from kubexm.errors import UsageError
from kubexm.governance.policy import (
    POLICY_EXIT,
    PolicyError,
    Violation,
    evaluate,
    fails,
    load_rules,
    local_certificates,
    policy_input,
)
from kubexm.pki.store import PKI
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster

# Compliant with every built-in rule: 3 etcd members, dedicated control planes, audit log, CIS flags.
GOOD = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: pol}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: cp2, address: 10.0.0.2}
    - {name: cp3, address: 10.0.0.3}
    - {name: w1, address: 10.0.0.4}
  roleGroups: {etcd: [cp1, cp2, cp3], control-plane: [cp1, cp2, cp3], worker: [w1]}
  controlPlaneEndpoint: {address: 10.0.0.100, loadBalancer: kube-vip}
  kubernetes:
    version: v1.33.7
    apiServerExtraArgs:
      audit-log-path: /var/log/kubernetes/audit.log
      audit-policy-file: /etc/kubernetes/audit-policy.yaml
      anonymous-auth: "false"
      profiling: "false"
    controllerManagerExtraArgs: {profiling: "false"}
    schedulerExtraArgs: {profiling: "false"}
  containerRuntime:
    registryMirrors: [{registry: docker.io, endpoints: ["https://mirror.example.com"]}]
"""
CERTS_OK = [{"name": "ca", "daysLeft": 3000, "notAfter": "2035-01-01T00:00:00+00:00", "isCa": True}]


def cluster() -> Cluster:
    return parse_cluster(GOOD)


def fired(c: Cluster, **kwargs: Any) -> dict[str, list[Violation]]:
    kwargs.setdefault("certificates", CERTS_OK)
    out: dict[str, list[Violation]] = {}
    for v in evaluate(load_rules(), policy_input(c, **kwargs)):
        out.setdefault(v.rule, []).append(v)
    return out


def test_a_compliant_spec_breaks_no_rule() -> None:
    assert fired(cluster()) == {}


def test_etcd_needs_three_members_outside_test_clusters() -> None:
    small = GOOD.replace("etcd: [cp1, cp2, cp3]", "etcd: [cp1]")
    assert [v.severity for v in fired(parse_cluster(small))["etcd-odd-members"]] == ["error"]
    labelled = small.replace("metadata: {name: pol}", "metadata: {name: pol, labels: {kubexm.io/environment: test}}")
    assert "etcd-odd-members" not in fired(parse_cluster(labelled))
    external = small.replace("  kubernetes:\n", "  etcd: {type: external, endpoints: [https://10.0.0.9:2379]}\n"
                             "  kubernetes:\n", 1).replace("etcd: [cp1], ", "")
    assert "etcd-odd-members" not in fired(parse_cluster(external))


def test_insecure_registries_and_plain_http_mirrors_are_errors() -> None:
    text = GOOD.replace('endpoints: ["https://mirror.example.com"]}]',
                        'endpoints: ["http://mirror.example.com"]}]\n    insecureRegistries: ["reg.example.com:5000"]')
    messages = sorted(v.message for v in fired(parse_cluster(text))["no-insecure-registries"])
    assert messages == ["mirror endpoint http://mirror.example.com is plain HTTP",
                        "registry reg.example.com:5000 is listed as insecure (no TLS verification)"]
    auths = GOOD + ('  registry:\n    auths: [{registry: "r.example.com", username: u, password: "p4ssw0rd!", '
                    'insecure: true}]\n')
    (v,) = fired(parse_cluster(auths))["no-insecure-registries"]
    assert "r.example.com" in v.message and "p4ssw0rd" not in v.message


def test_kubernetes_version_must_be_a_supported_minor() -> None:
    c = cluster()
    c.spec.kubernetes.version = "v1.40.1"  # past the loader, as an upgrade target would be
    assert "kubernetes-version-supported" in fired(c)
    assert "kubernetes-version-supported" not in fired(cluster())


@pytest.mark.parametrize(("applied", "breaks"), [
    ("v1.32.4", False), ("v1.33.1", False), (None, False), ("v1.31.9", True), ("v1.34.0", True)])
def test_version_skew_against_the_running_version(applied: str | None, breaks: bool) -> None:
    got = fired(cluster(), applied_version=applied)
    assert ("kubernetes-version-skew" in got) is breaks
    if breaks:
        assert applied in got["kubernetes-version-skew"][0].message


def test_certificates_expiring_within_the_minimum_are_errors(kubexm_home: Path) -> None:
    certs = [{"name": "apiserver", "daysLeft": 12, "notAfter": "x", "isCa": False}, *CERTS_OK]
    (v,) = fired(cluster(), certificates=certs)["certificates-valid"]
    assert v.message == "certificate apiserver expires in 12 days (policy: at least 30)"
    assert "certificates-valid" not in fired(cluster(), certificates=certs, min_cert_days=10)


def test_local_pki_expiry_is_read_from_the_deploy_machine(kubexm_home: Path) -> None:
    from kubexm.pki.certs import CertSpec

    pki = PKI.for_cluster("pol", leaf_days=5)
    pki.ensure_ca(CertSpec("ca", "kubernetes", ""))
    pki.issue(CertSpec("apiserver", "kube-apiserver", "ca", dns_names=("kubernetes",), usages=("server",)))
    certs = {c["name"]: c for c in local_certificates("pol")}
    assert certs["apiserver"]["daysLeft"] in (4, 5) and certs["ca"]["daysLeft"] > 3000
    got = fired(cluster(), certificates=None)
    assert [v.message for v in got["certificates-valid"]] == [
        f"certificate apiserver expires in {certs['apiserver']['daysLeft']} days (policy: at least 30)"]
    assert local_certificates("no-such-cluster") == []


def test_control_planes_that_are_also_workers_are_flagged_outside_test_clusters() -> None:
    text = GOOD.replace("worker: [w1]", "worker: [w1, cp2]")
    (v,) = fired(parse_cluster(text))["control-planes-not-schedulable"]
    assert v.severity == "warn" and "cp2" in v.message
    test = text.replace("metadata: {name: pol}", "metadata: {name: pol, labels: {kubexm.io/environment: lab}}")
    assert "control-planes-not-schedulable" not in fired(parse_cluster(test))


def test_audit_logging_must_be_on() -> None:
    text = GOOD.replace("      audit-log-path: /var/log/kubernetes/audit.log\n", "")
    assert [v.severity for v in fired(parse_cluster(text))["apiserver-audit-log"]] == ["warn"]


def test_cis_anonymous_auth_and_profiling() -> None:
    text = GOOD.replace('      anonymous-auth: "false"\n', "").replace('schedulerExtraArgs: {profiling: "false"}',
                                                                        'schedulerExtraArgs: {profiling: "true"}')
    got = fired(parse_cluster(text))
    assert "apiserver-anonymous-auth" in got
    assert [v.message for v in got["profiling-off"]] == [
        'kube-scheduler has profiling on (set profiling to "false" in its extra args)']


def test_risks_of_the_plan_are_violations_of_their_severity() -> None:
    plan = {"nodes": [], "risks": [{"severity": "error", "rule": "etcd-quorum-loss", "message": "quorum lost",
                                    "nodes": []},
                                   {"severity": "warn", "rule": "single-control-plane-restart", "message": "cp down",
                                    "nodes": []}]}
    got = fired(cluster(), impact=plan)
    assert [(v.severity, v.message) for v in got["plan-risk"]] == [("error", "quorum lost")]
    assert [(v.severity, v.message) for v in got["plan-warning"]] == [("warn", "cp down")]


def test_threshold_and_exit_code() -> None:
    warn = [Violation("r", "warn", "m", "s")]
    assert not fails(warn, "error") and fails(warn, "warn")
    assert fails([Violation("r", "error", "m", "s")], "error")
    assert POLICY_EXIT not in (0, 1, 2, 3, 4)


def test_user_rules_add_replace_and_disable(tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text(
        "rules:\n"
        "  - id: worker-count\n    severity: warn\n    deny: size(input.roles.worker) < 2\n"
        "    message: fewer than two workers\n"
        "  - id: apiserver-audit-log\n    enabled: false\n    deny: 'false'\n    message: off\n"
        "  - id: name-prefix\n    severity: error\n"
        "    violations: 'input.cluster.name.startsWith(\"prod-\") ? [] : [\"cluster \" + input.cluster.name + "
        "\" lacks the prod- prefix\"]'\n")
    rules = {r.id: r for r in load_rules([tmp_path])}
    assert "apiserver-audit-log" not in rules and "worker-count" in rules
    text = GOOD.replace("      audit-log-path: /var/log/kubernetes/audit.log\n", "")
    got = {v.rule: v for v in evaluate(list(rules.values()), policy_input(parse_cluster(text), certificates=CERTS_OK))}
    assert set(got) == {"worker-count", "name-prefix"}
    assert got["name-prefix"].message == "cluster pol lacks the prod- prefix"
    assert got["worker-count"].source == str(tmp_path / "team.yaml")


@pytest.mark.parametrize(("text", "says"), [
    ("rules:\n  - id: x\n    deny: 'input.('\n    message: m\n", "not valid CEL"),
    ("rules:\n  - id: x\n    deny: 'true'\n", "needs a `message`"),
    ("rules:\n  - id: x\n    severity: fatal\n    deny: 'true'\n    message: m\n", "severity"),
    ("rules: [\n", "not YAML"),
    ("rules:\n  - id: Bad Id\n    deny: 'true'\n    message: m\n", "id"),
])
def test_broken_rule_files_are_refused_naming_the_file(tmp_path: Path, text: str, says: str) -> None:
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(PolicyError) as err:
        load_rules([tmp_path])
    assert str(tmp_path / "bad.yaml") in err.value.message and says in err.value.message


def test_a_rule_that_fails_at_evaluation_is_an_error_not_a_pass(tmp_path: Path) -> None:
    (tmp_path / "r.yaml").write_text("rules:\n  - id: typo\n    severity: warn\n    deny: input.no.such > 1\n"
                                     "    message: m\n"
                                     "  - id: wrong-type\n    violations: '1 + 1'\n")
    got = {v.rule: v for v in evaluate(load_rules([tmp_path]), policy_input(cluster(), certificates=CERTS_OK))}
    assert got["typo"].severity == "error" and "could not be evaluated" in got["typo"].message
    assert got["wrong-type"].severity == "error" and "not a list" in got["wrong-type"].message


def test_policy_dir_must_exist_and_hold_rules(tmp_path: Path) -> None:
    with pytest.raises(UsageError):
        load_rules([tmp_path / "missing"])
    with pytest.raises(UsageError):
        load_rules([tmp_path])


def test_input_has_no_secret() -> None:
    text = GOOD + '  registry:\n    auths: [{registry: "r.example.com", username: u, password: "Sup3r-secret"}]\n'
    data = policy_input(parse_cluster(text), certificates=CERTS_OK)
    assert "Sup3r-secret" not in repr(data)
    assert dt.datetime.fromisoformat(data["settings"]["now"]).tzinfo is not None

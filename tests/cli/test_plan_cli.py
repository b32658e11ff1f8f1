"""`kubexm plan` as a user runs it, each command line its own process: the formats, the policy exit codes
(0 within policy, 5 at or above --policy-fail-on, 2 for a broken rule file), user rules, prices and cost."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

KUBEXM = str(Path(sys.executable).with_name("kubexm"))

# A test cluster (the label): the production-only rules stay quiet, the CIS warnings do not.
CLUSTER = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {{name: plancli, labels: {{kubexm.io/environment: test}}}}
spec:
  hosts:
    - {{name: n1, address: 10.0.0.1, instanceType: m5.large}}
    - {{name: n2, address: 10.0.0.2, instanceType: m5.xlarge}}
    - {{name: n3, address: 10.0.0.3}}
  roleGroups: {{etcd: [n1], control-plane: [n1], worker: [n2, n3]}}
  registry:
    auths: [{{registry: "reg.example.com:5000", username: puller, password: "Pl4n-S3cret"}}]
{extra}"""
COST = """\
  cost:
    currency: EUR
    defaultMonthly: 25
    instanceTypes:
      - {name: m5.large, monthly: 70}
      - {name: m5.xlarge, monthly: 140}
"""


def kubexm(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "NO_COLOR": "1", "COLUMNS": "200"}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER.format(extra=COST))
    return path


def clean(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out[-3000:]
    return out


def test_offline_plan_as_json_with_policy_and_cost(cluster_file: Path, tmp_path: Path) -> None:
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "-o", "json", home=tmp_path / "h")
    clean(res)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr
    plan = json.loads(res.stdout)
    assert plan["cluster"] == "plancli" and plan["operation"] == "cluster" and plan["connected"] is False
    assert {"n1", "n2", "n3"} <= {n["name"] for n in plan["nodes"]}
    assert any("InstallEtcdCluster" in o for o in next(n for n in plan["nodes"] if n["name"] == "n1")["other"])
    rules = {v["rule"] for v in plan["policy"]}
    assert {"apiserver-audit-log", "profiling-off"} <= rules and "etcd-odd-members" not in rules
    assert all(v["severity"] == "warn" for v in plan["policy"])
    assert plan["cost"]["currency"] == "EUR" and plan["cost"]["monthly"] == 235.0
    assert plan["cost"]["delta"] is None  # nothing stored for this cluster yet
    assert "Pl4n-S3cret" not in res.stdout


def test_policy_fail_on_warn_exits_5(cluster_file: Path, tmp_path: Path) -> None:
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "--policy-fail-on", "warn",
                 home=tmp_path / "h")
    out = clean(res)
    assert res.returncode == 5, out[-2000:]
    assert "apiserver-audit-log" in res.stdout and "Policy: " in res.stdout


def test_user_rule_from_a_directory_fails_the_plan(cluster_file: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "workers.yaml").write_text(
        "rules:\n  - id: three-workers\n    severity: error\n"
        "    deny: size(input.roles.worker) < 3\n    message: production needs three workers\n")
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "--policy-dir", str(rules),
                 home=tmp_path / "h")
    out = clean(res)
    assert res.returncode == 5, out[-2000:]
    line = next(line for line in res.stdout.splitlines() if "three-workers" in line)
    assert line.split()[0] == "error" and "production needs three workers" in line
    # The same rule, satisfied: exit 0.
    (rules / "workers.yaml").write_text(
        "rules:\n  - id: three-workers\n    severity: error\n"
        "    deny: size(input.roles.worker) < 2\n    message: production needs two workers\n")
    ok = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "--policy-dir", str(rules),
                home=tmp_path / "h")
    assert ok.returncode == 0 and "three-workers" not in ok.stdout, clean(ok)[-2000:]


def test_broken_rule_file_is_a_usage_error_naming_it(cluster_file: Path, tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    (rules / "bad.yaml").write_text("rules:\n  - id: broken\n    deny: 'size(input.roles'\n    message: m\n")
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "--policy-dir", str(rules),
                 home=tmp_path / "h")
    clean(res)
    assert res.returncode == 2
    assert "bad.yaml" in res.stderr and "not valid CEL" in res.stderr and res.stdout == ""


def test_markdown_output(cluster_file: Path, tmp_path: Path) -> None:
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "-o", "markdown", home=tmp_path / "h")
    clean(res)
    assert res.returncode == 0
    assert res.stdout.startswith("# Plan: cluster of cluster `plancli`")
    assert "## Policy" in res.stdout and "| warn | apiserver-audit-log |" in res.stdout
    assert "## Cost" in res.stdout and "235.00 EUR/month" in res.stdout


def test_prices_file_replaces_spec_cost_and_delete_nodes_shows_the_saving(cluster_file: Path, tmp_path: Path) -> None:
    prices = tmp_path / "prices.yaml"
    prices.write_text("currency: USD\ndefaultMonthly: 10\ninstanceTypes: [{name: m5.xlarge, monthly: 100}]\n")
    res = kubexm("plan", "delete-nodes", "--nodes", "n2", "-f", str(cluster_file), "--offline", "-o", "json",
                 "--prices", str(prices), home=tmp_path / "h")
    clean(res)
    assert res.returncode == 0, res.stderr
    cost = json.loads(res.stdout)["cost"]
    assert (cost["currency"], cost["monthly"], cost["before_monthly"], cost["delta"]) == ("USD", 20.0, 120.0, -100.0)
    assert cost["source"] == str(prices)
    bad = tmp_path / "bad.yaml"
    bad.write_text("currency: dollars\n")
    res = kubexm("plan", "cluster", "-f", str(cluster_file), "--offline", "--prices", str(bad), home=tmp_path / "h")
    clean(res)
    assert res.returncode == 2 and "currency" in res.stderr


def test_upgrade_plan_judges_the_skew(cluster_file: Path, tmp_path: Path) -> None:
    res = kubexm("plan", "upgrade", "--to-version", "v1.34.2", "-f", str(cluster_file), "--offline", "-o", "json",
                 home=tmp_path / "h")
    clean(res)
    assert res.returncode == 0, res.stdout[-2000:]
    assert "kubernetes-version-skew" not in {v["rule"] for v in json.loads(res.stdout)["policy"]}
    skip = kubexm("plan", "upgrade", "--to-version", "v1.34.2", "-f", str(cluster_file), "--offline",
                  "--set", "spec.kubernetes.version=v1.32.4", home=tmp_path / "h")
    clean(skip)
    assert skip.returncode == 5
    assert "v1.32.4 and the spec asks for v1.34.2: upgrade one minor version at a time" in skip.stdout
    bad = kubexm("plan", "upgrade", "--to-version", "latest", "-f", str(cluster_file), "--offline", home=tmp_path / "h")
    clean(bad)
    assert bad.returncode == 2 and "--to-version latest" in bad.stderr


def test_add_nodes_and_config_sync_plans(cluster_file: Path, tmp_path: Path) -> None:
    add = kubexm("plan", "add-nodes", "--nodes", "n3", "-f", str(cluster_file), "--offline", "-o", "json",
                 home=tmp_path / "h")
    clean(add)
    assert add.returncode == 0, add.stderr
    data = json.loads(add.stdout)
    assert data["operation"] == "add-nodes" and "n3" in {n["name"] for n in data["nodes"]}
    assert data["cost"]["before_monthly"] == 210.0 and data["cost"]["delta"] == 25.0
    wrong = kubexm("plan", "add-nodes", "--nodes", "n3", "--role", "etcd", "-f", str(cluster_file), "--offline",
                   home=tmp_path / "h")
    clean(wrong)
    assert wrong.returncode == 2 and "roleGroups.etcd" in wrong.stderr
    sync = kubexm("plan", "config-sync", "-f", str(cluster_file), "--offline", home=tmp_path / "h")
    clean(sync)
    assert sync.returncode == 0 and "Plan for config-sync of cluster plancli" in sync.stdout


def _tree(paths: list[str]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for p in paths:
        f = Path(p)
        out[p] = hashlib.sha256(f.read_bytes()).hexdigest() + oct(f.stat().st_mode) if f.exists() else None
    return out


def test_connected_plan_on_this_machine_shows_the_sysctl_diff_and_changes_nothing(tmp_path: Path) -> None:
    """A one-host cluster on this machine (connection: local), planned for real with --tags os: the sysctl
    drop-in is shown as kubexm would write it; the machine's files stay as they were."""
    path = tmp_path / "local.yaml"
    path.write_text("apiVersion: kubexm.io/v1alpha1\nkind: Cluster\n"
                    "metadata: {name: planlocal, labels: {kubexm.io/environment: test}}\nspec:\n"
                    "  hosts:\n    - {name: local1, address: 127.0.0.1, connection: local}\n"
                    "  roleGroups: {etcd: [local1], control-plane: [local1], worker: [local1]}\n"
                    "  system:\n    sysctl: {vm.max_map_count: \"262141\"}\n")
    watched = ["/etc/hosts", "/etc/hostname", "/etc/sysctl.d/99-kubexm.conf", "/etc/modules-load.d/kubexm.conf"]
    before = _tree(watched)
    res = kubexm("plan", "cluster", "-f", str(path), "--tags", "os", "-o", "json", home=tmp_path / "h", timeout=300)
    clean(res)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    plan = json.loads(res.stdout)
    assert plan["connected"] is True and plan["failed"] == 0
    (node,) = plan["nodes"]
    sysctl = next(f for f in node["files"] if f["path"] == "/etc/sysctl.d/99-kubexm.conf")
    assert "+vm.max_map_count = 262141\n" in sysctl["diff"]
    assert _tree(watched) == before

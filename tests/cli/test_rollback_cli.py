"""`kubexm rollback cluster` (and `kubexm upgrade etcd`'s refusals), each command line in its own process.

The rollback that reaches nodes runs through a driver process pointing kubexm's connections at in-memory etcd
members (tests/governance/test_rollback.py), after an upgrade kept its rollback point there.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.process import cli_env, run_kubexm

from kubexm.steps.rollback import load_point, save_point

TESTS = Path(__file__).resolve().parents[1]
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
CLUSTER = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: sync}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1}
    - {name: n2, address: 10.0.0.2}
    - {name: n3, address: 10.0.0.3}
  roleGroups: {etcd: [n1, n2, n3], control-plane: [n1], worker: [n2, n3]}
  kubernetes: {proxyMode: iptables}
  etcd: {version: v3.5.17}
"""
POINT = {"id": "etcd-v3.5.17-abc", "component": "etcd", "from": "v3.5.16", "to": "v3.5.17", "nodes": ["n1", "n2", "n3"],
         "snapshot": None, "created": time.time(), "state": "ready"}

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import kubexm.hosts.pool as pool
from governance.test_rollback import KEPT, NODES, OLD, etcd_fleet, upgrade_and_keep
fleet, nodes = etcd_fleet()
upgrade_and_keep(fleet)
pool.default_factory = lambda c: fleet.factory
from kubexm.cli.main import run_cli
code = run_cli(sys.argv[2:])
state = {n: all(fleet[n].files[p] == f"{p} of {OLD}".encode() for p in KEPT) for n in NODES}
print("#STATE " + json.dumps(state), file=sys.stderr)
sys.exit(code)
"""


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_kubexm(*args, home=home)


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CLUSTER)
    return path


def test_nothing_to_roll_back_is_one_line_and_exit_1(cluster_file: Path, kubexm_home: Path) -> None:
    res = kubexm("rollback", "cluster", "-f", str(cluster_file), "-y", home=kubexm_home)
    assert res.returncode == 1 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line == ("error: nothing to roll back: cluster sync has no upgrade rollback point; "
                    "`kubexm upgrade cluster` and `kubexm upgrade etcd` keep one")


def test_plan_prints_the_point_and_touches_nothing(cluster_file: Path, kubexm_home: Path) -> None:
    save_point("sync", POINT)
    res = kubexm("rollback", "cluster", "-f", str(cluster_file), "--plan", home=kubexm_home)
    assert res.returncode == 0, res.stderr
    for words in ("etcd-v3.5.17-abc", "v3.5.17", "v3.5.16", "n1, n2, n3", "kept as it is"):
        assert words in res.stdout, words
    assert load_point("sync") == POINT  # still ready
    refused = kubexm("rollback", "cluster", "-f", str(cluster_file), "--restore-etcd-data", "-y", home=kubexm_home)
    assert refused.returncode == 1 and "has no etcd snapshot" in refused.stderr
    no_terminal = kubexm("rollback", "cluster", "-f", str(cluster_file), home=kubexm_home)
    assert no_terminal.returncode == 2 and "--yes" in no_terminal.stderr


def test_a_used_point_is_not_used_twice(cluster_file: Path, kubexm_home: Path) -> None:
    save_point("sync", {**POINT, "state": "rolled-back"})
    res = kubexm("rollback", "cluster", "-f", str(cluster_file), "-y", home=kubexm_home)
    assert res.returncode == 1
    assert "(the last one, etcd-v3.5.17-abc, was already rolled back)" in res.stderr


def test_rollback_restores_every_member_and_records_the_previous_version(cluster_file: Path,
                                                                         kubexm_home: Path) -> None:
    res = subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), "rollback", "cluster", "-f", str(cluster_file),
                          "-y"], capture_output=True, text=True, env=cli_env(kubexm_home), timeout=180,
                         stdin=subprocess.DEVNULL)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    state = json.loads(next(x for x in res.stderr.splitlines() if x.startswith("#STATE ")).removeprefix("#STATE "))
    assert state == {"n1": True, "n2": True, "n3": True}
    assert load_point("sync")["state"] == "rolled-back"  # type: ignore[index]
    # The state store keeps the previous version as the one applied: the next upgrade starts from it.
    from ruamel.yaml import YAML

    from kubexm.state.store import Store

    row = Store().get_cluster("sync")
    assert row is not None and YAML(typ="safe").load(row.spec_yaml)["spec"]["etcd"]["version"] == "v3.5.16"
    again = kubexm("upgrade", "etcd", "-f", str(cluster_file), "--to-version", "v3.5.16", "-y", home=kubexm_home)
    assert again.returncode == 2 and "already runs v3.5.16" in again.stderr


def test_upgrade_etcd_refusals(cluster_file: Path, kubexm_home: Path) -> None:
    for version, words in (("v3.5.17", "already runs v3.5.17"), ("v3.5.1", "older than the running v3.5.17"),
                           ("latest", "--to-version")):
        res = kubexm("upgrade", "etcd", "-f", str(cluster_file), "--to-version", version, "-y", home=kubexm_home)
        assert res.returncode == 2 and words in res.stderr.splitlines()[0], res.stderr

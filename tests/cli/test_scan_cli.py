"""`kubexm scan cis` as a user types it, each command line its own process, against this machine.

The cluster's one node is this machine over the local connection; its etcd data directory is a directory
of the test (mode chosen by the test), every other file the benchmark names is absent here, so those items
are INFO and the outcome is decided by the data directory alone (1.1.11 mode, 1.1.12 owner).
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

KUBEXM = str(Path(sys.executable).with_name("kubexm"))
# Files that would make this machine look like a node: the tests' expectations assume none is here.
NODE_FILES = ("/etc/kubernetes", "/etc/etcd.env", "/etc/systemd/system/etcd.service", "/var/lib/kubelet/config.yaml",
              "/etc/systemd/system/kubelet.service")

pytestmark = pytest.mark.skipif(any(os.path.exists(p) for p in NODE_FILES),
                                reason="this machine holds Kubernetes files: the scan would judge them too")


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL)


def cluster_file(tmp_path: Path, data_dir: Path, extra_host: str = "") -> Path:
    f = tmp_path / "cluster.yaml"
    f.write_text(f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: scancli
spec:
  hosts:
    - name: here
      address: 127.0.0.1
      connection: local
{extra_host}  roleGroups:
    etcd: [here]
    control-plane: [here]
    worker: [here{', ghost' if extra_host else ''}]
  etcd:
    dataDir: {json.dumps(str(data_dir))}
""")
    return f


@pytest.fixture
def opened(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(cluster file, KUBEXM_HOME, data directory with mode 0755 and a space in its path)."""
    data = tmp_path / "etcd data"
    data.mkdir()
    data.chmod(0o755)
    return cluster_file(tmp_path, data), tmp_path / "home", data


def results(res: subprocess.CompletedProcess[str]) -> dict[str, dict[str, object]]:
    doc = json.loads(res.stdout)
    return {str(r["id"]): r for r in doc["results"]}


def test_json_names_the_open_data_dir_and_exits_4(opened: tuple[Path, Path, Path]) -> None:
    f, home, data = opened
    res = kubexm("scan", "cis", "-f", str(f), "-o", "json", home=home)
    assert res.returncode == 4, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["status"] == "FAIL" and doc["benchmark"].startswith("CIS Kubernetes Benchmark")
    assert doc["hosts"] == {"here": {"reachable": True, "error": None}}
    by_id = results(res)
    assert by_id["1.1.11"]["status"] == "FAIL" and by_id["1.1.11"]["found"] == f"{data}: mode 0755 owner root:root"
    assert by_id["1.1.11"]["fixable_paths"] == [str(data)]
    assert by_id["1.1.12"]["status"] == "WARN"
    assert {r["status"] for i, r in by_id.items() if i not in ("1.1.11", "1.1.12")} == {"INFO"}
    assert doc["summary"] == {"PASS": 0, "FAIL": 1, "WARN": 1, "INFO": len(by_id) - 2}


def test_junit_is_xml_ci_servers_read(opened: tuple[Path, Path, Path]) -> None:
    f, home, data = opened
    res = kubexm("scan", "cis", "-f", str(f), "-o", "junit", home=home)
    assert res.returncode == 4, res.stderr
    root = ET.fromstring(res.stdout)
    assert root.tag == "testsuites" and root.get("failures") == "1"
    (suite,) = root.findall("testsuite")
    assert suite.get("name") == "here" and int(suite.get("tests", "0")) == len(suite.findall("testcase"))
    (failure,) = root.iter("failure")
    assert str(data) in failure.get("message", "") and "chmod 700" in (failure.text or "")
    assert int(suite.get("skipped", "0")) == len(suite.findall("testcase/skipped")) > 1


def test_table_shows_the_failure_and_folds_what_was_not_judged(opened: tuple[Path, Path, Path]) -> None:
    f, home, _ = opened
    res = kubexm("scan", "cis", "-f", str(f), home=home)
    assert res.returncode == 4, res.stdout + res.stderr
    line = next(x for x in res.stdout.splitlines() if "1.1.11" in x)
    assert "FAIL" in line and "mode 0755 owner root:root" in res.stdout  # the path is wrapped in its cell
    assert "item(s) not judged" in res.stdout and "Traceback" not in res.stdout + res.stderr


def test_fix_without_a_terminal_needs_yes_and_changes_nothing(opened: tuple[Path, Path, Path]) -> None:
    f, home, data = opened
    res = kubexm("scan", "cis", "-f", str(f), "--fix", home=home)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "--fix will change:" in res.stdout and f"chmod u-s,g-rwxs,o-rwxt {data}" in res.stdout
    assert "pass --yes" in res.stderr and "Traceback" not in res.stderr
    assert stat.S_IMODE(data.stat().st_mode) == 0o755


def test_fix_yes_repairs_the_directory_and_the_rescan_passes_it(opened: tuple[Path, Path, Path]) -> None:
    f, home, data = opened
    (data / "member").mkdir()
    (data / "member" / "db").write_text("x")
    os.chmod(data / "member" / "db", 0o644)
    res = kubexm("scan", "cis", "-f", str(f), "--fix", "--yes", "-o", "json", home=home)
    # 1.1.11 passes after the fix; 1.1.12 (root-owned, etcd runs as root) stays a warning: exit 3.
    assert res.returncode == 3, res.stdout + res.stderr
    assert results(res)["1.1.11"]["status"] == "PASS"
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    assert stat.S_IMODE((data / "member" / "db").stat().st_mode) == 0o644  # only the flagged path
    again = kubexm("scan", "cis", "-f", str(f), "--fix", "--yes", "-o", "json", home=home)
    assert again.returncode == 3 and "--fix: no file mode or owner to fix" in again.stderr


def test_nothing_to_judge_exits_0_and_an_unreachable_node_exits_1(tmp_path: Path) -> None:
    home = tmp_path / "home"
    f = cluster_file(tmp_path, tmp_path / "no-etcd-here")
    res = kubexm("scan", "cis", "-f", str(f), "-o", "json", home=home)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)["status"] == "PASS"
    ghost = "    - name: ghost\n      address: 127.0.0.1\n      port: 1\n"
    f = cluster_file(tmp_path, tmp_path / "no-etcd-here", ghost)
    res = kubexm("scan", "cis", "-f", str(f), "-o", "json", home=home)
    assert res.returncode == 1, res.stdout + res.stderr
    doc = json.loads(res.stdout)
    assert doc["hosts"]["ghost"]["reachable"] is False and "error: ghost could not be read" in res.stderr
    res = kubexm("scan", "cis", "-f", str(f), "--nodes", "here", "-o", "json", home=home)
    assert res.returncode == 0 and set(json.loads(res.stdout)["hosts"]) == {"here"}

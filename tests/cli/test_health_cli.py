"""`kubexm health cluster` and `kubexm repair` as a user types them, each command line its own process.

Nodes that refuse connections (closed loopback ports) stand for a dead cluster; a `connection: local` host
stands for a live one, with `systemctl` replaced on PATH by a stub whose units are what the test says (the
real probe runs: df, /proc, etcdctl's absence and all)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML

KUBEXM = str(Path(sys.executable).with_name("kubexm"))

DEAD = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: hcdead
spec:
  hosts:
    - {name: n1, address: 127.0.0.1, port: 1, password: pw}
    - {name: n2, address: 127.0.0.1, port: 2, password: pw}
  roleGroups:
    etcd: [n1]
    control-plane: [n1]
    worker: [n2]
"""

LOCAL = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: hclocal
spec:
  hosts:
    - {name: here, address: 127.0.0.1, connection: local}
  roleGroups:
    etcd: [here]
    control-plane: [here]
"""

# systemctl for the test: unit states from files in $STUB_UNITS (absent: not installed), every other call
# recorded in $STUB_UNITS/calls so the test sees what would have changed.
SYSTEMCTL = r"""#!/bin/sh
dir="$STUB_UNITS"
case "$1" in
  show)
    shift; while [ "$1" != "--" ]; do shift; done; shift
    for u in "$@"; do
      [ "$u" = '*' ] && continue  # the failed units the pattern adds: named here already
      if [ -f "$dir/$u" ]; then state=$(cat "$dir/$u"); load=loaded; n=2; else state=inactive; load=not-found; n=0; fi
      sub=running; [ "$state" = active ] || sub=dead
      printf 'Result=success\nNRestarts=%s\nId=%s.service\nLoadState=%s\nActiveState=%s\nSubState=%s\n\n' \
        "$n" "$u" "$load" "$state" "$sub"
    done ;;
  is-active) [ "$(cat "$dir/$3" 2>/dev/null)" = active ] ;;
  *) echo "$*" >> "$dir/calls" ;;
esac
"""


def kubexm(*args: str, home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1",
            **(env or {})}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=full, timeout=120,
                          stdin=subprocess.DEVNULL)


def no_traceback(res: subprocess.CompletedProcess[str]) -> str:
    out = res.stdout + res.stderr
    assert "Traceback" not in out and "internal error" not in out, out
    return out


@pytest.fixture
def dead(tmp_path: Path) -> Path:
    f = tmp_path / "dead.yaml"
    f.write_text(DEAD)
    return f


@pytest.fixture
def local(tmp_path: Path) -> tuple[Path, dict[str, str], Path]:
    f = tmp_path / "local.yaml"
    f.write_text(LOCAL)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    stub = bin_dir / "systemctl"
    stub.write_text(SYSTEMCTL)
    stub.chmod(0o755)
    units = tmp_path / "units"
    units.mkdir()
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_UNITS": str(units)}
    return f, env, units


def test_unreachable_nodes_are_each_named_and_the_report_exits_4(dead: Path, tmp_path: Path) -> None:
    res = kubexm("health", "cluster", "-f", str(dead), "-o", "json", home=tmp_path / "home")
    no_traceback(res)
    assert res.returncode == 4, res.stderr
    doc = json.loads(res.stdout)
    assert doc["kind"] == "HealthReport" and doc["apiVersion"] == "kubexm.io/health/v1"
    assert doc["status"] == "fail" and doc["cluster"] == "hcdead"
    assert {n["name"]: n["reachable"] for n in doc["nodes"]} == {"n1": False, "n2": False}
    reach = {c["target"]: c for c in doc["checks"] if c["id"] == "node.reachable"}
    assert "n1 (127.0.0.1) is unreachable" in reach["n1"]["reason"] and "connection refused" in reach["n1"]["reason"]
    assert reach["n2"]["status"] == "fail" and reach["n2"]["fix"]
    table = kubexm("health", "cluster", "-f", str(dead), home=tmp_path / "home")
    out = no_traceback(table)
    assert table.returncode == 4
    assert "n2 (127.0.0.1) is unreachable" in out and "no API server answers" in out


def test_yaml_output_and_nodes_selection(dead: Path, tmp_path: Path) -> None:
    res = kubexm("health", "cluster", "-f", str(dead), "-o", "yaml", "--nodes", "n2", home=tmp_path / "home")
    no_traceback(res)
    doc = YAML(typ="safe").load(res.stdout.split("\n---\n")[0])
    assert doc["kind"] == "HealthReport" and [n["name"] for n in doc["nodes"]] == ["n2"]
    assert doc["all_nodes"] is False and res.returncode == 4


def test_an_unknown_node_is_refused_in_one_line(dead: Path, tmp_path: Path) -> None:
    res = kubexm("health", "cluster", "-f", str(dead), "--nodes", "n9", home=tmp_path / "home")
    out = no_traceback(res)
    assert res.returncode == 2
    assert [line for line in out.splitlines() if line.startswith("error:")] == [
        "error: --nodes 'n9' matches no host of cluster hcdead"]


def test_the_report_reads_a_live_host_and_its_units(local: tuple[Path, dict[str, str], Path], tmp_path: Path) -> None:
    f, env, units = local
    (units / "etcd").write_text("failed")
    (units / "containerd").write_text("active")
    res = kubexm("health", "cluster", "-f", str(f), "-o", "json", home=tmp_path / "home", env=env)
    no_traceback(res)
    doc = json.loads(res.stdout)
    (node,) = doc["nodes"]
    assert node["reachable"] is True and node["kernel"] == os.uname().release
    assert {u["unit"]: (u["active_state"], u["restarts"]) for u in node["units"]} == {
        "etcd": ("failed", 2), "containerd": ("active", 2), "kubelet": ("inactive", 0)}
    assert any(fs["path"] == "/" and fs["used_percent"] is not None for fs in node["filesystems"])
    etcd = [c for c in doc["checks"] if c["id"] == "unit.etcd"]
    assert etcd[0]["status"] == "fail" and etcd[0]["fix"].startswith(f"kubexm repair -f {f}")
    assert res.returncode == 4
    assert not (units / "calls").exists()  # the report changed nothing


def test_repair_shows_the_plan_and_refuses_without_a_terminal(local: tuple[Path, dict[str, str], Path],
                                                              tmp_path: Path) -> None:
    f, env, units = local
    (units / "etcd").write_text("failed")
    (units / "containerd").write_text("inactive")
    res = kubexm("repair", "-f", str(f), home=tmp_path / "home", env=env)
    out = no_traceback(res)
    assert res.returncode == 2
    assert "start etcd on here" in out and "start containerd on here" in out
    assert "kubexm restart component etcd -f" in out and "--nodes here -y" in out  # the path may wrap
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "stdin is not a terminal; pass --yes (-y)" in errors[0]
    assert not (units / "calls").exists()  # nothing was started
    assert out.index("start etcd on here") < out.index("error:")


def test_watch_reports_again_until_interrupted(dead: Path, tmp_path: Path) -> None:
    import signal
    import time

    env = {**os.environ, "KUBEXM_HOME": str(tmp_path / "home"), "KUBEXM_PERSIST": "0"}
    proc = subprocess.Popen([KUBEXM, "health", "cluster", "-f", str(dead), "-o", "json", "--watch", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    time.sleep(6)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert "Traceback" not in err, err
    docs, text = [], out.strip()
    decoder = json.JSONDecoder()
    while text:
        doc, end = decoder.raw_decode(text)
        docs.append(doc)
        text = text[end:].strip()
    assert len(docs) >= 2 and all(d["kind"] == "HealthReport" for d in docs)
    assert docs[0]["generated_at"] != docs[-1]["generated_at"] or len(docs) > 2
    assert proc.returncode == 4  # the last report's


def test_help_documents_the_json_and_the_exit_codes(tmp_path: Path) -> None:
    res = kubexm("health", "cluster", "--help", home=tmp_path / "home")
    assert res.returncode == 0
    text = " ".join(res.stdout.split())
    for word in ('"kind": "HealthReport"', '"apiVersion": "kubexm.io/health/v1"', "Exit code: 0 all ok, 3 warnings, "
                 "4 failures", "--watch"):
        assert word in text, word
    rep = kubexm("repair", "--help", home=tmp_path / "home")
    assert rep.returncode == 0 and "--yes" in rep.stdout

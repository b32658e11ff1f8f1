"""`kubexm config diff` and `config sync`, each command line in its own process.

Commands that reach nodes run through a small driver process that points kubexm's connections at in-memory nodes
(tests/governance/test_config_sync.py's FakeNode, as `create cluster` left them) and calls the CLI's entry point.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.process import cli_env, run_kubexm

TESTS = Path(__file__).resolve().parents[1]
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
sys.path.insert(0, str(TESTS))

from governance.test_config_sync import BASE, CHANGED, HOSTS_TOML  # noqa: E402

DRIVER = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
import kubexm.hosts.pool as pool
from governance.test_config_sync import BASE, HOSTS_TOML, NODES, cluster, fleet_for
fleet, nodes = fleet_for(cluster(BASE))
if sys.argv[2] == "n2-unhealthy":
    nodes["n2"].runtime_ok = False
pool.default_factory = lambda c: fleet.factory
from kubexm.cli.main import run_cli
code = run_cli(sys.argv[3:])
state = {n: {"mirror": HOSTS_TOML in fleet[n].files, "keepalive": nodes[n].sysctl["net.ipv4.tcp_keepalive_time"]}
         for n in NODES}
print("#STATE " + json.dumps(state), file=sys.stderr)
sys.exit(code)
"""


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_kubexm(*args, home=home)


def driven(*args: str, home: Path, mode: str = "-") -> tuple[subprocess.CompletedProcess[str], dict[str, dict[str, object]]]:
    res = subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), mode, *args], capture_output=True, text=True,
                         env=cli_env(home), timeout=180, stdin=subprocess.DEVNULL)
    line = next(x for x in res.stderr.splitlines() if x.startswith("#STATE "))
    return res, json.loads(line.removeprefix("#STATE "))


@pytest.fixture
def changed(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(CHANGED)
    return path


def test_sync_without_a_terminal_needs_yes(changed: Path, tmp_path: Path) -> None:
    res = kubexm("config", "sync", "-f", str(changed), home=tmp_path / "home")
    assert res.returncode == 2 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error:") and "--yes" in line


def test_diff_prints_unified_diffs_per_node_and_changes_nothing(changed: Path, tmp_path: Path) -> None:
    res, state = driven("config", "diff", "-f", str(changed), home=tmp_path / "home")
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    for node in ("n1", "n2", "n3"):
        mine = out.split(f"== {node}\n")[1].split("== ")[0]
        assert f"--- /dev/null\n+++ {HOSTS_TOML} (spec)\n" in mine and "+net.ipv4.tcp_keepalive_time = 600" in mine
    assert out.count("+net.ipv4.tcp_keepalive_time = 600\n") == 6  # the file and the live value, on each node
    assert "3 node(s) would change; apply with `kubexm config sync`" in out
    assert all(s == {"mirror": False, "keepalive": "7200"} for s in state.values())


def test_diff_json_and_an_unchanged_spec(tmp_path: Path) -> None:
    same = tmp_path / "same.yaml"
    same.write_text(BASE)
    res, _ = driven("config", "diff", "-f", str(same), "-o", "json", home=tmp_path / "home")
    assert res.returncode == 0, res.stderr[-3000:]
    assert json.loads(res.stdout) == {"cluster": "sync", "ok": True, "nodes": {}}
    res, _ = driven("config", "diff", "-f", str(same), home=tmp_path / "home")
    assert "no changes: every node is as the cluster file says" in res.stdout


def test_sync_applies_every_node(changed: Path, tmp_path: Path) -> None:
    res, state = driven("config", "sync", "-f", str(changed), "-y", home=tmp_path / "home")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    assert all(s == {"mirror": True, "keepalive": "600"} for s in state.values()), state


def test_sync_stops_at_the_first_unhealthy_node(changed: Path, tmp_path: Path) -> None:
    res, state = driven("config", "sync", "-f", str(changed), "-y", home=tmp_path / "home", mode="n2-unhealthy")
    assert res.returncode == 1
    assert "n2 is unhealthy after its change: containerd is not answering" in res.stdout
    assert state["n1"]["mirror"] and state["n2"]["mirror"] and not state["n3"]["mirror"]

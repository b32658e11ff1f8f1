"""`kubexm token ...`, each command line in its own process.

Commands that need a cluster run through a small driver process that points kubexm's connections at in-memory
hosts (tests/support/memory.py) with a fake kubeadm, then calls the CLI's entry point as `kubexm` would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from support.process import cli_env, run_kubexm

from kubexm.spec.sample import sample_config

TESTS = Path(__file__).resolve().parents[1]
KUBEXM = str(Path(sys.executable).with_name("kubexm"))

DRIVER = r"""
import re, sys
sys.path.insert(0, sys.argv[1])
import kubexm.hosts.pool as pool
from support.memory import MemoryFleet
from kube.test_tokens import FakeControlPlane, MASTERS, removes_files
from kubexm.kube.kubeadm import TOKEN_CONFIG
from ruamel.yaml import YAML

fleet = MemoryFleet([*MASTERS, "worker1", "worker2"])
FakeControlPlane(fleet)
first = fleet["master1"]
created = []

def create(h, m, s):
    created.append(YAML(typ="safe").load(h.files[TOKEN_CONFIG].decode())["bootstrapTokens"][0]["token"])
    return 0, created[-1] + "\n", ""

first.on(r"^kubeadm token create --config ", create)
first.on(r"go-template=", lambda h, m, s: (0, "".join(f"{t[:6]}\t\tsigning\t\tfor rack 7\n" for t in created), ""))
pool.default_factory = lambda cluster: fleet.factory
if sys.argv[2] == "with-pki":
    from kubexm.spec.loader import load_cluster
    from kubexm.steps.etcd import cluster_pki
    cluster_pki(load_cluster(sys.argv[-1])).ensure_service_account_key()
from kubexm.cli.main import run_cli
code = run_cli(sys.argv[3:-1] + ["-f", sys.argv[-1]])
for name in MASTERS:
    print(f"#{name} " + " | ".join(fleet[name].commands), file=sys.stderr)
sys.exit(code)
"""


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(sample_config("ha", with_ha=True))
    return path


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return run_kubexm(*args, home=home)


def driven(*args: str, sample: Path, home: Path, pki: bool = False) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), "with-pki" if pki else "-", *args, str(sample)],
                          capture_output=True, text=True, env=cli_env(home), timeout=120, stdin=subprocess.DEVNULL)


def _files_holding(home: Path, needle: str) -> list[str]:
    return [str(p) for p in home.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


def test_rotate_offline_plan_prints_the_phases(sample: Path, tmp_path: Path) -> None:
    res = kubexm("token", "rotate", "-f", str(sample), "--dry-run", "--offline", home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    assert "Service-account key rotation" in res.stdout and "accepts tokens signed by the new key" in res.stdout
    assert "TrustNewServiceAccountKey" in res.stdout or "planned" in res.stdout
    assert not (tmp_path / "home" / "clusters").exists() or not list((tmp_path / "home").rglob("sa-next.key"))


def test_rotate_without_a_terminal_needs_yes(sample: Path, tmp_path: Path) -> None:
    res = kubexm("token", "rotate", "-f", str(sample), home=tmp_path / "home")
    assert res.returncode != 0 and res.stdout == ""
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error:") and "--yes" in line


def test_bad_arguments_are_one_line_errors(sample: Path, tmp_path: Path) -> None:
    for args, words in ((["token", "delete", "abcdef.0123456789abcdef", "-y"], "token id only"),
                        (["token", "delete", "NOPE", "-y"], "not a bootstrap token id"),
                        (["token", "create", "--ttl", "soon"], "--ttl 'soon' is not a duration"),
                        (["token", "rotate", "--grace", "1 week", "-y"], "--grace '1 week' is not a duration")):
        res = kubexm(*args, "-f", str(sample), home=tmp_path / "home")
        assert res.returncode == 2, res.stderr
        assert words in res.stderr.splitlines()[0] and "Traceback" not in res.stderr


def test_create_prints_the_token_once_and_nowhere_else(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = driven("token", "create", "--ttl", "2h", "--description", "for rack 7", sample=sample, home=home)
    assert res.returncode == 0, res.stderr
    token = res.stdout.strip()
    assert len(res.stdout.splitlines()) == 1 and len(token) == 23 and token[6] == "."
    assert token not in res.stderr.split("#master1")[0]  # progress and summary lines: only the id
    assert token[:6] in res.stderr
    assert _files_holding(home, token) == []  # not in the run history, the audit log or any cache


def test_list_and_delete(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = driven("token", "list", "-o", "json", sample=sample, home=home)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == []
    res = driven("token", "list", sample=sample, home=home)
    assert res.returncode == 0 and "no bootstrap tokens" in res.stdout
    res = driven("token", "delete", "abcdef", "-y", sample=sample, home=home)
    assert res.returncode == 0, res.stderr
    assert "kubeadm token delete" not in res.stderr  # not listed: nothing to delete


def test_rotate_runs_phase_one_and_two(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = driven("token", "rotate", "-y", sample=sample, home=home, pki=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "sign service-account tokens with the new key" in res.stdout
    record = json.loads(next(home.rglob("sa-rotation.json")).read_text())
    assert record["phase"] == "sign" and record["grace_seconds"] == 86400
    res = driven("token", "rotate", "--finish", "-y", sample=sample, home=home, pki=True)
    assert res.returncode == 0, res.stdout + res.stderr
    assert not list(home.rglob("sa-rotation.json")) and not list(home.rglob("sa-next.key"))

"""`kubexm certs rotate-ca`, each command line its own process.

A small driver points kubexm's connections at in-memory nodes holding what kubexm and kubeadm placed
(tests/pki/test_cert_steps.py) and keeps their files in a JSON file between processes, so a second process
sees what the first left on the nodes, as a user's re-run does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kubexm.pki import PKI
from kubexm.spec.loader import parse_cluster
from kubexm.spec.sample import sample_config

TESTS = Path(__file__).resolve().parents[1]
KUBEXM = str(Path(sys.executable).with_name("kubexm"))

DRIVER = r"""
import base64, json, os, sys
sys.path.insert(0, sys.argv[1])
import kubexm.hosts.pool as pool
from pki.test_cert_steps import Nodes, install, NAMES
from pki.test_rotation import _sed
from kubexm.spec.loader import load_cluster
from kubexm.steps.etcd import cluster_pki
from kubexm.pki.layout import etcd_specs, kubernetes_specs

state_file, down, etcd_down = sys.argv[2], sys.argv[3], sys.argv[4]
cluster = load_cluster(sys.argv[-1])
nodes = Nodes(cluster)
pki = cluster_pki(cluster)
if os.path.exists(state_file):
    saved = json.load(open(state_file))
    for name, files in saved.items():
        nodes[name].files = {p: base64.b64decode(v) for p, v in files.items()}
else:
    pki.ensure([*kubernetes_specs(cluster), *etcd_specs(cluster)])
    pki.ensure_service_account_key()
    install(nodes, pki)
for name in NAMES:
    nodes[name].on(r"^sed -i -e ", _sed)
    nodes[name].down = name in down.split(",")
nodes.etcd_down = {n for n in etcd_down.split(",") if n}
pool.default_factory = lambda c: nodes.fleet.factory
from kubexm.cli.main import run_cli
code = run_cli(sys.argv[5:-1] + ["-f", sys.argv[-1]])
json.dump({n: {p: base64.b64encode(v).decode() for p, v in nodes[n].files.items()} for n in NAMES}, open(state_file, "w"))
for name in NAMES:
    sent = [c for h, c in nodes.log if h == name]
    print(f"#{name} " + str(len([c for c in sent if c.startswith(("mv -f", "systemctl restart", "sed -i"))])),
          file=sys.stderr)
sys.exit(code)
"""


def _env(home: Path) -> dict[str, str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "220", "NO_COLOR": "1"}
    env.pop("KUBEXM_DEBUG", None)
    return env


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(sample_config("prod", with_ha=True).replace("spec:\n", "spec:\n  pki:\n    keyType: ecdsa\n", 1))
    return path


def kubexm(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=_env(home), timeout=60,
                          stdin=subprocess.DEVNULL)


def driven(*args: str, sample: Path, home: Path, down: str = "", etcd_down: str = "") -> subprocess.CompletedProcess[str]:
    state = home / "nodes.json"
    home.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", DRIVER, str(TESTS), str(state), down or "-", etcd_down, *args,
                           str(sample)], capture_output=True, text=True, env=_env(home), timeout=300,
                          stdin=subprocess.DEVNULL)


def pki_of(sample: Path, home: Path) -> PKI:
    return PKI(home / "clusters" / parse_cluster(sample.read_text()).name / "pki")


def touched(res: subprocess.CompletedProcess[str]) -> dict[str, int]:
    return {line.split()[0][1:]: int(line.split()[1]) for line in res.stderr.splitlines() if line.startswith("#")}


def test_plan_prints_phases_and_nodes_and_connects_nowhere(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    # The cluster's hosts (192.168.0.x) do not exist: a plan that tried to connect would fail.
    res = kubexm("certs", "rotate-ca", "--component", "etcd", "--plan", "-f", str(sample), home=home)
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [line for line in res.stdout.splitlines() if line.startswith("│")]
    cells = [[c.strip() for c in r.strip("│").split("│")] for r in rows]
    assert [(c[0], c[1], c[2]) for c in cells] == [
        (f"{n} {phase}", node, group) for n, phase in enumerate(("trust", "reissue", "drop"), 1)
        for group in ("etcd", "control-plane") for node in ("master1", "master2", "master3")]
    assert all(c[3] == "to do" for c in cells)
    assert not (home / "clusters").exists() or not any((home / "clusters").rglob("ca-rotation.json"))


def test_refused_while_etcd_is_unhealthy_in_one_line(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = driven("certs", "rotate-ca", "--component", "kubernetes", "-y", sample=sample, home=home, etcd_down="master2")
    assert res.returncode == 1, res.stdout + res.stderr
    out = res.stdout + res.stderr
    assert "Traceback" not in out
    refusal = [line for line in out.splitlines() if "refusing to rotate a CA" in line]
    assert refusal and "2 of 3 members healthy" in refusal[0] and "https://192.168.0.12:2379" in refusal[0]
    pki = pki_of(sample, home)
    assert not (pki.root / "ca-rotation.json").exists() and not pki.crt("ca-next").exists()
    assert set(touched(res).values()) == {0}  # nothing placed, nothing restarted anywhere


def test_an_interrupted_rotation_resumes_and_other_commands_wait_for_it(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    first = driven("certs", "rotate-ca", "--component", "front-proxy", "-y", sample=sample, home=home, down="master3")
    assert first.returncode != 0
    assert "master3" in first.stdout + first.stderr and "again" in first.stdout + first.stderr
    pki = pki_of(sample, home)
    record = json.loads((pki.root / "ca-rotation.json").read_text())
    assert record["component"] == "front-proxy" and record["phase"] == "trust"
    assert record["done"]["trust"] == ["master1/control-plane", "master2/control-plane"]

    # Meanwhile: another CA, an upgrade and adding nodes are refused, each naming the command that finishes it.
    other = kubexm("certs", "rotate-ca", "--component", "etcd", "-y", "-f", str(sample), home=home)
    assert other.returncode == 2 and "rotate-ca --component front-proxy" in other.stderr
    upgrade = kubexm("upgrade", "cluster", "--to-version", "v1.34.3", "-y", "-f", str(sample), home=home)
    assert upgrade.returncode == 2 and "rotation of the front-proxy CA is in progress" in upgrade.stderr
    assert "kubexm certs rotate-ca --component front-proxy" in upgrade.stderr
    etcd = kubexm("upgrade", "etcd", "--to-version", "v3.5.99", "-y", "-f", str(sample), home=home)
    assert etcd.returncode == 2 and "kubexm certs rotate-ca --component front-proxy" in etcd.stderr
    add = kubexm("add", "nodes", "--nodes", "worker2", "-y", "-f", str(sample), home=home)
    assert add.returncode == 2 and "kubexm certs rotate-ca --component front-proxy" in add.stderr

    second = driven("certs", "rotate-ca", "--component", "front-proxy", "-y", sample=sample, home=home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-2000:]
    counts = touched(second)
    # master1 and master2 finished phase 1 before: this run places phase 2 and 3 there (2 placements and 2
    # restarts of kube-apiserver each); master3 gets all three phases; workers hold no front-proxy file.
    assert counts["master3"] > counts["master1"] == counts["master2"] > 0
    assert counts["worker1"] == counts["worker2"] == 0
    assert not (pki.root / "ca-rotation.json").exists() and not pki.crt("front-proxy-ca-old").exists()
    state = json.loads((home / "nodes.json").read_text())
    import base64

    new_ca = pki.crt("front-proxy-ca").read_bytes()
    for name in ("master1", "master2", "master3"):
        assert base64.b64decode(state[name]["/etc/kubernetes/pki/front-proxy-ca.crt"]) == new_ca
        assert base64.b64decode(state[name]["/etc/kubernetes/pki/front-proxy-client.crt"]) == \
            pki.crt("front-proxy-client").read_bytes()

    # Finished: a third run starts a new rotation only when asked again; upgrade is no longer refused for it.
    upgrade = kubexm("upgrade", "cluster", "--to-version", "v1.34.3", "--plan", "-f", str(sample), home=home)
    assert "rotation" not in upgrade.stderr


def test_upgrade_is_refused_while_a_service_account_key_rotation_is_unfinished(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    pki = pki_of(sample, home)
    pki.root.mkdir(parents=True)
    (pki.root / "sa-rotation.json").write_text(json.dumps({"phase": "sign", "started": 1, "grace_seconds": 60}))
    res = kubexm("upgrade", "cluster", "--to-version", "v1.34.3", "-y", "-f", str(sample), home=home)
    assert res.returncode == 2
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "service-account key rotation is in progress" in errors[0]
    assert "kubexm token rotate" in res.stderr

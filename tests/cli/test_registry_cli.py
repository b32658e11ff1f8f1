"""`kubexm registry up|down` and `kubexm offline sync`, each command line in its own process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.process import cli_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the registry fixtures live in tests/registry

from registry.conftest import PASSWORD, USER, RunningRegistry, free_port, start_registry, stop
from registry.oci import LayoutWriter, multiarch

KUBEXM = str(Path(sys.executable).with_name("kubexm"))
BROKEN = ("Traceback (most recent call last)", "internal error", "No such command", "No such option")
# Until the offline verb attaches `sync` (kubexm.cli.offline), the function runs under the same entry point
# and error handling as `kubexm`, in its own process all the same.
HARNESS = """
import sys, typer
from kubexm.cli import main
from kubexm.cli.offline_sync import offline_sync
group = typer.Typer()
group.command("sync")(offline_sync)
group.command("unused", hidden=True)(lambda: None)
main.app.add_typer(group, name="offline")
main._registered.add("offline")
sys.exit(main.run_cli(sys.argv[1:]))
"""


def kubexm(*args: str, home: Path, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=cli_env(home), timeout=timeout,
                         input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)
    for sign in BROKEN:
        assert sign not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


def _sync_wired(home: Path) -> bool:
    res = subprocess.run([KUBEXM, "offline", "sync", "--help"], capture_output=True, text=True, env=cli_env(home),
                         stdin=subprocess.DEVNULL, timeout=60)
    return res.returncode == 0


def offline_sync(*args: str, home: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    argv = [KUBEXM] if _sync_wired(home) else [sys.executable, "-c", HARNESS]
    res = subprocess.run([*argv, "offline", "sync", *args], capture_output=True, text=True, env=cli_env(home),
                         input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL, timeout=120)
    for sign in BROKEN:
        assert sign not in res.stdout + res.stderr, res.stdout + res.stderr
    return res


CLUSTER = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: regcli}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - {name: reg1, address: 10.0.0.9}
  roleGroups: {etcd: [cp1], control-plane: [cp1], registry: [reg1]}
"""


def test_registry_up_without_a_registry_type_is_one_line(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(CLUSTER)
    res = kubexm("registry", "up", "-f", str(spec), home=tmp_path / "home")
    assert res.returncode == 1
    assert res.stderr.startswith("error: spec.registry.type is 'none'") and "hint: set spec.registry.type" in res.stderr
    assert not [p for p in (tmp_path / "home").rglob("*") if p.is_file() and "cache" not in p.parts], \
        "a refused command records nothing (no state, run, audit entry or lock)"


def test_registry_up_names_the_missing_auths_entry(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(CLUSTER + "  registry: {type: docker-registry}\n")
    res = kubexm("registry", "up", "-f", str(spec), home=tmp_path / "home")
    assert res.returncode == 1
    assert "spec.registry.auths has no entry for the registry (10.0.0.9:5000)" in res.stderr


def test_registry_down_needs_yes_without_a_terminal(tmp_path: Path) -> None:
    spec = tmp_path / "c.yaml"
    spec.write_text(CLUSTER + "  registry: {type: docker-registry}\n")
    res = kubexm("registry", "down", "-f", str(spec), "--purge", home=tmp_path / "home")
    assert res.returncode == 2
    assert "refusing to stop the registry on reg1 and delete its images in /var/lib/docker-registry" in res.stderr
    assert "--yes" in res.stderr


@pytest.fixture
def reg(tmp_path: Path) -> Iterator[RunningRegistry]:
    r = start_registry(tmp_path / "registry")
    yield r
    stop(r)


def test_offline_sync_pushes_and_a_rerun_reports_nothing_to_push(reg: RunningRegistry, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    digest = multiarch(LayoutWriter(bundle / "app"), "example.com/team/app:v1", b"shared")
    home = tmp_path / "home"
    args = (str(bundle), "--registry", reg.address, "--username", USER, "--password-stdin", "--ca-file",
            str(reg.ca_file))
    res = offline_sync(*args, home=home, stdin=PASSWORD + "\n")
    assert res.returncode == 0, res.stderr
    assert f"+ {reg.address}/team/app:v1 (pushed)" in res.stdout and "1 images: 1 pushed" in res.stdout
    again = offline_sync(*args, "-o", "json", home=home, stdin=PASSWORD + "\n")
    assert again.returncode == 0, again.stderr
    doc = json.loads(again.stdout)
    assert [(i["status"], i["digest"]) for i in doc["images"]] == [("present", digest)]
    assert set(doc["requests"]) <= {"GET", "HEAD"}


def test_offline_sync_errors_are_one_line(reg: RunningRegistry, tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    multiarch(LayoutWriter(bundle / "app"), "example.com/team/app:v1", b"shared")
    home = tmp_path / "home"
    wrong = offline_sync(str(bundle), "--registry", reg.address, "--username", USER, "--password-stdin",
                         "--ca-file", str(reg.ca_file), home=home, stdin="not-it\n")
    assert wrong.returncode == 3
    assert wrong.stderr.splitlines()[0] == f"error: registry {reg.address} rejected user '{USER}' (401 Unauthorized)"
    assert "not-it" not in wrong.stdout + wrong.stderr

    down = offline_sync(str(bundle), "--registry", f"127.0.0.1:{free_port()}", "--insecure", home=home)
    assert down.returncode == 1 and "refused the connection: it is not running there" in down.stderr

    argv_password = offline_sync(str(bundle), "--registry", reg.address, "--username", USER, home=home)
    assert argv_password.returncode == 2 and "--username needs --password-stdin" in argv_password.stderr

    bad = offline_sync(str(bundle), "--registry", "https://reg.example.com", home=home)
    assert bad.returncode == 2 and "--registry 'https://reg.example.com'" in bad.stderr

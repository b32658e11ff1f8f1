"""Secrets at rest: a stored spec (secrets redacted) is never run with the placeholder as a secret, and a secret
given on the command line (`--set`/`-e`) never reaches the run history, the audit log or a lock file."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from support.memory import MemoryFleet

import kubexm.hosts.pool as pool_module
from kubexm import api
from kubexm.cli.main import run_cli
from kubexm.engine import RunOptions
from kubexm.errors import StateError
from kubexm.spec.dump import dump_cluster, redacted_secrets
from kubexm.spec.loader import load_cluster, parse_cluster
from kubexm.spec.sample import sample_config
from kubexm.state.audit import AuditLog
from kubexm.state.redact import redact_command_line, secret_field_names
from kubexm.state.store import Store

SUDO_PW, REG_PW = "sudo-Pw-8812", "reg-Pw-5521"


def _with_secrets(text: str) -> str:
    key = "privateKeyPath: ~/.ssh/id_ed25519"
    text = text.replace(key, f"{key}\n      sudoPassword: {SUDO_PW}", 1)
    return text + f"  registry:\n    auths:\n      - registry: reg.example.test\n        username: u\n        password: {REG_PW}\n"


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(_with_secrets(sample_config("demo")))
    return path


def _store(cluster_file: Path) -> None:
    cluster = load_cluster(cluster_file)
    store = Store()
    store.save_cluster("demo", dump_cluster(cluster, secrets=False), "ok", str(cluster_file))
    store.use_context("demo")
    store.close()


def test_secret_fields_are_found_in_the_models() -> None:
    assert {"password", "sudopassword", "sudo_password", "privatekeypassphrase"} <= secret_field_names()


def test_stored_spec_with_redacted_secrets_is_refused_without_its_file(cluster_file: Path) -> None:
    _store(cluster_file)
    cluster = api.resolve_cluster(context="demo")  # the file is there: it is re-read, secrets included
    assert cluster.spec.hosts[0].sudo_password is not None
    assert cluster.spec.hosts[0].sudo_password.get_secret_value() == SUDO_PW
    cluster_file.unlink()
    with pytest.raises(StateError) as err:
        api.resolve_cluster(context="demo")
    assert str(err.value.message) == (
        f"cluster demo: the stored spec keeps its secrets redacted (spec.hosts[0].sudoPassword, "
        f"spec.registry.auths[0].password) and its cluster file {cluster_file} is gone: the cluster file is needed")
    assert err.value.hint == "pass -f FILE" and "\n" not in err.value.message
    # every missing secret given again: usable
    given = api.resolve_cluster(context="demo", overrides=[
        "spec.hosts[0].sudoPassword=again", "spec.registry.auths[0].password=again"])
    assert redacted_secrets(given) == []


def test_stored_spec_without_secrets_is_still_usable(tmp_path: Path) -> None:
    path = tmp_path / "plain.yaml"
    path.write_text(sample_config("plain"))
    store = Store()
    store.save_cluster("plain", dump_cluster(load_cluster(path), secrets=False), "ok", str(path))
    store.close()
    path.unlink()
    assert api.resolve_cluster(context="plain").name == "plain"


def test_the_cli_refuses_a_stored_cluster_whose_secrets_are_gone(cluster_file: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    _store(cluster_file)
    cluster_file.unlink()
    assert run_cli(["run", "command", "-c", "demo", "--", "id"]) == 1
    err = capsys.readouterr().err
    assert re.search(r"error: cluster demo: .*the cluster file is needed", err) and "hint: pass -f FILE" in err


def test_a_spec_carrying_the_placeholder_is_never_run(cluster_file: Path) -> None:
    # e.g. a file written from `describe cluster` output: refused at the engine's door whatever its origin
    text = cluster_file.read_text().replace(SUDO_PW, "<redacted>")
    cluster = parse_cluster(text)
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    with pytest.raises(StateError, match=r"has <redacted> where a secret belongs \(spec.hosts\[0\].sudoPassword\)"):
        api.run_command(cluster, "id", RunOptions(), factory=fleet.factory)
    assert fleet["master1"].commands == []
    store = Store()
    assert store.runs() == [] and AuditLog(store).entries() == []


@pytest.mark.parametrize(("line", "expected"), [
    ("kubexm create cluster -f c.yaml --set=spec.hosts.0.sudoPassword=hunter2",
     "kubexm create cluster -f c.yaml '--set=spec.hosts.0.sudoPassword=<redacted>'"),
    ("kubexm create cluster --set spec.hosts[0].password=hunter2", "kubexm create cluster --set "
     "'spec.hosts[0].password=<redacted>'"),
    ("kubexm create cluster -e spec.registry.auths[0].password=hunter2",
     "kubexm create cluster -e 'spec.registry.auths[0].password=<redacted>'"),
    ("kubexm create cluster -espec.hosts[1].privateKeyPassphrase=hunter2",
     "kubexm create cluster '-espec.hosts[1].privateKeyPassphrase=<redacted>'"),
    ("kubexm create cluster --set 'spec.registry.auths=[{registry: r, username: u, password: hunter2}]'",
     "kubexm create cluster --set 'spec.registry.auths=<redacted>'"),
    ("kubexm create cluster --set 'spec.hosts[0]={name: a, address: b, sudoPassword: hunter2}'",
     "kubexm create cluster --set 'spec.hosts[0]=<redacted>'"),
    ("kubexm create cluster --set spec.bastions[0].password=hunter2 -e spec.kubernetes.version=v1.33.1",
     "kubexm create cluster --set 'spec.bastions[0].password=<redacted>' -e spec.kubernetes.version=v1.33.1"),
    ("kubexm run task Foo -e spec.kubernetes.version=v1.33.1", "kubexm run task Foo -e spec.kubernetes.version=v1.33.1"),
])
def test_command_line_redaction(line: str, expected: str) -> None:
    assert redact_command_line(line) == expected


def test_set_secret_never_reaches_history_audit_or_lock(cluster_file: Path, kubexm_home: Path) -> None:
    overrides = ["spec.hosts[1].sudoPassword=set-Pw-1", "spec.registry.auths[0].password=set-Pw-2"]
    cluster = load_cluster(cluster_file, overrides)
    line = (f"kubexm run command -f {cluster_file} --set=spec.hosts[1].sudoPassword=set-Pw-1 "
            "-e spec.registry.auths[0].password=set-Pw-2 -- id")
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    outcome = api.run_command(cluster, "id", RunOptions(), command_line=line, factory=fleet.factory)
    assert outcome.ok
    store = Store()
    (run,) = store.runs("demo")
    assert run.status == "ok" and "set-Pw" not in run.command and run.command.count("<redacted>") == 2
    entries = AuditLog(store).entries()
    assert [e.status for e in entries] == ["started", "ok"]
    assert all("set-Pw" not in e.action and "<redacted>" in e.action for e in entries)
    store.close()
    for path in kubexm_home.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"set-Pw" not in data, path
            # The parse cache (spec/parse_cache.py) is tests/integration/test_secrets_never_leak.py's business.
            if "cache" not in path.relative_to(kubexm_home).parts:
                assert SUDO_PW.encode() not in data and REG_PW.encode() not in data, path


def test_set_secret_through_the_cli(cluster_file: Path, kubexm_home: Path, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    monkeypatch.setattr(pool_module, "default_factory", lambda cluster: fleet.factory)
    argv = ["run", "task", "-f", str(cluster_file), "-y", "--set=spec.hosts[0].sudoPassword=cli-Pw-3", "CheckCerts"]
    monkeypatch.setattr(sys, "argv", ["kubexm", *argv])
    code = run_cli(argv)
    out, err = capsys.readouterr()
    assert code in (0, 1), out + err  # the outcome on fake hosts does not matter, what was recorded does
    store = Store()
    (run,) = store.runs("demo")
    assert "--set=spec.hosts[0].sudoPassword=<redacted>" in run.command
    started, ended = AuditLog(store).entries()
    assert started.status == "started" and ended.status in ("ok", "failed") and "cli-Pw-3" not in started.action
    store.close()
    for path in kubexm_home.rglob("*"):
        if path.is_file():
            assert b"cli-Pw-3" not in path.read_bytes(), path


def test_plans_health_and_logs_refuse_the_marker_before_connecting(cluster_file: Path, tmp_path: Path) -> None:
    """Every way of reaching hosts goes through api.run_context, so the refusal holds for the commands that
    do not run a pipeline through api.execute too."""
    from kubexm.diagnostics.health_checks import take_report
    from kubexm.diagnostics.logs import collect
    from kubexm.governance.plan import plan_impact
    from kubexm.pipelines.cluster import CREATE_CLUSTER

    cluster = parse_cluster(cluster_file.read_text().replace(SUDO_PW, "<redacted>"))
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    match = r"has <redacted> where a secret belongs"
    with pytest.raises(StateError, match=match):
        take_report(cluster, RunOptions(), factory=fleet.factory)
    with pytest.raises(StateError, match=match):
        collect(cluster, RunOptions(), tmp_path / "bundle.tar.gz", factory=fleet.factory)
    items = CREATE_CLUSTER.plan(cluster, set(), set())
    with pytest.raises(StateError, match=match):
        plan_impact(cluster, items, RunOptions(), operation="cluster", factory=fleet.factory)
    assert all(fleet[n].commands == [] for n in ("master1", "worker1", "worker2"))
    assert not (tmp_path / "bundle.tar.gz").exists()

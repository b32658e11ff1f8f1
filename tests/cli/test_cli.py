"""The CLI as a user meets it: exit codes, one-line errors, outputs, state and audit."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from support.memory import MemoryFleet

import kubexm.hosts.pool as pool_module
from kubexm.cli.main import run_cli
from kubexm.spec.models import DEFAULT_K8S_VERSION
from kubexm.spec.sample import sample_config


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run_cli(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fleet(monkeypatch: pytest.MonkeyPatch) -> MemoryFleet:
    """Every connection the CLI opens goes to in-memory hosts that pass preflight."""
    fleet = MemoryFleet(["master1", "worker1", "worker2"])
    for name in ("master1", "worker1", "worker2"):
        fleet[name].on(r"cmd_sh=", lambda h, m, s: (0, _probe_ok(m.string), ""))
        fleet[name].on(r"^uname -r$", lambda h, m, s: (0, f"6.1.0-{h.name}\n", ""))
        fleet[name].on(r"^exit 7$", lambda h, m, s: (7, "", f"boom on {h.name}\n"))
    monkeypatch.setattr(pool_module, "default_factory", lambda cluster: fleet.factory)
    return fleet


def _probe_ok(script: str) -> str:
    import re
    import time

    lines = [f"cmd_{c}=1" for c in re.findall(r"command -v (\S+) >/dev/null 2>&1 && echo cmd_", script)]
    lines += ["listen=22", "dns_self=1", "have_bash=1", f"now={time.time()}"]
    # Every peer probe named in the script answers "refused": reachable, nothing listening yet.
    lines += [f"reach_{p}_{port}=refused" for p, port in dict.fromkeys(re.findall(r"reach_(\w+)_(\d+)\b", script))]
    return "\n".join(lines) + "\n"


@pytest.fixture
def cluster_file(tmp_path: Path) -> Path:
    path = tmp_path / "cluster.yaml"
    path.write_text(sample_config("demo"))
    return path


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "version")
    assert code == 0 and out.startswith("kubexm ")


def test_create_config_writes_a_loadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    target = tmp_path / "c.yaml"
    code, out, _ = cli(capsys, "create", "config", "--name", "edge", "--with-ha", "-o", str(target))
    assert code == 0 and "wrote" in out
    code, _, err = cli(capsys, "create", "config", "-o", str(target))
    assert code == 2 and "already exists" in err and "--force" in err
    from kubexm.spec.loader import load_cluster

    assert load_cluster(target).name == "edge"


def test_malformed_file_is_one_line_exit_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(sample_config().replace("podCidr", "podCIDR"))
    code, out, err = cli(capsys, "create", "cluster", "-f", str(bad), "--dry-run")
    assert code == 2
    assert "Traceback" not in err + out
    assert f"error: {bad}:" in err and "unknown field 'podCIDR'; did you mean 'podCidr'?" in err
    code, _, err = cli(capsys, "create", "cluster", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2 and "no such file" in err and "hint:" in err


def test_offline_plan_does_not_connect(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(cluster: Any) -> Any:
        def connect(host: Any, options: Any) -> Any:
            raise AssertionError("an offline plan must not connect")
        return connect

    monkeypatch.setattr(pool_module, "default_factory", refuse)
    code, out, _ = cli(capsys, "create", "cluster", "-f", str(cluster_file), "--dry-run", "--offline")
    assert code == 0
    assert "? master1: check OS" in out and "planned" in out
    code, _, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "--offline")
    assert code == 2 and "--offline only makes sense with --dry-run" in err


def test_create_records_state_context_and_audit(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                                fleet: MemoryFleet, kubexm_home: Path) -> None:
    code, out, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "-y", "--tags", "preflight")
    assert code == 0, out + err
    assert "Preflight" in out and "done:" in out
    code, out, _ = cli(capsys, "get", "clusters", "-o", "json")
    (row,) = json.loads(out)
    assert row["name"] == "demo" and row["current"] and row["status"] == "ok"
    code, out, _ = cli(capsys, "get", "nodes", "-o", "yaml")
    assert "name: worker2" in out and "- control-plane" in out
    code, out, _ = cli(capsys, "get", "nodes", "-o", "wide")
    assert "INTERNAL" in out and "192.168.0.12" in out
    code, out, _ = cli(capsys, "describe", "cluster")
    assert "Cluster demo" in out and "Recent runs" in out
    code, out, _ = cli(capsys, "config", "get-contexts")
    assert "*" in out and "demo" in out
    code, _, err = cli(capsys, "config", "use-context", "nope")
    assert code == 1 and "no cluster named 'nope'" in err
    code, out, _ = cli(capsys, "audit", "-o", "json")
    entries = json.loads(out)
    assert entries and all(e["target"] == "demo" for e in entries) and any(e["status"] == "ok" for e in entries)
    code, out, _ = cli(capsys, "audit", "verify")
    assert code == 0 and "intact:" in out
    db = sqlite3.connect(kubexm_home / "state.db")
    db.execute("UPDATE audit SET user='mallory' WHERE id=1")
    db.commit()
    db.close()
    code, _, err = cli(capsys, "audit", "verify")
    assert code == 1 and "audit entry 1" in err and "altered" in err


def test_run_command_output_and_exit_codes(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                           fleet: MemoryFleet) -> None:
    code, out, _ = cli(capsys, "run", "command", "-f", str(cluster_file), "--nodes", "*", "--", "uname", "-r")
    assert code == 0
    for name in ("master1", "worker1", "worker2"):
        assert f"== {name} (exit 0)" in out and f"6.1.0-{name}" in out
    code, out, _ = cli(capsys, "run", "command", "-f", str(cluster_file), "--nodes", "worker*", "--", "exit 7")
    assert code == 1
    assert "== worker1 (exit 7)" in out and "boom on worker2" in out and "master1" not in out.split("failure")[0]
    code, _, err = cli(capsys, "run", "command", "-f", str(cluster_file), "--nodes", "db*", "--", "true")
    assert code == 2 and "--nodes 'db*' matches no host" in err


def test_json_log_format_is_one_event_per_line(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                               fleet: MemoryFleet) -> None:
    code, out, _ = cli(capsys, "create", "cluster", "-f", str(cluster_file), "--dry-run", "--log-format", "json",
                       "--tags", "preflight")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    kinds = {e["kind"] for e in events}
    assert {"run.start", "task.start", "step.end", "report", "run.end"} <= kinds


def test_run_task_by_name(capsys: pytest.CaptureFixture[str], cluster_file: Path, fleet: MemoryFleet) -> None:
    code, out, _ = cli(capsys, "run", "task", "PreflightChecks", "-f", str(cluster_file))
    assert code == 0 and "Preflight" in out
    code, _, err = cli(capsys, "run", "task", "Preflight", "-f", str(cluster_file))
    assert code == 2 and "did you mean" in err


def test_generate_docs_and_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "generate", "docs")
    assert code == 0
    for command in ("kubexm create cluster", "kubexm run command", "kubexm get nodes", "kubexm audit verify",
                    "kubexm config use-context", "kubexm generate schema", "--dry-run", "PreflightChecks"):
        assert command in out, command
    code, out, _ = cli(capsys, "generate", "schema")
    assert json.loads(out)["title"].startswith("kubexm Cluster")


def test_completion_script(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "completion", "bash")
    assert code == 0 and "_KUBEXM_COMPLETE=complete_bash" in out
    code, out, _ = cli(capsys, "completion", "zsh")
    assert code == 0 and out.strip().startswith("#compdef kubexm")
    code, out, _ = cli(capsys, "completion", "fish")
    assert code == 0 and out.startswith("complete --command kubexm")
    code, _, err = cli(capsys, "completion", "tcsh")
    assert code == 1 and "bash, zsh, fish" in err


def test_locked_cluster_is_refused(capsys: pytest.CaptureFixture[str], cluster_file: Path, fleet: MemoryFleet) -> None:
    from kubexm.state.lock import cluster_lock

    with cluster_lock("demo", "kubexm create cluster -f other.yaml"):
        code, _, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "-y")
    assert code == 4 and "cluster demo is busy" in err


def test_secret_overrides_never_reach_history_or_audit(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                                       fleet: MemoryFleet, kubexm_home: Path) -> None:
    import sys as _sys

    from kubexm.cli.common import command_line

    assert command_line(["run", "command", "-e", "spec.hosts[0].sudoPassword=hunter2", "--", "id"]) == \
        "kubexm run command -e 'spec.hosts[0].sudoPassword=<redacted>' -- id"
    argv = ["create", "cluster", "-f", str(cluster_file), "-y", "--tags", "preflight",
            "-e", "spec.hosts[1].password=s3cr3t-value"]
    old = _sys.argv
    _sys.argv = ["kubexm", *argv]
    try:
        code, out, err = cli(capsys, *argv)
    finally:
        _sys.argv = old
    assert code == 0, out + err
    raw = (kubexm_home / "state.db").read_bytes()
    assert b"s3cr3t-value" not in raw
    code, out, _ = cli(capsys, "audit", "-o", "json")
    assert "s3cr3t-value" not in out and "<redacted>" in out


class _Captured(Exception):
    pass


def _reaching_commands(cluster_file: Path, tmp_path: Path) -> list[list[str]]:
    f = str(cluster_file)
    return [["create", "cluster", "-f", f, "-y"], ["run", "command", "-f", f, "--", "true"],
            ["run", "task", "PreflightChecks", "-f", f], ["backup", "cluster", "-f", f, "--to-location", str(tmp_path)],
            ["certs", "check", "-f", f], ["certs", "renew", "-f", f, "-y"],
            ["add", "nodes", "-f", f, "--nodes", "worker1", "-y"], ["delete", "nodes", "-f", f, "--nodes", "worker1", "-y"],
            ["delete", "cluster", "-f", f, "-y"], ["delete", "addon", "hello", "-f", f, "-y"],
            ["upgrade", "cluster", "-f", f, "--to-version", "v1.34.3", "-y"], ["cordon", "node", "worker1", "-f", f],
            ["uncordon", "node", "worker1", "-f", f], ["restart", "component", "kubelet", "-f", f, "-y"]]


def test_command_timeout_reaches_the_connections(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                                  tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kubexm.api as api

    seen: list[Any] = []

    def capture(cluster: Any, items: Any, options: Any, **kwargs: Any) -> Any:
        seen.append(options.connect.command_timeout)
        raise _Captured

    monkeypatch.setattr(api, "execute", capture)
    for args in _reaching_commands(cluster_file, tmp_path):
        seen.clear()
        cli(capsys, *args)
        assert seen == [None], args  # not given: the per-kind defaults of the hosts layer apply
        seen.clear()
        end = args.index("--") if "--" in args else len(args)
        cli(capsys, *args[:end], "--command-timeout", "7.5", *args[end:])
        assert seen == [7.5], args


def test_confirmation_on_a_terminal(capsys: pytest.CaptureFixture[str], cluster_file: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """On a terminal the question is asked; "no" changes nothing, "yes" goes ahead."""
    import kubexm.api as api

    ran: list[str] = []

    def execute(*args: Any, **kwargs: Any) -> Any:
        ran.append(kwargs["name"])
        raise _Captured

    monkeypatch.setattr(api, "execute", execute)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    answers = iter([False, True])
    monkeypatch.setattr("typer.confirm", lambda question, default=False: next(answers))
    code, _, err = cli(capsys, "delete", "cluster", "-f", str(cluster_file))
    assert code == 1 and "nothing was changed" in err and ran == []
    cli(capsys, "delete", "cluster", "-f", str(cluster_file))
    assert ran == ["DeleteClusterPipeline"]


def test_unknown_tags_are_refused_before_anything_runs(capsys: pytest.CaptureFixture[str], cluster_file: Path) -> None:
    code, _, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "-y", "--tags", "etcd,ectd")
    assert code == 2 and "unknown tag ectd" in err and "known tags:" in err and "loadbalancer" in err
    code, _, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "-y", "--skip-tags", "kubernets")
    assert code == 2 and "unknown tag kubernets" in err
    # Module and task names select too, as they always did.
    code, out, err = cli(capsys, "create", "cluster", "-f", str(cluster_file), "--dry-run", "--offline",
                         "--tags", "InstallEtcdCluster,preflight")
    assert code == 0, err
    assert "InstallEtcdCluster" in out and "PrepareNodesOS" not in out


def _next_minor() -> str:
    major, minor = DEFAULT_K8S_VERSION.lstrip("v").split(".")[:2]
    return f"v{major}.{int(minor) + 1}.3"


def test_a_run_that_remembers_stores_the_spec_only_when_it_succeeded(cluster_file: Path, fleet: MemoryFleet,
                                                                      kubexm_home: Path) -> None:
    """What `upgrade cluster` relies on: the next upgrade's skew is judged from the version stored here."""
    from kubexm import api
    from kubexm.cli.common import run_options
    from kubexm.pipelines.adhoc import RUN_COMMAND
    from kubexm.spec.loader import load_cluster

    upgraded = load_cluster(cluster_file)
    assert api.applied_version("demo") is None and not (kubexm_home / "state.db").exists()
    upgraded.spec.kubernetes.version = _next_minor()

    def run(command: str, dry_run: bool = False) -> bool:
        options = run_options(dry_run=dry_run)
        options.extra["command"] = command
        return api.execute(upgraded, RUN_COMMAND.plan(upgraded), options, name="UpgradeClusterPipeline",
                           command_line="kubexm upgrade cluster", remember=True, source=cluster_file,
                           factory=fleet.factory).ok

    assert not run("exit 7")
    assert api.applied_version("demo") is None
    assert run("uname -r", dry_run=True)
    assert api.applied_version("demo") is None
    assert run("uname -r")
    assert api.applied_version("demo") == _next_minor()
    from kubexm.state.store import Store

    store = Store()
    try:  # the row names its cluster file (`-c demo` reads the secrets there); no context switch, unlike create
        row = store.get_cluster("demo")
        assert row is not None and row.source == str(cluster_file.resolve())
        assert store.current_context() is None
    finally:
        store.close()


def test_upgrade_passes_the_running_version_and_remembers_the_new_one(capsys: pytest.CaptureFixture[str],
                                                                       cluster_file: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import kubexm.api as api

    seen: list[tuple[Any, dict[str, Any]]] = []

    def capture(cluster: Any, items: Any, options: Any, **kwargs: Any) -> Any:
        seen.append((options, kwargs))
        raise _Captured

    monkeypatch.setattr(api, "execute", capture)
    for flags, remembered in (([], True), (["--control-plane-only"], True), (["--workers-only"], False)):
        seen.clear()
        cli(capsys, "upgrade", "cluster", "-f", str(cluster_file), "--to-version", _next_minor(), "-y", *flags)
        ((options, kwargs),) = seen
        assert options.extra["from_version"] == DEFAULT_K8S_VERSION  # the sample's
        assert kwargs["remember"] is remembered and kwargs["source"] == cluster_file

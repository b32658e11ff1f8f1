"""The CLI as a new user meets it, each command line in its own process with a fresh $KUBEXM_HOME.

In-process CLI tests share one interpreter, so a sub-command registered by a module an earlier test imported
looks present although a real command line (which imports only its verb's module) does not see it. Here
every command the CLI registers and every command line of README.md runs as ``.venv/bin/kubexm``.
"""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer

from kubexm.cli.main import VERBS, register
from kubexm.spec.models import DEFAULT_K8S_VERSION as SAMPLE_VERSION

ROOT = Path(__file__).resolve().parents[2]
KUBEXM = str(Path(sys.executable).with_name("kubexm"))
README = ROOT / "README.md"
SRC = ROOT / "src" / "kubexm"

# What a broken command surface prints. "internal error" is kubexm's own report of an unexpected exception.
BROKEN = ("No such command", "No such option", "Traceback (most recent call last)", "internal error")


# Typer's command objects (its own copy of click's classes) are read by shape, as `generate docs` does.
Command = Any


def _is_group(cmd: Command) -> bool:
    return hasattr(cmd, "commands")


def _walk(cmd: Command, path: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Command]]:
    yield path, cmd
    if _is_group(cmd):
        for name in sorted(cmd.commands):
            yield from _walk(cmd.commands[name], (*path, name))


COMMANDS: dict[tuple[str, ...], Command] = dict(_walk(typer.main.get_command(register()), ()))
LEAVES = {p: c for p, c in COMMANDS.items() if p and not _is_group(c)}


def _option_params(cmd: Command) -> list[Any]:
    return [p for p in cmd.params if p.param_type_name == "option"]


def _options(cmd: Command) -> set[str]:
    return {o for p in _option_params(cmd) for o in (*p.opts, *p.secondary_opts)}


def _choices(opt: Any) -> set[str]:
    return {str(getattr(c, "value", c)) for c in (getattr(opt.type_descriptor, "choices", None) or ())}


def _resolve(words: list[str]) -> tuple[tuple[str, ...], Command] | None:
    """The registered command a command line names (its longest prefix of command names)."""
    path: tuple[str, ...] = ()
    for word in words:
        if (*path, word) not in COMMANDS:
            break
        path = (*path, word)
    return (path, COMMANDS[path]) if path else None


def kubexm(*args: str, home: Path, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("KUBEXM_DEBUG", None)
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def assert_not_broken(res: subprocess.CompletedProcess[str], line: str) -> None:
    for sign in BROKEN:
        assert sign not in res.stdout + res.stderr, f"{line}\n{res.stdout}\n{res.stderr}"


# -- every registered command, --help ------------------------------------------------------------------------------

@pytest.mark.parametrize("path", sorted(COMMANDS), ids=lambda p: " ".join(p) or "kubexm")
def test_every_command_has_help(path: tuple[str, ...], tmp_path: Path) -> None:
    res = kubexm(*path, "--help", home=tmp_path / "home")
    assert_not_broken(res, " ".join(path))
    assert res.returncode == 0, res.stderr
    cmd = COMMANDS[path]
    if _is_group(cmd) and path:
        for sub in cmd.commands:  # the verb's process imported its own module only: all of them must be there
            assert re.search(rf"^\W*{re.escape(sub)}\b", res.stdout, re.M), f"{' '.join(path)} --help lacks {sub}"


PROBE = """
import json, sys, typer
from kubexm.cli.main import app, register
register([sys.argv[1]])
group = typer.main.get_command(app).commands[sys.argv[1]]
print(json.dumps(sorted(getattr(group, "commands", {}))))
"""


@pytest.mark.parametrize("verb", [v for v in VERBS if (v,) in COMMANDS])
def test_each_verb_module_alone_registers_all_its_sub_commands(verb: str) -> None:
    """What a command line loads (only this verb's module) must hold every sub-command of the verb."""
    out = subprocess.run([sys.executable, "-c", PROBE, verb], capture_output=True, text=True, check=True).stdout
    alone = json.loads(out.strip().splitlines()[-1])
    with_all = sorted(getattr(COMMANDS[(verb,)], "commands", {}))
    assert alone == with_all


# -- README.md ----------------------------------------------------------------------------------------------------

def readme_lines() -> list[str]:
    """kubexm command lines of README.md's code blocks."""
    lines: list[str] = []
    for block in re.findall(r"```(?:sh|bash|console)?\n(.*?)```", README.read_text(), re.S):
        lines += [ln.strip() for ln in block.splitlines() if re.match(r"\s*(\.venv/bin/)?kubexm\s", ln)]
    return list(dict.fromkeys(lines))


def readme_mentions() -> list[str]:
    """Commands README.md's prose names (`kubexm ...`): references, checked with --help."""
    prose = re.sub(r"```.*?```", "", README.read_text(), flags=re.S)
    return list(dict.fromkeys(re.findall(r"`((?:\.venv/bin/)?kubexm [^`]+)`", prose)))


# Commands that only read (or write only what the command line names): run as written.
READS = {("create", "config"), ("get", "clusters"), ("get", "nodes"), ("describe", "cluster"), ("config",),
         ("audit",), ("generate",), ("version",)}
# Under a READS verb but reaching hosts: planned like any other command.
REACHES = {("config", "diff"), ("config", "sync")}


def plan_for(line: str) -> list[str]:
    """The arguments to run for a README line: as written when harmless, else --dry-run --offline or --help."""
    words = shlex.split(line, comments=True)
    words = [w[1:-1] if w.startswith("[") and w.endswith("]") else w for w in words[1:]]  # `[--force]`: optional
    found = _resolve(words)
    assert found is not None, f"README line names no kubexm command: {line}"
    path, cmd = found
    if words[:1] == ["lab"]:
        return [*path, "--help"]
    if (any(path[: len(r)] == r for r in READS) and path not in REACHES) \
            or (path == ("upgrade", "cluster") and "--plan" in words):
        return words
    end = words.index("--") if "--" in words else len(words)
    head, tail = words[:end], words[end:]
    if {"--dry-run", "--offline"} <= _options(cmd):
        head = [w for w in head if w not in ("-y", "--yes")]
        head += [f for f in ("--dry-run", "--offline") if f not in head]
        return head + tail
    return [*head, "--help", *tail]


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    where = tmp_path_factory.mktemp("sample")
    res = kubexm("create", "config", "--name", "prod", "--with-ha", "-o", str(where / "cluster.yaml"),
                 home=where / "home")
    assert res.returncode == 0, res.stderr
    return where / "cluster.yaml"


def _seed_context(home: Path, cluster_file: Path) -> None:
    """The state `create cluster -f cluster.yaml` leaves, so `get nodes` and friends have a current context."""
    from kubexm.state.store import Store

    home.mkdir(parents=True, exist_ok=True)
    store = Store(home / "state.db")
    try:
        store.save_cluster("prod", cluster_file.read_text(), "ok", str(cluster_file))
        store.use_context("prod")
    finally:
        store.close()


@pytest.mark.parametrize("line", readme_lines())
def test_readme_command_line(line: str, sample: Path, tmp_path: Path) -> None:
    args = plan_for(line)
    home = tmp_path / "home"
    work = tmp_path / "work"
    work.mkdir()
    if tuple(args[:2]) != ("create", "config"):
        (work / "cluster.yaml").write_text(sample.read_text())
        _seed_context(home, work / "cluster.yaml")
    res = kubexm(*args, home=home, cwd=work)
    assert_not_broken(res, line)
    if "--help" in args or "--offline" in args or tuple(args[:1]) in {("create",), ("get",), ("generate",)}:
        assert res.returncode == 0, f"{shlex.join(args)}\n{res.stdout}\n{res.stderr}"


@pytest.mark.parametrize("mention", readme_mentions())
def test_readme_mentions_name_real_commands(mention: str, tmp_path: Path) -> None:
    words = shlex.split(mention)[1:]
    found = _resolve(words)
    assert found is not None, mention
    flags = [w for w in words[len(found[0]):] if w.startswith("-")]
    res = kubexm(*found[0], *flags, "--help", home=tmp_path / "home")
    assert_not_broken(res, mention)
    assert res.returncode == 0, res.stderr


def test_readme_has_command_lines() -> None:
    lines = readme_lines()
    assert len(lines) > 20 and any(ln.startswith(".venv/bin/kubexm delete cluster") for ln in lines)


# -- confirmation ---------------------------------------------------------------------------------------------------

def _changed(home: Path) -> list[str]:
    """Files a refused command left in $KUBEXM_HOME: none (no state, run, audit entry or lock); the parse
    cache may hold the cluster file it read."""
    if not home.exists():
        return []
    return [str(p.relative_to(home)) for p in sorted(home.rglob("*")) if p.is_file() and p.parts[len(home.parts)] != "cache"]


DESTRUCTIVE = [
    ["delete", "cluster"],
    ["delete", "nodes", "--nodes", "worker1"],
    ["delete", "addon", "hello"],
    ["upgrade", "cluster", "--to-version", "v1.34.3"],
    ["certs", "renew"],
    ["add", "nodes", "--nodes", "worker1", "--role", "worker"],
    ["restart", "component", "kubelet"],
    ["run", "task", "PrepareNodesOS"],
    ["create", "cluster"],
]


@pytest.mark.parametrize("args", DESTRUCTIVE, ids=lambda a: " ".join(a[:2]))
def test_without_a_terminal_changing_commands_need_yes(args: list[str], sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    before = sample.read_bytes()
    res = kubexm(*args, "-f", str(sample), home=home, timeout=30)
    assert res.returncode != 0
    errors = res.stderr.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error:") and "--yes" in errors[0], res.stderr
    assert res.stdout == ""
    assert sample.read_bytes() == before
    assert _changed(home) == []


def test_restore_without_a_terminal_needs_yes(sample: Path, tmp_path: Path) -> None:
    """restore verifies its archive before asking: a valid one reaches the question, which is refused."""
    import hashlib
    import io
    import tarfile

    archive = tmp_path / "prod-etcd-20250101T000000Z.tar.gz"
    snapshot = b"snapshot"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        meta = json.dumps({"cluster": "prod", "snapshot_sha256": hashlib.sha256(snapshot).hexdigest()}).encode()
        for name, data in (("snapshot.db", snapshot), ("meta.json", meta)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive.write_bytes(buf.getvalue())
    Path(f"{archive}.sha256").write_text(f"{hashlib.sha256(buf.getvalue()).hexdigest()}  {archive.name}\n")
    home = tmp_path / "home"
    res = kubexm("restore", "cluster", "-f", str(sample), "--from", str(archive), home=home)
    assert res.returncode != 0
    (line,) = res.stderr.strip().splitlines()
    assert "--yes" in line and "prod" in line
    assert _changed(home) == []


def test_dry_run_needs_no_confirmation(sample: Path, tmp_path: Path) -> None:
    res = kubexm("create", "cluster", "-f", str(sample), "--dry-run", "--offline", "--tags", "etcd",
                 home=tmp_path / "home")
    assert res.returncode == 0, res.stderr
    assert "planned" in res.stdout


def test_create_cluster_on_this_machine_needs_local(tmp_path: Path) -> None:
    res = kubexm("create", "cluster", "-y", home=tmp_path / "home")
    assert res.returncode == 2
    assert "--local" in res.stderr.splitlines()[0]
    res = kubexm("create", "cluster", "--local", "--dry-run", "--offline", "--tags", "preflight",
                 home=tmp_path / "home")
    assert res.returncode == 0, res.stderr


# -- flags: tags, hints, -o, --command-timeout ---------------------------------------------------------------------

def test_unknown_tags_are_refused_with_the_known_ones(sample: Path, tmp_path: Path) -> None:
    for flag in ("--tags", "--skip-tags"):
        res = kubexm("create", "cluster", "-f", str(sample), "--dry-run", "--offline", flag, "etcd,nope",
                     home=tmp_path / "home")
        assert res.returncode == 2
        (line,) = res.stderr.strip().splitlines()
        assert "nope" in line and "known tags:" in line and "etcd" in line and "runtime" in line


def _hint_texts() -> Iterator[tuple[str, str]]:
    """(file:line, text) of every hint string in the product code: the literal parts of f-strings too."""
    for path in sorted(SRC.rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.keyword) and node.arg == "hint":
                value: ast.expr = node.value
            elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "hint" for t in node.targets):
                value = node.value
            else:
                continue
            for sub in ast.walk(value):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    yield f"{path.relative_to(ROOT)}:{sub.lineno}", sub.value


def test_hints_name_commands_and_flags_that_exist() -> None:
    every_option = {o for c in COMMANDS.values() for o in _options(c)} | {"--help"}
    problems = []
    for where, text in _hint_texts():
        for span in re.findall(r"`kubexm ([^`]*)`", text):
            words = span.split()
            found = _resolve(words)
            rest = words[len(found[0]):] if found else words
            if found is None or (_is_group(found[1]) and rest and not rest[0].startswith("-")):
                problems.append(f"{where}: `kubexm {span}` is no command")
                continue
            for flag in re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", span):
                if flag not in _options(found[1]) | {"--help"}:
                    problems.append(f"{where}: `kubexm {span}`: {' '.join(found[0])} has no {flag}")
        outside = re.sub(r"`[^`]*`", "", text)
        for flag in re.findall(r"(?<![\w-])(--[a-z][\w-]*)", outside):
            if flag not in every_option:
                problems.append(f"{where}: no command has {flag}")
    assert problems == []


def test_cluster_file_and_stored_cluster_flags_come_together() -> None:
    """The hint for a missing cluster says `-f FILE or -c NAME`: every command reading a cluster has both."""
    for path, cmd in LEAVES.items():
        opts = _options(cmd)
        if path in {("create", "cluster"), ("audit",)} or path[:1] == ("audit",):
            continue
        if "--file" in opts or "--cluster" in opts:
            assert {"-f", "--file", "-c", "--cluster"} <= opts, " ".join(path)


# Commands whose product is a file: -o takes its path (documented so since they were written).
FILE_OUTPUT = {("create", "config"), ("generate", "docs"), ("audit", "export"), ("offline", "package"),
               ("logs", "collect")}
PRINTS_DATA = [("get", "clusters"), ("get", "nodes"), ("describe", "cluster"), ("config", "get-contexts"),
               ("config", "view"), ("audit",)]


def _output_option(cmd: Command) -> Any:
    return next((p for p in _option_params(cmd) if "-o" in p.opts), None)


def test_o_is_a_format_except_where_the_product_is_a_file() -> None:
    for path, cmd in COMMANDS.items():
        opt = _output_option(cmd)
        if opt is None:
            continue
        if path in FILE_OUTPUT:
            assert not _choices(opt), " ".join(path)
        else:
            assert "json" in _choices(opt), " ".join(path)


@pytest.mark.parametrize("path", PRINTS_DATA, ids=lambda p: " ".join(p))
def test_printing_commands_take_o_format(path: tuple[str, ...]) -> None:
    opt = _output_option(COMMANDS[path])
    assert opt is not None and {"json", "yaml"} <= _choices(opt)
    assert "--json" not in _options(COMMANDS[path])


def test_commands_that_reach_hosts_take_command_timeout() -> None:
    from kubexm.cli.main import REACHES_HOSTS

    reaching = [p for p in LEAVES if p[0] in REACHES_HOSTS or " ".join(p[:2]) in REACHES_HOSTS]
    assert ("delete", "cluster") in reaching and ("run", "command") in reaching
    for path in reaching:
        assert "--command-timeout" in _options(LEAVES[path]), " ".join(path)


def test_generate_docs_states_the_output_rule(tmp_path: Path) -> None:
    res = kubexm("generate", "docs", home=tmp_path / "home")
    assert res.returncode == 0
    head = res.stdout.split("### ", 1)[0]
    assert "`-o/--output` is the output format" in head and "--yes" in head and "--local" in head


# -- upgrade skew, argument validation, secrets on the command line --------------------------------------------------

def _one_error_line(res: subprocess.CompletedProcess[str]) -> str:
    assert res.returncode != 0
    assert_not_broken(res, " ".join(res.args))
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error:")
    return line


# The sample's version, and versions one minor up, two minors up and one down from it.
_MAJOR, _MINOR = (int(p) for p in SAMPLE_VERSION.lstrip("v").split(".")[:2])
NEXT, SKIP, OLDER = f"v{_MAJOR}.{_MINOR + 1}.3", f"v{_MAJOR}.{_MINOR + 2}.0", f"v{_MAJOR}.{_MINOR - 1}.4"


@pytest.mark.parametrize(("to", "problem"), [(SKIP, "skips a minor version"), (OLDER, "does not downgrade")])
def test_upgrade_refuses_a_skipped_minor_or_a_downgrade_before_connecting(to: str, problem: str, sample: Path,
                                                                           tmp_path: Path) -> None:
    """No stored record of the cluster: the cluster file's version is the running one."""
    home = tmp_path / "home"
    for extra in (["--plan"], ["-y"]):  # with -y the refusal comes before any connection, lock or record
        res = kubexm("upgrade", "cluster", "-f", str(sample), "--to-version", to, *extra, home=home)
        line = _one_error_line(res)
        assert res.returncode == 2
        assert problem in line and SAMPLE_VERSION in line and to in line, line
        assert res.stdout == ""
        assert _changed(home) == []
    res = kubexm("upgrade", "cluster", "-f", str(sample), "--to-version", NEXT, "--plan", home=home)
    assert res.returncode == 0, res.stderr
    assert f"{SAMPLE_VERSION} -> {NEXT}" in res.stdout


def test_upgrade_judges_the_skew_from_the_stored_version(sample: Path, tmp_path: Path) -> None:
    """The state store's last applied spec is one minor up (the cluster file still names the old version): one
    more minor up from there is fine, going back to the file's version is a downgrade."""
    from kubexm.state.store import Store

    home = tmp_path / "home"
    home.mkdir()
    store = Store(home / "state.db")
    try:
        store.save_cluster("prod", sample.read_text().replace(SAMPLE_VERSION, NEXT), "ok", str(sample))
    finally:
        store.close()
    res = kubexm("upgrade", "cluster", "-f", str(sample), "--to-version", SKIP, "--plan", home=home)
    assert res.returncode == 0, res.stderr
    assert f"{NEXT} -> {SKIP}" in res.stdout
    line = _one_error_line(kubexm("upgrade", "cluster", "-c", "prod", "--to-version", SAMPLE_VERSION, "--plan",
                                  home=home))
    assert f"older than the running {NEXT}" in line


@pytest.mark.parametrize("args", [["Hello"], ["x;reboot"], ["$(id)"], ["-n", "a b", "hello"], ["hello", "-n", "kube_system"]],
                         ids=lambda a: " ".join(a))
def test_delete_addon_refuses_a_name_that_is_no_dns_label(args: list[str], sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    res = kubexm("delete", "addon", *args, "-f", str(sample), "-y", home=home)
    line = _one_error_line(res)
    assert res.returncode == 2
    assert ("--namespace" if "-n" in args else "NAME") in line and "is not a DNS-1123 label" in line, line
    assert _changed(home) == []


def _loopback_cluster(sample: Path, where: Path) -> Path:
    """The sample with its hosts on loopback addresses where nothing listens: a run starts, is recorded, and
    every connection is refused at once."""
    text = re.sub(r"address: 192\.168\.0\.1(\d)", r"address: 127.0.0.1\1", sample.read_text())
    text = re.sub(r"privateKeyPath: .*", "port: 1", text)
    path = where / "cluster.yaml"
    path.write_text(text)
    return path


def test_secret_settings_on_the_command_line_never_reach_kubexm_home(sample: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"
    cluster = _loopback_cluster(sample, tmp_path)
    secrets = ["--set=spec.hosts[0].sudoPassword=S3cret-one", "-e", "spec.hosts[1].password=S3cret-two",
               "-espec.hosts[2].sudoPassword=S3cret-three"]
    for extra in (["--dry-run"], ["-y"]):  # a planned run (history, lock) and a real one (audit too)
        res = kubexm("run", "task", "PreflightChecks", "-f", str(cluster), *secrets, *extra, home=home)
        assert_not_broken(res, " ".join(res.args))
        assert "S3cret" not in res.stdout + res.stderr
    # The dotted list index is no path kubexm reads: refused, and not recorded either.
    res = kubexm("create", "cluster", "-f", str(cluster), "--set=spec.hosts.0.sudoPassword=S3cret-four", "--dry-run",
                 home=home)
    assert_not_broken(res, " ".join(res.args))
    assert "S3cret" not in res.stdout + res.stderr
    leaks = [str(p) for p in home.rglob("*") if p.is_file() and b"S3cret" in p.read_bytes()]
    assert leaks == []
    import sqlite3

    db = sqlite3.connect(home / "state.db")
    try:  # both runs were recorded, with the settings in place but their values redacted
        history = [str(row[0]) for row in db.execute("SELECT command FROM runs")]
        audited = [str(row[0]) for row in db.execute("SELECT action FROM audit")]
    finally:
        db.close()
    assert len(history) == 2 and audited
    for command in history + audited:
        assert "sudoPassword=<redacted>" in command and "password=<redacted>" in command, command

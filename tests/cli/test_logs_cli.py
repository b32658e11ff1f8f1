"""`kubexm logs` as a user types it, each command line its own process, on this machine as a `connection: local`
host (and an SSH host that refuses connections): bundle, manifest, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

KUBEXM = str(Path(sys.executable).with_name("kubexm"))


def kubexm(*args: str, home: Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBEXM_HOME": str(home), "KUBEXM_PERSIST": "0", "COLUMNS": "200", "NO_COLOR": "1"}
    return subprocess.run([KUBEXM, *args], capture_output=True, text=True, env=env, timeout=120,
                          stdin=subprocess.DEVNULL, cwd=cwd)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again when the socket is: nobody listens there


def cluster_file(tmp_path: Path, *, with_dead_host: bool = False) -> Path:
    hosts = "    - {name: local1, address: 127.0.0.1, connection: local}\n"
    if with_dead_host:
        hosts += f"    - {{name: dead1, address: 127.0.0.1, port: {closed_port()}, user: root}}\n"
    f = tmp_path / "cluster.yaml"
    f.write_text("apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata: {name: kxlogcli}\nspec:\n  hosts:\n" + hosts
                 + "  roleGroups: {etcd: [local1], control-plane: [local1], worker: [local1]}\n")
    return f


def manifest_of(bundle: Path) -> tuple[dict, dict[str, bytes]]:  # type: ignore[type-arg]
    with tarfile.open(bundle) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
    return json.loads(members["manifest.json"]), members


def test_collect_writes_a_private_bundle_whose_manifest_matches_it(tmp_path: Path) -> None:
    f = cluster_file(tmp_path)
    out = tmp_path / "bundle.tar.gz"
    res = kubexm("logs", "collect", "-f", str(f), "-o", str(out), "--since", "30m", home=tmp_path / "home")
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"wrote {out}" in res.stdout and "local1:" in res.stderr
    assert out.stat().st_mode & 0o777 == 0o600 and not list(tmp_path.glob("*.part"))
    manifest, members = manifest_of(out)
    node = manifest["nodes"]["local1"]
    assert node["reachable"] and node["window"]["until"] - node["window"]["since"] == 1801
    assert os.uname().release in members["local1/versions.txt"].decode()
    assert {"kubexm/cluster.yaml", "kubexm/runs.json", "kubexm/audit.jsonl", "local1/units.txt"} <= set(members)
    for item in node["items"]:
        if item["path"]:
            assert len(members[item["path"].split("/", 1)[1]]) == item["size"]


def test_an_unreachable_node_still_gives_a_bundle_and_exit_3(tmp_path: Path) -> None:
    f = cluster_file(tmp_path, with_dead_host=True)
    out = tmp_path / "b.tar.gz"
    res = kubexm("logs", "collect", "-f", str(f), "-o", str(out), home=tmp_path / "home")
    assert res.returncode == 3, res.stdout + res.stderr
    assert "missing: dead1:" in res.stdout and "Traceback" not in res.stderr
    manifest, _ = manifest_of(out)
    assert manifest["nodes"]["dead1"]["reachable"] is False and manifest["nodes"]["local1"]["reachable"]


def test_nodes_limits_the_bundle(tmp_path: Path) -> None:
    f = cluster_file(tmp_path, with_dead_host=True)
    out = tmp_path / "b.tar.gz"
    res = kubexm("logs", "collect", "-f", str(f), "-o", str(out), "--nodes", "local1", home=tmp_path / "home")
    assert res.returncode == 0, res.stdout + res.stderr
    assert list(manifest_of(out)[0]["nodes"]) == ["local1"]


@pytest.mark.parametrize(("args", "message"), [
    (["collect", "--since", "2x"], "duration '2x' is not understood"),
    (["collect", "--max-size", "lots"], "size 'lots' is not understood"),
    (["collect", "--nodes", "nosuch"], "--nodes 'nosuch' matches no host"),
    (["bad;unit", "--lines", "3"], "is not a systemd unit name"),
])
def test_mistakes_are_one_line_errors(tmp_path: Path, args: list[str], message: str) -> None:
    f = cluster_file(tmp_path)
    res = kubexm("logs", *args, "-f", str(f), home=tmp_path / "home", cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert not list(tmp_path.glob("*.tar.gz*"))


def test_a_unit_name_is_the_unit_subcommand_and_lines_are_prefixed_with_the_node(tmp_path: Path) -> None:
    f = cluster_file(tmp_path)
    short = kubexm("logs", "etcd", "-f", str(f), "--lines", "5", home=tmp_path / "home")
    long = kubexm("logs", "unit", "etcd", "-f", str(f), "--lines", "5", home=tmp_path / "home")
    assert short.returncode == long.returncode and short.stdout == long.stdout
    assert short.stdout and all(line.startswith("local1 | ") for line in short.stdout.splitlines())
    assert "\x1b[" not in short.stdout  # not a terminal: no colour codes


def test_help_shows_both_forms(tmp_path: Path) -> None:
    res = kubexm("logs", "--help", home=tmp_path / "home")
    assert res.returncode == 0 and "collect" in res.stdout and "unit" in res.stdout
    res = kubexm("logs", "etcd", "--help", home=tmp_path / "home")
    assert res.returncode == 0 and "--follow" in res.stdout and "-F" in res.stdout

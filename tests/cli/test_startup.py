"""Start-up cost of short commands: a command line loads only what its verb needs."""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
from kubexm.cli.main import run_cli
code = run_cli(sys.argv[1:])
print(json.dumps({"code": code, "modules": sorted(m for m in sys.modules if m.startswith(("kubexm", "pydantic")))}))
"""


def loaded(*args: str) -> tuple[int, set[str]]:
    out = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, check=True).stdout
    answer = json.loads(out.strip().splitlines()[-1])
    return answer["code"], set(answer["modules"])


def test_version_loads_neither_the_engine_nor_the_spec_models() -> None:
    code, modules = loaded("version")
    assert code == 0
    # Building the spec models (pydantic schemas) and the engine is most of a command's start-up.
    assert not modules & {"kubexm.engine", "kubexm.spec.models", "kubexm.api"}


def test_run_command_loads_its_pipeline_only() -> None:
    code, modules = loaded("run", "command", "--help")
    assert code == 0
    assert "kubexm.cli.run" in modules
    assert not modules & {"kubexm.cli.create", "kubexm.pipelines.cluster", "kubexm.cli.delete", "kubexm.cli.backup"}


def test_help_still_lists_every_verb() -> None:
    out = subprocess.run([sys.executable, "-m", "kubexm", "--help"], capture_output=True, text=True).stdout
    for verb in ("create", "run", "get", "backup", "restore", "certs", "add", "delete", "upgrade", "lab"):
        assert f" {verb} " in out, verb


FULL_HELP = """
from kubexm.cli.main import app, register
register()
app(["--help"], prog_name="kubexm")
"""


def test_bare_help_imports_no_verb_and_reads_as_the_full_one() -> None:
    code, modules = loaded("--help")
    assert code == 0
    assert not {m for m in modules if m.startswith("kubexm.cli.") and m.rsplit(".", 1)[-1] not in ("main", "consoles")}
    assert not modules & {"kubexm.engine", "kubexm.spec.models", "kubexm.api"}
    env = {"COLUMNS": "120", "PATH": "/usr/bin:/bin"}
    light = subprocess.run([sys.executable, "-m", "kubexm", "--help"], capture_output=True, text=True, env=env)
    full = subprocess.run([sys.executable, "-c", FULL_HELP], capture_output=True, text=True, env=env)
    # The verbs' one-line help comes from a table in kubexm.cli.main: it must say what the modules say.
    assert light.stdout == full.stdout and "plan " in light.stdout, (light.stdout, full.stderr)

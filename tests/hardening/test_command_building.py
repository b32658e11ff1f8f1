"""Commands reach hosts only through kubexm.hosts.shell: checked on the syntax trees of the product code.

The type checker already refuses a ``str`` where ``HostContext.run`` wants a ``Cmd``. What it cannot see is
*where shell syntax comes from*: these tests make sure every template and script handed to the quoting
layer is a literal written in the source (so a value can only ever enter as a quoted word), that nothing
but the quoting layer constructs a ``Cmd``, and that no host command is assembled by string formatting.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "kubexm"
SHELL_MODULE = SRC / "hosts" / "shell.py"
# The one place a user-typed command line becomes a command: `kubexm run command`.
USER_SHELL_ALLOWED = {SRC / "steps" / "common.py"}
TEMPLATE_BUILDERS = {"shell", "script"}
# Methods that send text to a host, on HostContext or on a connection (transport level).
SENDERS = {"run", "run_streaming", "sudo", "check_output"}


def product_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*.py") if p != SHELL_MODULE)


def _module_constants(tree: ast.Module) -> dict[str, ast.expr]:
    consts: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            consts[node.targets[0].id] = node.value
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            consts[node.target.id] = node.value
    return consts


def _imported_constants(tree: ast.Module) -> dict[str, ast.expr]:
    """Constants imported with ``from kubexm.x import NAME``, resolved in their own module."""
    found: dict[str, ast.expr] = {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kubexm."):
            path = SRC.joinpath(*node.module.split(".")[1:])
            path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
            if not path.is_file():
                continue
            consts = _module_constants(ast.parse(path.read_text()))
            for alias in node.names:
                if alias.name in consts:
                    found[alias.asname or alias.name] = consts[alias.name]
    return found


def is_literal(node: ast.expr, consts: dict[str, ast.expr], depth: int = 0) -> bool:
    """A string the source spells out: a literal, literals joined with +, or a module constant of those."""
    if depth > 5:
        return False
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return True
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return is_literal(node.left, consts, depth + 1) and is_literal(node.right, consts, depth + 1)
    if isinstance(node, ast.Name) and node.id in consts:
        return is_literal(consts[node.id], consts, depth + 1)
    return False


def _callee(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def _formats_text(node: ast.expr) -> bool:
    """Text assembled from values: an f-string with fields, ``%``, ``.format()``, or ``+`` with a non-literal."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(v, ast.FormattedValue) for v in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Mod):
        return isinstance(node.left, (ast.Constant, ast.JoinedStr))
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        sides = (node.left, node.right)
        return any(isinstance(s, (ast.Constant, ast.JoinedStr)) and isinstance(getattr(s, "value", ""), str)
                   for s in sides) and not all(isinstance(s, ast.Constant) for s in sides)
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("format", "join"):
        return isinstance(node.func.value, (ast.Constant, ast.JoinedStr))
    return False


def violations(path: Path) -> Iterator[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    consts = {**_imported_constants(tree), **_module_constants(tree)}
    rel = path.relative_to(SRC.parent)
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Module))]:
        # Names bound, within this function, to text assembled from values.
        formatted: set[str] = set()
        for node in ast.walk(func):
            if isinstance(node, ast.Assign) and _formats_text(node.value):
                formatted |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            name = _callee(node)
            where = f"{rel}:{node.lineno}"
            if name in TEMPLATE_BUILDERS and isinstance(node.func, ast.Name):
                if not node.args or not is_literal(node.args[0], consts):
                    yield f"{where}: {name}() needs a literal template (values go in as keyword arguments)"
            elif name == "Cmd" and isinstance(node.func, ast.Name):
                yield f"{where}: Cmd built directly; use sh()/shell() so every value is quoted"
            elif name == "user_shell" and path not in USER_SHELL_ALLOWED:
                yield f"{where}: user_shell() is only for the command line a user typed (kubexm run command)"
            elif name in SENDERS and isinstance(node.func, ast.Attribute) and node.args:
                first = node.args[0]
                if _formats_text(first) or (isinstance(first, ast.Name) and first.id in formatted):
                    yield f"{where}: .{name}() gets text assembled by string formatting; build it with sh()/shell()"
            if name in ("run", "Popen", "call", "check_call", "check_output") and any(
                    k.arg == "shell" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords):
                yield f"{where}: subprocess with shell=True; pass an argument list"


def test_every_host_command_goes_through_the_quoting_layer() -> None:
    found = [v for path in product_files() for v in violations(path)]
    assert not found, "commands built outside kubexm.hosts.shell:\n" + "\n".join(sorted(set(found)))


@pytest.mark.parametrize("source, problem", [
    ('from kubexm.hosts.shell import shell\ndef f(p):\n    return shell(f"rm -rf {p}")\n', "literal template"),
    ('from kubexm.hosts.shell import shell\ndef f(t, p):\n    return shell(t, p=p)\n', "literal template"),
    ('from kubexm.hosts.shell import Cmd\ndef f(p):\n    return Cmd("rm " + p)\n', "Cmd built directly"),
    ('async def f(host, p):\n    await host.run(f"rm -rf {p}")\n', "string formatting"),
    ('async def f(conn, p):\n    c = "rm -rf %s" % p\n    await conn.run(c)\n', "string formatting"),
    ('async def f(conn, p):\n    await conn.run("rm -rf {}".format(p))\n', "string formatting"),
    ('async def f(conn, p):\n    await conn.run("rm -rf " + p)\n', "string formatting"),
    ('import subprocess\ndef f(p):\n    subprocess.run("ls " + p, shell=True)\n', "shell=True"),
    ('from kubexm.hosts.shell import user_shell\ndef f(p):\n    return user_shell(p)\n', "user_shell"),
])
def test_the_checker_catches_each_way_of_pasting_a_value(tmp_path: Path, source: str, problem: str) -> None:
    bad = SRC / "_hardening_probe.py"  # inside the tree, so relative names resolve like product code
    try:
        bad.write_text(source)
        found = list(violations(bad))
    finally:
        bad.unlink()
    assert any(problem in v for v in found), found


def test_literal_templates_and_constants_pass() -> None:
    source = ('from kubexm.hosts.shell import sh, shell, script\nT = "test -e {p}"\nS = script("uname -r")\n'
              'def f(p, host):\n    host.run(shell(T, p=p))\n    host.run(shell("a {x}" " b", x=p))\n'
              '    host.run(sh("rm", "-rf", f"{p}/x"))\n')
    bad = SRC / "_hardening_probe.py"
    try:
        bad.write_text(source)
        assert list(violations(bad)) == []
    finally:
        bad.unlink()

"""Entry point: the Typer app, and error handling that turns every expected failure into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer
from rich.markup import escape

from kubexm import __version__
from kubexm.cli import audit, create, etcd_ops, generate, inspect, kube_ops, run
from kubexm.cli.common import err_console
from kubexm.errors import KubexmError

app = typer.Typer(
    name="kubexm",
    help="Create and operate Kubernetes clusters on machines reached over SSH.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
)
app.add_typer(create.app, name="create")
app.add_typer(run.app, name="run")
app.add_typer(inspect.get_app, name="get")
app.add_typer(inspect.describe_app, name="describe")
app.add_typer(inspect.config_app, name="config")
app.add_typer(audit.app, name="audit")
app.add_typer(generate.app, name="generate")
app.add_typer(etcd_ops.backup_app, name="backup")
app.add_typer(etcd_ops.restore_app, name="restore")
app.add_typer(etcd_ops.certs_app, name="certs")
app.add_typer(etcd_ops.nodes_add_app, name="add")
app.add_typer(etcd_ops.nodes_delete_app, name="delete")
app.add_typer(kube_ops.upgrade_app, name="upgrade")
app.add_typer(kube_ops.cordon_app, name="cordon")
app.add_typer(kube_ops.uncordon_app, name="uncordon")
app.add_typer(kube_ops.restart_app, name="restart")

try:  # the lab is optional tooling for tests and demos; the CLI works without it
    from kubexm.cli.lab import app as lab_app
except ImportError:
    lab_app = None  # type: ignore[assignment]
if lab_app is not None:
    app.add_typer(lab_app, name="lab")


@app.command("version")
def version() -> None:
    """Print kubexm's version."""
    sys.stdout.write(f"kubexm {__version__}\n")


@app.command("completion")
def completion(shell: Annotated[str, typer.Argument(help="bash, zsh, fish or powershell")]) -> None:
    """Print the shell completion script; e.g. `kubexm completion bash > /etc/bash_completion.d/kubexm`."""
    if shell not in ("bash", "zsh", "fish", "powershell", "pwsh"):
        raise KubexmError(f"no completion for shell '{shell}'", hint="use bash, zsh, fish or powershell")
    # Typer's documented completion protocol: with _KUBEXM_COMPLETE=source_<shell> the program prints the
    # script for that shell and exits (--show-completion would guess the shell from the environment instead).
    os.environ["_KUBEXM_COMPLETE"] = f"source_{'powershell' if shell == 'pwsh' else shell}"
    try:
        typer.main.get_command(app).main([], prog_name="kubexm")
    except SystemExit:
        pass
    finally:
        os.environ.pop("_KUBEXM_COMPLETE", None)


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; expected failures print `error:` and `hint:` lines."""
    try:
        app(args=list(args) if args is not None else sys.argv[1:], prog_name="kubexm")
    except SystemExit as exc:  # Typer always ends a standalone invocation this way
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KubexmError as exc:
        problems = getattr(exc, "problems", None) or [exc.message]
        for problem in problems:
            err_console.print(f"[red]error:[/] {escape(problem)}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"hint: {escape(exc.hint)}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err_console.print("interrupted; re-run the command to go on from where it stopped")
        return 130
    except Exception as exc:
        if os.environ.get("KUBEXM_DEBUG"):
            raise
        err_console.print(f"error: internal error: {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
        err_console.print("hint: run with KUBEXM_DEBUG=1 for the traceback, and report it")
        return 1
    return 0


def main() -> None:
    sys.exit(run_cli())

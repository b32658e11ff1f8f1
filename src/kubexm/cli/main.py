"""Entry point: the Typer app, and error handling that turns every expected failure into one line."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

from kubexm.errors import KubexmError

if TYPE_CHECKING:
    import typer

# Importing this module loads nothing but the tables below: the console script imports it before anything
# runs, and a command that reaches hosts starts the connection keeper (run_cli) before Typer and Rich are
# loaded (~50 ms), so the keeper is ready to dial sooner. Typer, the app and the error console load on use.
_app: typer.Typer | None = None


def _the_app() -> typer.Typer:
    global _app
    if _app is None:
        import typer

        globals()["typer"] = typer  # completion()'s annotation names it; Typer resolves it in this module
        _app = typer.Typer(
            name="kubexm",
            help="Create and operate Kubernetes clusters on machines reached over SSH.",
            no_args_is_help=True,
            add_completion=True,
            pretty_exceptions_enable=False,
        )
        _app.command("version")(version)
        _app.command("completion")(completion)
    return _app


def __getattr__(name: str) -> Any:
    if name == "app":  # ``from kubexm.cli.main import app``: the Typer app, built on first use
        return _the_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

# Every verb is one module, kubexm.cli.<verb>, whose ``app`` holds all of the verb's sub-commands: no other
# module adds to it. A command line names one verb and only that module is imported (each pulls in its
# pipelines, templates and renderers, a noticeable part of a short command's start-up), so a sub-command
# defined anywhere else would be missing exactly when it is used; tests/cli/test_cli_surface.py imports each
# verb's module alone and compares. Help, completion and the reference generator register all of them.
VERBS: tuple[str, ...] = ("create", "run", "get", "describe", "config", "audit", "generate", "backup", "restore",
                          "certs", "add", "delete", "upgrade", "cordon", "uncordon", "restart", "registry",
                          "offline", "token", "health", "logs", "scan", "repair", "plan", "rollback",
                          "lab")  # lab: optional tooling for tests and demos; the CLI works without it
OPTIONAL_VERBS = frozenset({"lab"})
# Each verb's one-line help, for `kubexm --help` alone: listing the verbs then imports none of their modules
# (all of them together are most of a bare help's time). tests/cli/test_startup.py renders the help both ways
# and compares, so this table cannot drift from the modules' own help.
VERB_HELP: dict[str, str] = {
    "create": "Create things: a sample cluster file, a cluster.",
    "run": "Run a shell command or a registered task on hosts.",
    "get": "List clusters or nodes.",
    "describe": "Show one cluster in detail.",
    "config": "Contexts, stored specs, and settings synced to a running cluster.",
    "audit": "The audit log: list entries, verify the keyed hash chain, export it as JSON lines.",
    "generate": "Generate the command reference or the cluster-file schema.",
    "backup": "Back up a cluster (etcd snapshot, optionally the PKI).",
    "restore": "Restore a cluster from a kubexm backup.",
    "certs": "Certificates: read back from every node, renewed without downtime.",
    "add": "Add nodes to a cluster (workers, control planes, etcd members).",
    "delete": "Delete nodes, an addon, or the whole cluster.",
    "upgrade": "Upgrade Kubernetes (one minor version at a time) or etcd.",
    "cordon": "Mark nodes unschedulable.",
    "uncordon": "Mark nodes schedulable again.",
    "restart": "Rolling restart of a component, health-checked between nodes.",
    "registry": "Run or stop the private image registry (spec.registry, role registry).",
    "offline": "Build, inspect and verify offline bundles for air-gapped installs.",
    "token": "Service-account signing key rotation and bootstrap tokens.",
    "health": "Cluster health: one report of nodes, etcd, certificates and Kubernetes.",
    "logs": "Collect logs into a support bundle (`logs collect`), or show one unit across nodes "
            "(`logs UNIT [--follow]`).",
    "scan": "Security scans of the nodes (CIS Kubernetes Benchmark).",
    "repair": "Conservative repair from the health report: a plan first, applied with --yes.",
    "plan": "The impact of a change before it is made: diffs, restarts, policy and cost.",
    "rollback": "Undo a failed upgrade from what the upgrade kept.",
    "lab": "Boot real systemd nodes on this machine (systemd-nspawn) and manage them.",
}
_registered: set[str] = set()
_listing_only: set[str] = set()  # verbs registered by register_listing(), replaced by register() when needed
# Command lines that reach hosts over SSH (a verb, or a verb and its noun). For these the connection keeper
# is started first thing, so that its start-up runs beside this process's imports rather than after them.
REACHES_HOSTS = frozenset({"run", "create cluster", "add", "delete", "upgrade", "backup", "restore", "certs",
                           "cordon", "uncordon", "restart", "registry", "token", "health", "logs", "scan",
                           "repair", "plan", "rollback", "config sync", "config diff"})


def verb_module(verb: str) -> str:
    return f"kubexm.cli.{verb}"


def register(verbs: Sequence[str] | None = None) -> typer.Typer:
    """Add the sub-commands of ``verbs`` (all when None) to ``app``; returns it."""
    import importlib

    app = _the_app()
    for verb in VERBS if verbs is None else verbs:
        if verb in _listing_only:
            app.registered_groups = [g for g in app.registered_groups if g.name != verb]
            _listing_only.discard(verb)
            _registered.discard(verb)
        if verb in _registered or verb not in VERBS:
            continue
        try:
            sub = importlib.import_module(verb_module(verb)).app
        except ImportError:
            if verb in OPTIONAL_VERBS:
                continue
            raise
        app.add_typer(sub, name=verb)
        _registered.add(verb)
    return app


def register_listing() -> typer.Typer:
    """``app`` with every verb as an empty group carrying its help: enough to print the top-level help."""
    import importlib.util

    import typer

    app = _the_app()
    for verb in VERBS:
        if verb in _registered:
            continue
        if verb in OPTIONAL_VERBS and importlib.util.find_spec(verb_module(verb)) is None:
            continue
        app.add_typer(typer.Typer(help=VERB_HELP[verb]), name=verb)
        _listing_only.add(verb)
        _registered.add(verb)
    return app


def _verbs_for(args: Sequence[str]) -> list[str] | None:
    """The one verb a command line needs, or None (help, completion, a mistyped verb: register all)."""
    if os.environ.get("_KUBEXM_COMPLETE") or not args:
        return None
    if args[0] in ("version", "completion"):  # the entry point's own commands
        return []
    return [args[0]] if args[0] in VERBS else None


def _reaches_hosts(args: Sequence[str]) -> bool:
    if not args or "--help" in args or "--offline" in args or os.environ.get("_KUBEXM_COMPLETE"):
        return False
    return args[0] in REACHES_HOSTS or " ".join(args[:2]) in REACHES_HOSTS


def version() -> None:
    """Print kubexm's version."""
    from kubexm import __version__
    sys.stdout.write(f"kubexm {__version__}\n")


def completion(shell: Annotated[str, typer.Argument(help="bash, zsh, fish or powershell")]) -> None:
    """Print the shell completion script; e.g. `kubexm completion bash > /etc/bash_completion.d/kubexm`."""
    import typer

    if shell not in ("bash", "zsh", "fish", "powershell", "pwsh"):
        raise KubexmError(f"no completion for shell '{shell}'", hint="use bash, zsh, fish or powershell")
    # Typer's documented completion protocol: with _KUBEXM_COMPLETE=source_<shell> the program prints the
    # script for that shell and exits (--show-completion would guess the shell from the environment instead).
    os.environ["_KUBEXM_COMPLETE"] = f"source_{'powershell' if shell == 'pwsh' else shell}"
    try:
        typer.main.get_command(register()).main([], prog_name="kubexm")
    except SystemExit:
        pass
    finally:
        os.environ.pop("_KUBEXM_COMPLETE", None)


def run_cli(args: Sequence[str] | None = None) -> int:
    """Run the CLI and return its exit code; expected failures print `error:` and `hint:` lines."""
    argv = list(args) if args is not None else sys.argv[1:]
    if _reaches_hosts(argv):
        from kubexm.hosts.keeper import prestart

        prestart()
    try:
        # A bare help lists the verbs and their one-line help only: no verb's module is needed for that.
        bare_help = argv in ([], ["--help"]) and not os.environ.get("_KUBEXM_COMPLETE")
        (register_listing() if bare_help else register(_verbs_for(argv)))(args=argv, prog_name="kubexm")
    except SystemExit as exc:  # Typer always ends a standalone invocation this way
        code = exc.code
        return code if isinstance(code, int) else (0 if code is None else 1)
    except KubexmError as exc:
        from rich.markup import escape

        from kubexm.cli.consoles import err_console

        problems = getattr(exc, "problems", None) or [exc.message]
        for problem in problems:
            err_console.print(f"[red]error:[/] {escape(problem)}", soft_wrap=True)
        if exc.hint:
            err_console.print(f"hint: {escape(exc.hint)}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        from kubexm.cli.consoles import err_console

        err_console.print("interrupted; re-run the command to go on from where it stopped")
        return 130
    except Exception as exc:
        if os.environ.get("KUBEXM_DEBUG"):
            raise
        from rich.markup import escape

        from kubexm.cli.consoles import err_console

        err_console.print(f"error: internal error: {type(exc).__name__}: {escape(str(exc))}", soft_wrap=True)
        err_console.print("hint: run with KUBEXM_DEBUG=1 for the traceback, and report it")
        return 1
    return 0


def main() -> None:
    code = run_cli()
    # Tearing the interpreter down (every module, pydantic's schemas) takes ~0.1 s on our machines and does
    # nothing for a finished command: nothing of kubexm's waits for exit handlers, so flush and leave.
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # stdout closed early by a pipe's reader: nothing more to say there
        pass
    os._exit(code)

"""``kubexm logs``: ``logs collect`` writes a support bundle; ``logs UNIT`` (also ``logs unit UNIT``) shows one
unit's journal from every node, each line prefixed with its node.

A Click group cannot take both a positional unit name and sub-commands, so the group routes any first word
that is not one of its commands to ``unit``: ``kubexm logs etcd --follow`` is ``kubexm logs unit etcd
--follow``. A unit literally named ``collect`` or ``unit`` is reached with ``kubexm logs unit collect``.
``-f`` stays the cluster file, as everywhere in kubexm; following is ``--follow`` (short ``-F``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from kubexm.cli.common import AcceptKeyOpt, CommandTimeoutOpt, ContextOpt, FileOpt, NodesOpt, ParallelOpt


class _LogsGroup(TyperGroup):
    def resolve_command(self, ctx: Any, args: list[str]) -> Any:
        if args and args[0] not in self.commands and not args[0].startswith("-"):
            args = ["unit", *args]
        return super().resolve_command(ctx, args)


app = typer.Typer(cls=_LogsGroup, no_args_is_help=True,
                  help="Collect logs into a support bundle (`logs collect`), or show one unit across nodes "
                       "(`logs UNIT [--follow]`).")

_PALETTE = ("cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan", "bright_magenta",
            "bright_green", "bright_yellow", "bright_blue", "red")


@app.command("collect")
def collect(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    nodes: NodesOpt = None,
    since: Annotated[str, typer.Option("--since", help="journal period to collect, e.g. 30m, 2h, 1d")] = "2h",
    output: Annotated[Path, typer.Option("--output", "-o", help="the bundle to write (.tar.gz)")] = Path(
        "support-bundle.tar.gz"),
    max_size: Annotated[str, typer.Option("--max-size", help="cap on what is read for the whole bundle")] = "200M",
    max_item_size: Annotated[str, typer.Option("--max-item-size", help="cap on one journal or file")] = "50M",
    accept_new_host_key: AcceptKeyOpt = None,
    parallel: ParallelOpt = 50,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Write a support bundle: per node the journals of kubexm's units, kernel messages, kube-system pod
    logs, the files kubexm wrote (private keys never copied; keys, tokens and passwords redacted) and
    versions; kubexm's run history and audit log of the cluster; a manifest.json. Changes nothing on any node.

    Exit 0 when every node was read, 3 when some node or item could not be (the bundle is still written).
    """
    from kubexm import api
    from kubexm.cli.common import run_options
    from kubexm.cli.consoles import err_console
    from kubexm.diagnostics.logs import CollectOptions, parse_duration, parse_size
    from kubexm.diagnostics.logs import collect as collect_bundle

    opts = CollectOptions(since=parse_duration(since), max_size=parse_size(max_size),
                          max_item=parse_size(max_item_size))
    if output.is_dir():
        from kubexm.errors import UsageError

        raise UsageError(f"{output} is a directory", hint="pass the bundle's file name, e.g. -o bundle.tar.gz")
    target = api.resolve_cluster(file, cluster)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, parallel=parallel,
                          command_timeout=command_timeout)
    result = collect_bundle(target, options, output, opts, progress=lambda line: err_console.print(line, markup=False))
    items = sum(1 for rep in result.nodes.values() for i in rep.items if i.path)
    size = output.stat().st_size
    print(f"wrote {output} ({size} bytes): {len(result.nodes)} node(s), {items} item(s), manifest.json inside")
    for line in result.manifest["cut"]:
        print(f"  cut: {line}")
    problems = [f"{n}: {r.error}" for n, r in result.nodes.items() if not r.reachable]
    problems += [f"{n}: {i.item}: {i.error}" for n, r in result.nodes.items() for i in r.items if i.error]
    for line in problems:
        print(f"  missing: {line}")
    if problems:
        raise typer.Exit(3)


@app.command("unit")
def unit(
    name: Annotated[str, typer.Argument(help="a systemd unit, e.g. etcd, kubelet, containerd")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    nodes: NodesOpt = None,
    follow: Annotated[bool, typer.Option("--follow", "-F", help="keep printing new lines until Ctrl-C "
                                         "(-f is the cluster file)")] = False,
    since: Annotated[str | None, typer.Option("--since", help="only lines newer than this, e.g. 10m")] = None,
    lines: Annotated[int, typer.Option("--lines", "-n", min=1, help="last N lines per node to start with")] = 50,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Show a unit's journal from every node, each line prefixed with its node (`kubexm logs etcd` works too)."""
    import asyncio

    from kubexm import api
    from kubexm.cli.common import run_options
    from kubexm.diagnostics.logs import check_unit, follow_unit, parse_duration

    check_unit(name)
    seconds = parse_duration(since) if since else None
    target = api.resolve_cluster(file, cluster)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    from kubexm.diagnostics.logs import target_hosts

    names = target_hosts(target, options)
    width = max((len(n) for n in names), default=0)
    emit = _emitter(names, width)
    try:
        failed = asyncio.run(follow_unit(target, options, name, emit, lines=lines, since=seconds, follow=follow))
    except KeyboardInterrupt:
        sys.stdout.flush()
        raise typer.Exit(130) from None
    if failed:
        raise typer.Exit(3)


def _emitter(names: list[str], width: int) -> Any:
    """Colour per node on a terminal, plain ``node | line`` otherwise (pipes, files, grep)."""
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.text import Text

        console = Console(highlight=False, soft_wrap=True)
        styles = {n: _PALETTE[i % len(_PALETTE)] for i, n in enumerate(names)}

        def colour(node: str, line: str) -> None:
            console.print(Text(node.ljust(width), style=styles.get(node, "")) + Text(" | ") + Text(line))

        return colour

    def plain(node: str, line: str) -> None:
        sys.stdout.write(f"{node.ljust(width)} | {line}\n")
        sys.stdout.flush()

    return plain

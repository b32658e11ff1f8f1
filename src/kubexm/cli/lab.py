"""``kubexm lab``: real Debian nodes on this machine for trying kubexm and for its end-to-end tests."""

from __future__ import annotations

import os
import time
from typing import Annotated

import typer
from rich.table import Table

from kubexm.cli.common import console
from kubexm.lab.lab import DEFAULT_SUBNET, Lab, list_labs

app = typer.Typer(help="Boot real systemd nodes on this machine (systemd-nspawn) and manage them.",
                  no_args_is_help=True)

NameOpt = Annotated[str, typer.Option("--name", help="lab name")]


@app.command("up")
def up(
    name: NameOpt = "lab",
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=200, help="number of nodes")] = 3,
    subnet: Annotated[str, typer.Option("--subnet", help="IPv4 /24 for the lab bridge")] = DEFAULT_SUBNET,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for the nodes to boot")] = 180.0,
) -> None:
    """Start N nodes (building the Debian base once) and write lab.yaml pointing at them."""
    lab = Lab(name)
    c = console()
    c.print(f"lab {name}: bringing {nodes} node(s) up on {subnet} (the first run builds the base, ~1 min)")
    start = time.monotonic()
    state, changed = lab.up(nodes, subnet, timeout)
    if not changed:
        c.print(f"lab {name} is already up with {len(state.nodes)} running node(s); nothing changed")
    else:
        c.print(f"lab {name} is up: {len(state.nodes)} node(s) in {time.monotonic() - start:.0f}s")
    _status_table(lab)
    c.print(f"cluster file: {lab.cluster_file}\n"
            f"  kubexm create cluster -f {lab.cluster_file}\n"
            f"  kubexm run command -f {lab.cluster_file} --nodes '*' -- hostname\n"
            f"  kubexm lab ssh node1 --name {name}      kubexm lab down --name {name}")


def _status_table(lab: Lab) -> None:
    state = lab.require_state()
    table = Table("NODE", "ADDRESS", "STATE", "UPTIME", "PID", box=None)
    for n in state.nodes:
        if not n.running:
            st = "stopped"
        elif n.partitioned:
            st = "running (partitioned)"
        else:
            st = "running"
        up_for = f"{time.time() - n.started:.0f}s" if n.running and n.started else "-"
        table.add_row(n.name, n.address, st, up_for, str(n.pid or "-"))
    console().print(table)


@app.command("status")
def status(name: Annotated[str | None, typer.Option("--name", help="lab name (default: every lab)")] = None) -> None:
    """Nodes, addresses, state and uptime."""
    names = [name] if name else list_labs()
    if not names:
        console().print("no labs; `kubexm lab up` starts one")
    for n in names:
        lab = Lab(n)
        state = lab.require_state()
        console().print(f"[bold]lab {n}[/] ({state.subnet}, bridge {state.bridge}, cluster file {lab.cluster_file})")
        _status_table(lab)


@app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def ssh(node: Annotated[str, typer.Argument(help="node name, e.g. node1")], name: NameOpt = "lab",
        command: Annotated[list[str] | None, typer.Argument(help="a command to run instead of a shell")] = None) -> None:
    """Open a root shell on a node (or run a command there)."""
    lab = Lab(name)
    target = lab.node(lab.require_state(), node)
    argv = lab.ssh_argv(target, *(command or []))
    os.execvp(argv[0], argv)


@app.command("down")
def down(name: NameOpt = "lab") -> None:
    """Stop every node and remove all mounts, namespaces, links and files of the lab."""
    removed = Lab(name).down()
    console().print(f"lab {name} removed ({len(removed)} resources)" if removed else f"no lab {name} was running")


@app.command("kill")
def kill(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = "lab") -> None:
    """Hard-stop one node, like pulling its power cord."""
    n = Lab(name).kill(node)
    console().print(f"killed {n.name} ({n.address})")


@app.command("start")
def start(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = "lab") -> None:
    """Boot a stopped or killed node again and wait until it is ready."""
    n = Lab(name).start(node)
    console().print(f"{n.name} ({n.address}) is running")


@app.command("partition")
def partition(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = "lab") -> None:
    """Cut a node's network link (it keeps running)."""
    n = Lab(name).partition(node, cut=True)
    console().print(f"{n.name} ({n.address}) is cut off the lab network")


@app.command("heal")
def heal(node: Annotated[str, typer.Argument(help="node name")], name: NameOpt = "lab") -> None:
    """Restore a partitioned node's network link."""
    n = Lab(name).partition(node, cut=False)
    console().print(f"{n.name} ({n.address}) is reconnected")

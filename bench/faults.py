"""Fault workloads of the benchmark: some hosts go down after a healthy run, and every tool runs again.

    python bench/run.py --hosts 100 --workloads fault-dead,fault-drop --iterations 3 [--fault-count 10]
                        [--connect-timeout 5] [--fault-idle 0] [--tools kubexm,kubexm-first,asyncssh,pyinfra]

Two workloads, both of one command on every host (workload a: `kubexm run command -f cluster.yaml --no-sudo
-- true`, bench/drive.py's plain asyncssh, pyinfra's `server.shell`):

- ``fault-dead``: the sshd of ``--fault-count`` hosts (default 10% of them) is killed, its session processes
  too, while the hosts stay on the network: connecting is refused at once, and connections held to them end.
- ``fault-drop``: an nft rule (iptables when nft is absent) on this machine drops every packet to those
  hosts' addresses: connecting times out, and connections held to them go silent.

Each iteration: every keeper is stopped; healthy runs of kubexm first run (the run starts a keeper), plain
asyncssh, pyinfra and kubexm with kept connections; then the fault is made and the same runs are timed again,
kubexm with kept connections first (its keeper holds connections to hosts that have just died: the run starts
``--fault-idle`` seconds after the healthy kept run ended, default 0, i.e. as soon as the fault is made), then
a first run (no keeper), asyncssh and pyinfra. The hosts are restored (sshd started again, rules removed)
before the next iteration and whatever happens; ``bench.hosts.teardown`` removes the rules too.

Every run, healthy or not, uses the connect timeout ``--connect-timeout`` (kubexm: KUBEXM_CONNECT_TIMEOUT;
plain asyncssh reads the same variable; pyinfra: CONNECT_TIMEOUT in its config file). The table shows per
tool the median healthy and faulted times, the failed hosts named by the tool (healthy: 0 expected;
faulted: exactly the faulty hosts), and whether the faulted run finished within the healthy run's time
plus one connect timeout (issue 20's target: dead hosts are waited for all at once).
"""

from __future__ import annotations

import contextlib
import re
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import hosts as bench_hosts

KINDS = {"fault-dead": "dead", "fault-drop": "drop"}
TOOLS = ("kubexm", "kubexm-first", "asyncssh", "pyinfra")
TABLE = "kxbench_fault"  # nft table (inet family); with iptables, a chain of this name hooked into OUTPUT
CHAIN = "KXBENCH_FAULT"

# (seconds, peak RSS KiB, exit code, output) of one process: bench/run.py's execute().
Execute = Callable[[list[str], dict[str, str]], tuple[float, int, int, str]]


def default_count(hosts: int) -> int:
    """10% of the hosts, at least one."""
    return max(1, hosts // 10)


def pick(names: list[str], count: int) -> list[str]:
    """``count`` of ``names`` spread evenly over the list (not the first ones: a tool that works through its
    hosts in order would meet them all at once), never the first host (the cluster's control plane)."""
    if not 0 < count < len(names):
        raise ValueError(f"--fault-count must be between 1 and {len(names) - 1} for {len(names)} hosts")
    step = (len(names) - 1) / count  # >= 1: distinct indices, from 1 to len(names) - 1
    return [names[1 + int(step * i + step / 2)] for i in range(count)]


_COLOUR = re.compile(r"\x1b\[[0-9;]*m")
_KUBEXM = re.compile(r"^\s*✗ (\S+) ", re.M)  # kubexm's failure report: "  ✗ h003 RunCommand / Command: ..."
_LISTED = re.compile(r"^failed hosts: (.*)$", re.M)  # bench/drive.py
_PYINFRA = re.compile(r"^\s*\[([^\]\s]+)\] (?:Could not connect|Error)", re.M)
_ANSIBLE = re.compile(r"^(\S+)\s+: ok=\d+\s+changed=\d+\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def failed_hosts(output: str) -> set[str]:
    """The hosts a tool's output names as failed: kubexm's failure report, bench/drive.py's list, pyinfra's
    "[host] Could not connect"/"[host] Error" lines, ansible's PLAY RECAP."""
    output = _COLOUR.sub("", output)
    names = set(_KUBEXM.findall(output)) | set(_PYINFRA.findall(output))
    for listed in _LISTED.findall(output):
        names.update(listed.split())
    names.update(h for h, unreachable, failed in _ANSIBLE.findall(output) if int(unreachable) or int(failed))
    return names


# -- making and repairing the faults ---------------------------------------------------------------------
def _nft(script: str) -> None:
    subprocess.run(["nft", "-f", "-"], input=script, text=True, check=True, capture_output=True)


def drop_traffic(addresses: list[str]) -> None:
    """Drop every packet this machine sends to ``addresses`` (SYNs and packets of held connections alike)."""
    allow_traffic()
    if shutil.which("nft"):
        _nft(f"table inet {TABLE} {{\n chain output {{\n  type filter hook output priority 0; policy accept;\n"
             f"  ip daddr {{ {', '.join(addresses)} }} drop\n }}\n}}\n")
        return
    subprocess.run(["iptables", "-N", CHAIN], check=True, capture_output=True)
    for address in addresses:
        subprocess.run(["iptables", "-A", CHAIN, "-d", address, "-j", "DROP"], check=True, capture_output=True)
    subprocess.run(["iptables", "-I", "OUTPUT", "-j", CHAIN], check=True, capture_output=True)


def allow_traffic() -> None:
    """Remove the rules of ``drop_traffic``; nothing happens when there are none."""
    if shutil.which("nft"):
        subprocess.run(["nft", "delete", "table", "inet", TABLE], capture_output=True, check=False)
    if shutil.which("iptables") and subprocess.run(["iptables", "-n", "-L", CHAIN], capture_output=True).returncode == 0:
        while subprocess.run(["iptables", "-D", "OUTPUT", "-j", CHAIN], capture_output=True).returncode == 0:
            pass
        subprocess.run(["iptables", "-F", CHAIN], capture_output=True, check=False)
        subprocess.run(["iptables", "-X", CHAIN], capture_output=True, check=False)


@contextlib.contextmanager
def broken(kind: str, hosts: list[bench_hosts.BenchHost]) -> Iterator[None]:
    """``hosts`` dead (sshd killed) or unreachable (packets dropped) inside the block; restored after it."""
    try:
        if kind == "dead":
            bench_hosts.stop_sshd(hosts)
        else:
            drop_traffic([h.address for h in hosts])
        yield
    finally:
        allow_traffic()
        if kind == "dead":
            bench_hosts.start_sshd(hosts)


# -- measuring -------------------------------------------------------------------------------------------
@dataclass
class ToolFigures:
    healthy: list[float] = field(default_factory=list)
    faulted: list[float] = field(default_factory=list)
    healthy_failed: list[int] = field(default_factory=list)
    faulted_failed: list[int] = field(default_factory=list)
    exact: list[bool] = field(default_factory=list)  # the faulted run failed, naming exactly the faulty hosts
    notes: list[str] = field(default_factory=list)


@dataclass
class FaultResult:
    kind: str
    hosts: int
    faulty: list[str]
    connect_timeout: float
    tools: dict[str, ToolFigures]
    idle: list[float] = field(default_factory=list)  # seconds the kept connections sat unused before the fault run
    peak_kib: int = 0
    keeper_kib: int = 0


def measure(kind: str, hosts: list[bench_hosts.BenchHost], count: int, connect_timeout: float, iterations: int,
            commands: dict[str, list[str]], env: dict[str, str], home: Path, execute: Execute,
            idle: float = 0.0) -> FaultResult:
    """Healthy and faulted runs of every tool in ``commands`` (a subset of TOOLS), ``iterations`` times;
    the faulted kept run starts ``idle`` seconds after the healthy kept run ended (or as soon as the fault
    is in place, when that takes longer)."""
    victims = [h for h in hosts if h.name in set(pick([x.name for x in hosts], count))]
    expected = {h.name for h in victims}
    result = FaultResult(kind, len(hosts), sorted(expected), connect_timeout, {t: ToolFigures() for t in commands})
    env = dict(env, KUBEXM_CONNECT_TIMEOUT=f"{connect_timeout:g}")

    kept_end = 0.0

    def one(tool: str, it: int, faulted: bool) -> None:
        nonlocal kept_end
        if tool == "kubexm-first":
            bench_hosts.stop_keepers(home)
        if tool == "kubexm" and faulted:
            time.sleep(max(0.0, kept_end + idle - time.monotonic()))
            result.idle.append(time.monotonic() - kept_end)
        seconds, rss, code, output = execute(commands[tool], env)
        if tool == "kubexm" and not faulted:
            kept_end = time.monotonic()
        named = failed_hosts(output)
        fig = result.tools[tool]
        if tool.startswith("kubexm"):
            result.peak_kib = max(result.peak_kib, rss)
            result.keeper_kib = max(result.keeper_kib, bench_hosts.keeper_peak_kib(home))
        if code != 0 and not named:  # it failed without naming hosts: not a fault the tool reported
            fig.notes.append(f"{'faulted' if faulted else 'healthy'} run {it + 1}: exit {code}: "
                             f"{output.strip().splitlines()[-1][:200] if output.strip() else ''}")
        if faulted:
            fig.faulted.append(seconds)
            fig.faulted_failed.append(len(named))
            fig.exact.append(named == expected and code != 0)
            if code == 0:
                fig.notes.append(f"faulted run {it + 1}: exit 0 although hosts were down")
            if named != expected:
                missing, extra = sorted(expected - named), sorted(named - expected)
                fig.notes.append(f"faulted run {it + 1}: not named {len(missing)} {missing[:5]}, "
                                 f"named but up {len(extra)} {extra[:5]}")
        else:
            fig.healthy.append(seconds)
            fig.healthy_failed.append(len(named))
        print(f"  {kind} {'faulted' if faulted else 'healthy'} {tool:12s} run {it + 1}: {seconds:6.2f}s, "
              f"{len(named)} failed host(s), exit {code}", flush=True)

    order = [t for t in ("kubexm-first", "asyncssh", "pyinfra", "kubexm") if t in commands]
    for it in range(iterations):
        bench_hosts.stop_keepers(home)
        for tool in order:
            one(tool, it, faulted=False)
        # The keeper started by the healthy runs still holds a connection to every host, the dying ones too.
        with broken(kind, victims):
            for tool in sorted(order, key=lambda t: t != "kubexm"):
                one(tool, it, faulted=True)
    bench_hosts.stop_keepers(home)
    return result


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summary(result: FaultResult) -> str:
    """The markdown table of one fault workload."""
    what = ("sshd killed: connections refused" if result.kind == "dead"
            else "packets dropped (nft): connections time out")
    t = result.connect_timeout
    idle = f"; kept connections idle {statistics.median(result.idle):.1f} s before the fault run" if result.idle else ""
    lines = [f"fault-{result.kind}: {len(result.faulty)} of {result.hosts} hosts {what}; connect timeout {t:g} s{idle}; "
             f"1 command on every host; median seconds",
             "| tool | healthy | faulted | faulted - healthy | within healthy + connect timeout | "
             "failed hosts, healthy | failed hosts, faulted | named exactly the faulty hosts |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    label = {"kubexm": "kubexm (kept connections)", "kubexm-first": "kubexm, first run",
             "asyncssh": "plain asyncssh", "pyinfra": "pyinfra"}
    for tool, fig in result.tools.items():
        healthy, faulted = _median(fig.healthy), _median(fig.faulted)
        delta = f"{faulted - healthy:+.2f}" if healthy is not None and faulted is not None else "-"
        within = ("yes" if faulted <= healthy + t else f"no (limit {healthy + t:.2f})") \
            if healthy is not None and faulted is not None else "-"
        exact = f"{sum(fig.exact)} of {len(fig.exact)} runs" if fig.exact else "-"
        lines.append(f"| {label[tool]} | {_fmt(healthy)} | {_fmt(faulted)} | {delta} | {within} | "
                     f"{_fmt(_median([float(x) for x in fig.healthy_failed]), 0)} | "
                     f"{_fmt(_median([float(x) for x in fig.faulted_failed]), 0)} | {exact} |")
    lines.append(f"\nkubexm peak memory: {result.peak_kib / 1024:.0f} MiB (run) + {result.keeper_kib / 1024:.0f} MiB "
                 f"(keeper) = {(result.peak_kib + result.keeper_kib) / 1024:.0f} MiB")
    for tool, fig in result.tools.items():
        for note in fig.notes:
            lines.append(f"{label[tool]}: {note}")
    return "\n".join(lines)


def _fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"

"""kubexm against ansible-core, pyinfra and a plain asyncssh script, on N SSH hosts of this machine.

    python bench/run.py [--hosts 50] [--iterations 5] [--workloads a,b,c,d,e,h] [--blob-mb 100] [--smoke]
    python bench/run.py --workloads offline [--iterations 5]   # offline sync against skopeo (bench/offline.py)
    python bench/run.py --hosts 100 --workloads fault-dead,fault-drop --iterations 3 [--fault-count 10]
                        [--connect-timeout 5] [--fault-idle 0] --tools kubexm,kubexm-first,asyncssh,pyinfra

Each workload runs on every tool alternately, ITERATIONS times; the table shows medians, kubexm's ratio to
each peer, the hosts each tool failed (0 expected) and kubexm's peak memory (the run's process + the
connection keeper). Hosts, processes and namespaces are removed afterwards, even on errors.

Fault workloads (bench/faults.py), after a healthy run of 1 command on every host: fault-dead kills the sshd
of --fault-count hosts (default 10%: connections refused), fault-drop drops their packets with nft
(connections time out); each tool runs again with a --connect-timeout of 5 s, must name exactly those hosts
as failed, and should take at most the healthy run's time plus one connect timeout. kubexm with kept
connections runs --fault-idle seconds after its healthy run (default 0: the hosts died just after it). The
hosts are restored after every iteration, and on teardown. --smoke runs fault-dead too (1 of 5 hosts).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import faults, peers
from bench import hosts as bench_hosts
from bench.drive import byte_compile, cluster_text
from bench.hosts import keeper_peak_kib, stop_keepers

HERE = Path(__file__).resolve().parent
PY = sys.executable
# kubexm: connections kept between runs by the connection keeper, as ansible keeps them with ControlPersist
# (both for PERSIST seconds); kubexm-first: a first run, with no keeper running beforehand (every keeper is
# stopped first): the run starts one and dials every host, as a user's first command of the day does.
# Workload a runs kubexm's CLI as a user would (`kubexm run command -f cluster.yaml --no-sudo -- true`), with
# its start-up, state database and output; b-e are tasks, which users write in Python: they run through the
# engine's API (drive.py), as a plugin's task would.
TOOLS = {"a": ("kubexm", "kubexm-first", "asyncssh", "pyinfra", "ansible"),
         "b": ("kubexm", "kubexm-first", "asyncssh", "pyinfra", "ansible"),
         "c": ("kubexm", "kubexm-first", "asyncssh", "pyinfra", "ansible"),
         "d": ("kubexm", "asyncssh", "single"),
         "e": ("kubexm", "kubexm-first", "pyinfra", "ansible")}
PERSIST = 600
LABELS = {"a": "1 command on every host", "b": "10 commands in sequence", "c": "20 idempotent steps, re-run",
          "d": "upload the blob to every host", "e": "plan (dry run) of the 10 commands"}


def execute(argv: list[str], env: dict[str, str]) -> tuple[float, int, int, str]:
    """Wall seconds, peak RSS (KiB), exit code and output (stdout and stderr) of one process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return elapsed, usage.ru_maxrss, proc.returncode, out.decode(errors="replace")


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process; raises when it fails."""
    elapsed, rss, code, out = execute(argv, env)
    if code != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({code}): {out[-800:]}")
    return elapsed, rss


def clean_data(hosts: list[bench_hosts.BenchHost]) -> None:
    for h in hosts:
        for f in (bench_hosts.WORK / h.name).iterdir():
            f.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--workloads", default=None,
                    help="a,b,c,d,e,h (the default; h: health report against one run-command round), fault-dead, "
                         "fault-drop (some hosts down: bench/faults.py) and/or offline (kubexm offline sync against "
                         "skopeo sync)")
    ap.add_argument("--blob-mb", type=int, default=100)
    ap.add_argument("--ansible-iterations", type=int, default=None,
                    help="run ansible only this many times per workload (it takes minutes per run at 50 hosts)")
    ap.add_argument("--tools", default="kubexm,kubexm-first,asyncssh,single,pyinfra,ansible",
                    help="which tools to run (e.g. kubexm,asyncssh for a 200-host memory check)")
    ap.add_argument("--fault-count", type=int, default=None,
                    help="hosts the fault workloads break (default: 10%% of --hosts, at least 1)")
    ap.add_argument("--connect-timeout", type=float, default=5.0,
                    help="connect timeout of every tool in the fault workloads (seconds; KUBEXM_CONNECT_TIMEOUT)")
    ap.add_argument("--fault-idle", type=float, default=0.0,
                    help="seconds the kept connections sit unused before the faulted kept run (default 0: at once)")
    ap.add_argument("--smoke", action="store_true",
                    help="5 hosts, 1 iteration, 1 MB blob, fault-dead on 1 host: keeps the harness working")
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = ap.parse_args()
    if args.smoke:
        args.hosts, args.iterations, args.blob_mb = 5, 1, 1
    requested = [w for w in (args.workloads or "a,b,c,d,e,h").split(",") if w]
    if args.smoke and args.workloads is None:
        requested.append("fault-dead")
    unknown = [w for w in requested if w not in {*TOOLS, "h", "offline", *faults.KINDS}]
    if unknown:
        ap.error(f"unknown workload(s) {', '.join(unknown)}")
    if args.fault_count is None:
        args.fault_count = faults.default_count(args.hosts)
    if set(requested) & faults.KINDS.keys() and not 0 < args.fault_count < args.hosts:
        ap.error(f"--fault-count must be between 1 and {args.hosts - 1} for {args.hosts} hosts")
    if not 0.5 <= args.connect_timeout <= 600:  # what KUBEXM_CONNECT_TIMEOUT accepts
        ap.error("--connect-timeout must be between 0.5 and 600 seconds")
    # The offline workload needs no hosts; --smoke without --workloads runs its tiny size too (~6 s).
    offline_too = "offline" in requested or (args.smoke and args.workloads is None)
    workloads = [w for w in requested if w != "offline"]
    if workloads:
        code = hosts_main(args, workloads)
        if code or not offline_too:
            return code
    from bench import offline

    out = args.out.with_name(args.out.stem + "-offline.json") if args.out and workloads else args.out
    if args.smoke and offline.missing_tools():  # CI keeps the harness working where skopeo is not installed
        print(f"bench: offline workload skipped ({', '.join(offline.missing_tools())} not installed)")
        return 0
    return offline.run(args.iterations, args.smoke, out)


def hosts_main(args: argparse.Namespace, workloads: list[str]) -> int:
    """Workloads a-e, on SSH hosts made on this machine."""
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces and sshd processes)", file=sys.stderr)
        return 2
    # A naive upload stages each copy before moving it into place: two per host at the peak.
    if "d" in workloads and 2 * args.hosts * args.blob_mb > bench_hosts.capacity_mib():
        print(f"bench: {args.hosts} copies of a {args.blob_mb} MB blob do not fit the hosts' tmpfs "
              f"({bench_hosts.capacity_mib()} MiB); choose a smaller --blob-mb", file=sys.stderr)
        return 2
    tools = {"kubexm", *args.tools.split(",")}  # kubexm always: every ratio is against it
    work = Path("/var/tmp/kxbench-run")
    import shutil

    # Another bench run (a CI smoke run, say) owns the hosts and this work directory until its teardown.
    bench_hosts.lock()
    # New hosts get a new host key each run: start from an empty kubexm home (kubexm pins keys it has seen).
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    byte_compile()
    venv = HERE / ".peers"
    if tools & {"pyinfra", "ansible"}:
        print(f"bench: installing peers ({', '.join(peers.PEERS)}) into {venv}", flush=True)
        peers.install(venv)
    home = work / "kubexm-home"
    env = dict(os.environ, KUBEXM_HOME=str(home), ANSIBLE_CONFIG=str(work / "peers" / "ansible.cfg"),
               HOME=str(work), PYTHONDONTWRITEBYTECODE="1", KUBEXM_PERSIST=str(PERSIST))
    results: dict[str, dict[str, list[float]]] = {}
    failed_hosts: dict[str, dict[str, list[int]]] = {}  # per workload and tool, one count per run
    peaks: dict[str, tuple[int, int]] = {}  # per workload: kubexm's run and keeper peak RSS (KiB)
    fault_results: list[faults.FaultResult] = []
    failed_tools: dict[str, str] = {}
    health_table = ""
    peak_kib = keeper_kib = 0
    try:
        print(f"bench: creating {args.hosts} SSH hosts", flush=True)
        hosts, key = bench_hosts.setup(args.hosts, work / "keys")
        hosts_json = work / "hosts.json"
        hosts_json.write_text(json.dumps([{"name": h.name, "address": h.address} for h in hosts]))
        peers.write(work / "peers", [{"name": h.name, "address": h.address} for h in hosts], key, PERSIST)
        blob = work / "blob.bin"
        with open(blob, "wb") as fh:
            for _ in range(args.blob_mb):
                fh.write(os.urandom(1 << 20))
        drive = [PY, str(HERE / "drive.py")]
        cluster_file = work / "cluster.yaml"
        cluster_file.write_text(cluster_text([{"name": h.name, "address": h.address} for h in hosts], str(key)))
        cli = [str(Path(PY).with_name("kubexm")), "run", "command", "-f", str(cluster_file), "--no-sudo", "--", "true"]
        def argv_for(tool: str, w: str) -> list[str]:
            if tool in ("pyinfra", "ansible"):
                return peers.command(tool, w, work / "peers", venv, args.hosts)
            if tool == "single":  # the file to one host: what "at most 2x a single copy" compares with
                return [*drive, "asyncssh", "d1", str(hosts_json), str(key), str(blob)]
            if w == "a" and tool.startswith("kubexm"):
                return cli
            return [*drive, tool.removesuffix("-first"), w, str(hosts_json), str(key), str(blob)]

        # Warm-up: host keys learned, caches filled; not measured. A tool that fails here is recorded and left
        # out of the table (the other tools are still measured): one tool's failure must not end the bench.
        for tool, argv in (("kubexm", cli), ("kubexm", [*drive, "kubexm", "b", str(hosts_json), str(key)]),
                           ("asyncssh", argv_for("asyncssh", "a"))):
            try:
                timed(argv, env)
            except RuntimeError as exc:
                failed_tools.setdefault(tool, str(exc).splitlines()[0][:300])
                print(f"bench: warm-up of {tool} failed, left out: {failed_tools[tool]}", flush=True)
        if "kubexm" in failed_tools:
            failed_tools["kubexm-first"] = failed_tools["kubexm"]
        for w in workloads:
            if w == "h" or w in faults.KINDS:
                continue
            results[w] = {t: [] for t in TOOLS[w] if t in tools and t not in failed_tools}
            failed_hosts[w] = {t: [] for t in results[w]}
            for it in range(args.iterations):
                for tool in results[w]:
                    if tool == "ansible" and args.ansible_iterations is not None and it >= args.ansible_iterations:
                        continue
                    if w in ("c", "d"):
                        clean_data(hosts)
                    if w == "c":  # the timed run is the re-run: each tool first puts everything in place
                        own = tool.startswith("kubexm") or tool == "asyncssh"
                        timed(argv_for(tool, "prepare-c") if own else argv_for(tool, "c"), env)
                    if tool == "kubexm-first":
                        stop_keepers(home)
                    seconds, rss, code, out = execute(argv_for(tool, w), env)
                    named = faults.failed_hosts(out)
                    failed_hosts[w][tool].append(len(named))
                    if code != 0:
                        why = f"{' '.join(argv_for(tool, w)[:3])} ... failed ({code}): {out[-300:]}"
                        failed_tools.setdefault(tool, why.splitlines()[0][:300])
                        print(f"  {w} {tool:9s} run {it + 1}: failed, {len(named)} failed host(s) "
                              f"({failed_tools[tool]})", flush=True)
                        continue
                    results[w][tool].append(seconds)
                    if tool.startswith("kubexm"):
                        run_kib, kept_kib = peaks.get(w, (0, 0))
                        peaks[w] = (max(run_kib, rss), max(kept_kib, keeper_peak_kib(home)))
                        peak_kib = max(peak_kib, rss)
                    keeper_kib = max(keeper_kib, keeper_peak_kib(home))
                    print(f"  {w} {tool:9s} run {it + 1}: {seconds:6.2f}s", flush=True)
        for w in workloads:
            if w not in faults.KINDS:
                continue
            commands = {"kubexm": cli, "kubexm-first": cli, "asyncssh": argv_for("asyncssh", "a"),
                        "pyinfra": [*argv_for("pyinfra", "a"), "--config",
                                    str(peers.pyinfra_config(work / "peers", args.connect_timeout))]}
            commands = {t: argv for t, argv in commands.items() if t in tools and t not in failed_tools}
            print(f"bench: {w}: {args.fault_count} of {len(hosts)} hosts, connect timeout {args.connect_timeout:g} s",
                  flush=True)
            fault_results.append(faults.measure(faults.KINDS[w], hosts, args.fault_count, args.connect_timeout,
                                                args.iterations, commands, env, home, execute, args.fault_idle))
            peak_kib = max(peak_kib, fault_results[-1].peak_kib)
            keeper_kib = max(keeper_kib, fault_results[-1].keeper_kib)
        if "h" in workloads:
            from bench.health import measure
            from bench.health import summary as health_summary

            stop_keepers(home)
            health_table = health_summary(measure(cluster_file, len(hosts), env, home, args.iterations), len(hosts))
    finally:
        stop_keepers(home)
        # ansible's ControlMaster processes (ControlPersist) would otherwise live on, attached to these hosts.
        subprocess.run(["pkill", "-f", f"{work}/peers/cp/"], check=False)
        bench_hosts.teardown()
    if args.out:  # first, so a failure below never loses a long run
        args.out.write_text(json.dumps({"hosts": args.hosts, "iterations": args.iterations, "results": results,
                                        "failed_hosts": failed_hosts, "peaks_kib": peaks,
                                        "faults": [asdict(r) for r in fault_results],
                                        "peak_kib": peak_kib, "keeper_peak_kib": keeper_kib}, indent=2))
    report(results, failed_hosts, peaks, args, peak_kib, keeper_kib)
    for fault in fault_results:
        print(f"\n{faults.summary(fault)}")
    for tool, why in failed_tools.items():
        print(f"{tool}: failed, left out of the table: {why}")
    if health_table:
        print(f"\nh: health report against one run-command round\n{health_table}")
    return 0


def _peak_cell(peak: tuple[int, int] | None) -> str:
    if peak is None:
        return "-"
    run_kib, keeper_kib = peak
    return f"{run_kib / 1024:.0f} + {keeper_kib / 1024:.0f} = {(run_kib + keeper_kib) / 1024:.0f}"


def _cell(med: dict[str, float], t: str) -> str:
    return f"{med[t]:.2f}" if t in med else "-"


def _ratio(med: dict[str, float], t: str, inverse: bool = False) -> str:
    if t not in med or "kubexm" not in med:
        return "-"
    k = med["kubexm"]
    return f"{med[t] / k:.1f}x" if inverse else f"{k / med[t]:.2f}x"


def _failed_cell(counts: dict[str, list[int]]) -> str:
    """Median failed hosts per tool that ran ("-": none of its runs finished)."""
    names = {"kubexm": "kubexm", "kubexm-first": "first run", "asyncssh": "asyncssh", "single": "one host",
             "pyinfra": "pyinfra", "ansible": "ansible"}
    return ", ".join(f"{names[t]} {statistics.median(counts[t]):.0f}" if counts[t] else f"{names[t]} -"
                     for t in names if t in counts)


def report(results: dict[str, dict[str, list[float]]], failed_hosts: dict[str, dict[str, list[int]]],
           peaks: dict[str, tuple[int, int]], args: argparse.Namespace, peak_kib: int, keeper_kib: int) -> None:
    if not results:
        return
    print()
    print(f"{args.hosts} hosts, {args.iterations} iteration(s), median seconds; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})")
    print("| workload | kubexm | kubexm, first run | plain asyncssh | pyinfra | ansible | kubexm / asyncssh | "
          "first run / asyncssh | pyinfra / kubexm | pyinfra / first run | ansible / kubexm | "
          "failed hosts (median per tool) | kubexm peak MiB (run + keeper) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for w, by_tool in results.items():
        med = {t: statistics.median(v) for t, v in by_tool.items() if v}
        label = LABELS[w]
        if w == "d":
            label += f" ({args.blob_mb} MB; asyncssh = one SFTP copy per host; one host alone: {_cell(med, 'single')} s)"
        cold = f"{med['kubexm-first'] / med['asyncssh']:.2f}x" if {"kubexm-first", "asyncssh"} <= med.keys() else "-"
        cold_py = f"{med['pyinfra'] / med['kubexm-first']:.1f}x" if {"kubexm-first", "pyinfra"} <= med.keys() else "-"
        print(f"| {w}: {label} | {_cell(med, 'kubexm')} | {_cell(med, 'kubexm-first')} | {_cell(med, 'asyncssh')} | "
              f"{_cell(med, 'pyinfra')} | {_cell(med, 'ansible')} | {_ratio(med, 'asyncssh')} | {cold} | "
              f"{_ratio(med, 'pyinfra', True)} | {cold_py} | {_ratio(med, 'ansible', True)} | "
              f"{_failed_cell(failed_hosts.get(w, {}))} | {_peak_cell(peaks.get(w))} |")
    print(f"\nkubexm peak memory: {peak_kib / 1024:.0f} MiB (the run's process), "
          f"{keeper_kib / 1024:.0f} MiB (the connection keeper), {(peak_kib + keeper_kib) / 1024:.0f} MiB together")


if __name__ == "__main__":
    sys.exit(main())

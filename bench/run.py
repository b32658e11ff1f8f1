"""kubexm against ansible-core, pyinfra and a plain asyncssh script, on N SSH hosts of this machine.

    python bench/run.py [--hosts 50] [--iterations 5] [--workloads a,b,c,d,e] [--blob-mb 100] [--smoke]

Each workload runs on every tool alternately, ITERATIONS times; the table shows medians, kubexm's ratio to
each peer, and kubexm's peak memory. Hosts, processes and namespaces are removed afterwards, even on errors.
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import hosts as bench_hosts
from bench import peers

HERE = Path(__file__).resolve().parent
PY = sys.executable
TOOLS = {"a": ("kubexm", "asyncssh", "pyinfra", "ansible"), "b": ("kubexm", "asyncssh", "pyinfra", "ansible"),
         "c": ("kubexm", "asyncssh", "pyinfra", "ansible"), "d": ("kubexm", "asyncssh", "single"),
         "e": ("kubexm", "pyinfra", "ansible")}
LABELS = {"a": "1 command on every host", "b": "10 commands in sequence", "c": "20 idempotent steps, re-run",
          "d": "upload the blob to every host", "e": "plan (dry run) of the 10 commands"}


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one process; raises when it fails."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {out.decode()[-800:]}")
    return elapsed, usage.ru_maxrss


def clean_data(hosts: list[bench_hosts.BenchHost]) -> None:
    for h in hosts:
        for f in (bench_hosts.WORK / h.name).iterdir():
            f.unlink()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--workloads", default="a,b,c,d,e")
    ap.add_argument("--blob-mb", type=int, default=100)
    ap.add_argument("--smoke", action="store_true", help="5 hosts, 1 iteration, 1 MB blob: keeps the harness working")
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = ap.parse_args()
    if args.smoke:
        args.hosts, args.iterations, args.blob_mb = 5, 1, 1
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces and sshd processes)", file=sys.stderr)
        return 2
    workloads = [w for w in args.workloads.split(",") if w]
    work = Path("/var/tmp/kxbench-run")
    import shutil

    # New hosts get a new host key each run: start from an empty kubexm home (kubexm pins keys it has seen).
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    venv = HERE / ".peers"
    print(f"bench: installing peers ({', '.join(peers.PEERS)}) into {venv}", flush=True)
    peers.install(venv)
    env = dict(os.environ, KUBEXM_HOME=str(work / "kubexm-home"), ANSIBLE_CONFIG=str(work / "peers" / "ansible.cfg"),
               HOME=str(work), PYTHONDONTWRITEBYTECODE="1")
    results: dict[str, dict[str, list[float]]] = {}
    peak_kib = 0
    try:
        print(f"bench: creating {args.hosts} SSH hosts", flush=True)
        hosts, key = bench_hosts.setup(args.hosts, work / "keys")
        hosts_json = work / "hosts.json"
        hosts_json.write_text(json.dumps([{"name": h.name, "address": h.address} for h in hosts]))
        peers.write(work / "peers", [{"name": h.name, "address": h.address} for h in hosts], key)
        blob = work / "blob.bin"
        with open(blob, "wb") as fh:
            for _ in range(args.blob_mb):
                fh.write(os.urandom(1 << 20))
        drive = [PY, str(HERE / "drive.py")]
        # Warm-up: host keys learned, caches filled; not measured.
        for tool in ("kubexm", "asyncssh"):
            timed([*drive, tool, "a", str(hosts_json), str(key)], env)
        def argv_for(tool: str, w: str) -> list[str]:
            if tool in ("pyinfra", "ansible"):
                return peers.command(tool, w, work / "peers", venv, args.hosts)
            if tool == "single":  # the file to one host: what "at most 2x a single copy" compares with
                return [*drive, "asyncssh", "d1", str(hosts_json), str(key), str(blob)]
            return [*drive, tool, w, str(hosts_json), str(key), str(blob)]

        for w in workloads:
            results[w] = {t: [] for t in TOOLS[w]}
            for it in range(args.iterations):
                for tool in TOOLS[w]:
                    if w in ("c", "d"):
                        clean_data(hosts)
                    if w == "c":  # the timed run is the re-run: each tool first puts everything in place
                        prep = argv_for(tool, "prepare-c") if tool in ("kubexm", "asyncssh") else argv_for(tool, "c")
                        timed(prep, env)
                    seconds, rss = timed(argv_for(tool, w), env)
                    results[w][tool].append(seconds)
                    if tool == "kubexm":
                        peak_kib = max(peak_kib, rss)
                    print(f"  {w} {tool:9s} run {it + 1}: {seconds:6.2f}s", flush=True)
    finally:
        bench_hosts.teardown()
    report(results, args, peak_kib)
    if args.out:
        args.out.write_text(json.dumps({"hosts": args.hosts, "iterations": args.iterations, "results": results,
                                        "peak_kib": peak_kib}, indent=2))
    return 0


def _cell(med: dict[str, float], t: str) -> str:
    return f"{med[t]:.2f}" if t in med else "-"


def _ratio(med: dict[str, float], t: str, inverse: bool = False) -> str:
    if t not in med:
        return "-"
    k = med["kubexm"]
    return f"{med[t] / k:.1f}x" if inverse else f"{k / med[t]:.2f}x"


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace, peak_kib: int) -> None:
    print()
    print(f"{args.hosts} hosts, {args.iterations} iteration(s), median seconds; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()})")
    print("| workload | kubexm | plain asyncssh | pyinfra | ansible | kubexm / asyncssh | pyinfra / kubexm | "
          "ansible / kubexm |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for w, by_tool in results.items():
        med = {t: statistics.median(v) for t, v in by_tool.items() if v}
        label = LABELS[w]
        if w == "d":
            label += f" ({args.blob_mb} MB; asyncssh = one SFTP copy per host; one host alone: {_cell(med, 'single')} s)"
        print(f"| {w}: {label} | {med['kubexm']:.2f} | {_cell(med, 'asyncssh')} | {_cell(med, 'pyinfra')} | "
              f"{_cell(med, 'ansible')} | {_ratio(med, 'asyncssh')} | {_ratio(med, 'pyinfra', True)} | "
              f"{_ratio(med, 'ansible', True)} |")
    print(f"\nkubexm peak memory: {peak_kib / 1024:.0f} MiB")


if __name__ == "__main__":
    sys.exit(main())

"""`kubexm health cluster` against one `kubexm run command` round, on the same SSH hosts in the same run.

    python bench/health.py [--hosts 50] [--iterations 5] [--out FILE]

Both are timed as a user waits for them (a fresh process each, start-up included), alternately, with the
connection keeper holding the connections between runs as users get it ("kept"), and as a first run of the
day ("first": every keeper stopped beforehand). The target: a health report within 1.5x of one `run command`
round. Hosts come from bench/hosts.py (run as root); `measure` is what bench/run.py can call on its own hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import hosts as bench_hosts
from bench.drive import byte_compile, cluster_text
from bench.hosts import stop_keepers

PY = sys.executable
KUBEXM = str(Path(PY).with_name("kubexm"))
PERSIST = 600
TARGET = 1.5  # health / run command


def timed(argv: list[str], env: dict[str, str], ok_codes: tuple[int, ...] = (0,)) -> tuple[float, str]:
    start = time.monotonic()
    res = subprocess.run(argv, env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - start
    if res.returncode not in ok_codes:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({res.returncode}): {(res.stdout + res.stderr)[-800:]}")
    return elapsed, res.stdout


def health_argv(cluster_file: Path) -> list[str]:
    # The bench hosts' user has no sudo: both commands run as the login user.
    return [KUBEXM, "health", "cluster", "-f", str(cluster_file), "--no-sudo", "-o", "json"]


def command_argv(cluster_file: Path) -> list[str]:
    return [KUBEXM, "run", "command", "-f", str(cluster_file), "--no-sudo", "--", "true"]


def check_report(stdout: str, count: int) -> None:
    """A timing only counts when the report covered every host: an unreachable one would time a timeout."""
    doc = json.loads(stdout)
    assert doc["kind"] == "HealthReport", doc.get("kind")
    down = [n["name"] for n in doc["nodes"] if not n["reachable"]]
    if len(doc["nodes"]) != count or down:
        raise RuntimeError(f"health reached {len(doc['nodes']) - len(down)} of {count} hosts (down: {down[:5]})")


def measure(cluster_file: Path, count: int, env: dict[str, str], home: Path, iterations: int) -> dict[str, list[float]]:
    """Seconds per run: "command"/"health" with kept connections, "command-first"/"health-first" without."""
    results: dict[str, list[float]] = {"command": [], "health": [], "command-first": [], "health-first": []}
    timed(command_argv(cluster_file), env)  # warm-up: host keys learned, the keeper started
    check_report(timed(health_argv(cluster_file), env, (0, 3, 4))[1], count)
    for it in range(iterations):
        for name in results:
            if name.endswith("-first"):
                stop_keepers(home)
            if name.startswith("health"):
                seconds, out = timed(health_argv(cluster_file), env, (0, 3, 4))
                check_report(out, count)
            else:
                seconds, _ = timed(command_argv(cluster_file), env)
            results[name].append(seconds)
            print(f"  {name:13s} run {it + 1}: {seconds:6.2f}s", flush=True)
    return results


def summary(results: dict[str, list[float]], count: int) -> str:
    med = {k: statistics.median(v) for k, v in results.items() if v}
    lines = [f"{count} hosts, median seconds", "| | run command (1 round) | health cluster | health / run command |",
             "| --- | --- | --- | --- |"]
    for label, suffix in (("kept connections", ""), ("first run", "-first")):
        c, h = med[f"command{suffix}"], med[f"health{suffix}"]
        verdict = "within" if h / c <= TARGET else "over"
        lines.append(f"| {label} | {c:.2f} | {h:.2f} | {h / c:.2f}x ({verdict} the {TARGET}x target) |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=50)
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench: run as root (it creates network namespaces and sshd processes)", file=sys.stderr)
        return 2
    if bench_hosts.STATE.exists():
        # bench/hosts.py's hosts are one set per machine: setting up would tear down those of a run in progress.
        print(f"bench: {bench_hosts.STATE} exists: another benchmark holds the hosts; wait for it to finish "
              "(or run `python -c 'from bench import hosts; hosts.teardown()'` if it died)", file=sys.stderr)
        return 2
    work = Path("/var/tmp/kxbench-health")
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # new hosts, new host keys: an empty kubexm home
    byte_compile()
    work.mkdir(parents=True)
    home = work / "kubexm-home"
    env = dict(os.environ, KUBEXM_HOME=str(home), HOME=str(work), PYTHONDONTWRITEBYTECODE="1",
               KUBEXM_PERSIST=str(PERSIST))
    try:
        print(f"bench: creating {args.hosts} SSH hosts", flush=True)
        hosts, key = bench_hosts.setup(args.hosts, work / "keys")
        cluster_file = work / "cluster.yaml"
        cluster_file.write_text(cluster_text([{"name": h.name, "address": h.address} for h in hosts], str(key)))
        results = measure(cluster_file, len(hosts), env, home, args.iterations)
    finally:
        stop_keepers(home)
        bench_hosts.teardown()
    if args.out:
        args.out.write_text(json.dumps({"hosts": args.hosts, "iterations": args.iterations, "results": results},
                                       indent=2))
    print()
    print(summary(results, args.hosts))
    return 0


if __name__ == "__main__":
    sys.exit(main())

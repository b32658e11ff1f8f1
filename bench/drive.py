"""One benchmark workload with kubexm or with a plain asyncssh script; run as its own process.

    python bench/drive.py TOOL WORKLOAD HOSTS_JSON KEY [BLOB]

TOOL: kubexm | asyncssh. WORKLOAD: a (1 command), b (10 commands), c (20 idempotent steps, re-run),
d (upload BLOB: kubexm relay; asyncssh: one SFTP copy per host), d1 (BLOB to the first host only),
e (plan of b), prepare-c (first run of c, not timed). Prints nothing on success; on failure prints
"failed hosts: NAME ..." (every host that failed) and exits 1. Connects time out after KUBEXM_CONNECT_TIMEOUT
seconds (default 15), for both tools.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

DATA = "/srv/kxbench"


def byte_compile() -> None:
    """Byte code for kubexm's sources, as an installed package has it. pip compiles the peers' packages when it
    installs them, but kubexm is installed editable from the source tree, and the bench runs every tool with
    PYTHONDONTWRITEBYTECODE (no run may leave files behind): without this, each kubexm process on a fresh
    checkout would compile every module it imports, timing the compiler instead of kubexm."""
    import os
    import subprocess

    import kubexm

    subprocess.run([sys.executable, "-m", "compileall", "-q", str(Path(kubexm.__file__).parent)], check=False,
                   stdout=subprocess.DEVNULL, env={k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"})


def load_hosts(path: str) -> list[dict[str, str]]:
    hosts: list[dict[str, str]] = json.loads(Path(path).read_text())
    return hosts


# -- plain asyncssh: one connection per host, commands in sequence ---------------------------------------
async def plain(workload: str, hosts: list[dict[str, str]], key: str, blob: str | None) -> None:
    import asyncssh

    from kubexm.hosts.dial import connect_timeout, dial

    timeout = connect_timeout()

    async def connect(h: dict[str, str]) -> asyncssh.SSHClientConnection:
        # The same bounded, retrying dial kubexm uses (a fair comparison at 1,000 hosts, where unbounded dials
        # fail on this machine's CPUs and neighbour table, not on the tool).
        async def attempt(budget: float) -> asyncssh.SSHClientConnection:
            return await asyncssh.connect(h["address"], username="kxbench", client_keys=[key], known_hosts=None,
                                          connect_timeout=budget)

        return await dial(attempt, timeout)

    async def one(h: dict[str, str]) -> None:
        async with await connect(h) as conn:
            if workload == "a":
                await conn.run("true", check=True)
            elif workload == "b":
                for i in range(10):
                    await conn.run(f"echo {i} > {DATA}/b{i}", check=True)
            elif workload == "c":
                for i in range(20):
                    await conn.run(f"test -f {DATA}/c{i}", check=True)
            elif workload in ("d", "d1"):
                async with conn.start_sftp_client() as sftp:
                    await sftp.put(blob or "", f"{DATA}/blob.bin")
            elif workload == "prepare-c":
                for i in range(20):
                    await conn.run(f"echo {i} > {DATA}/c{i}", check=True)

    targets = hosts[:1] if workload == "d1" else hosts
    results = await asyncio.gather(*(one(h) for h in targets), return_exceptions=True)
    failed = [(h["name"], r) for h, r in zip(targets, results, strict=True) if isinstance(r, BaseException)]
    if failed:
        print(f"failed hosts: {' '.join(name for name, _ in failed)}", file=sys.stderr)
        sys.exit(f"{len(failed)} of {len(targets)} hosts failed, e.g. {type(failed[0][1]).__name__}: {failed[0][1]}")


# -- kubexm: the engine with the same steps users' tasks are made of ---------------------------------------
def cluster_text(hosts: list[dict[str, str]], key: str) -> str:
    """The cluster file of the benchmark hosts (also what workload a's `kubexm run command -f` reads)."""
    lines = ["apiVersion: kubexm.io/v1alpha1", "kind: Cluster", "metadata: {name: bench}", "spec:", "  hosts:"]
    lines += [f"    - {{name: {h['name']}, address: {h['address']}, user: kxbench, privateKeyPath: {key}}}"
              for h in hosts]
    names = ", ".join(h["name"] for h in hosts)
    lines += ["  roleGroups:", f"    etcd: [{hosts[0]['name']}]", f"    control-plane: [{hosts[0]['name']}]",
              f"    worker: [{names}]"]
    return "\n".join(lines) + "\n"


def kubexm_cluster(hosts: list[dict[str, str]], key: str) -> object:
    from kubexm.spec.loader import parse_cluster

    return parse_cluster(cluster_text(hosts, key))


async def with_kubexm(workload: str, hosts: list[dict[str, str]], key: str, blob: str | None) -> None:
    from kubexm.engine import Executor, Module, RunContext, RunOptions, Task, all_hosts
    from kubexm.hosts.base import ConnectOptions
    from kubexm.hosts.dial import connect_timeout
    from kubexm.hosts.keeper import persist_seconds
    from kubexm.hosts.relay import distribute
    from kubexm.steps.common import Command, PutFile

    cluster = kubexm_cluster(hosts, key)
    # As the CLI does: connections outlive the run in the keeper for KUBEXM_PERSIST seconds (0: none).
    connect = ConnectOptions(persist=persist_seconds(), connect_timeout=connect_timeout())
    options = RunOptions(dry_run=workload == "e", parallel=len(hosts), connect=connect)
    run = RunContext(cluster, options)  # type: ignore[arg-type]
    try:
        if workload in ("d", "d1"):
            names = [h["name"] for h in hosts][: 1 if workload == "d1" else None]
            await distribute(run, names, Path(blob or ""), f"{DATA}/blob.bin")
            return
        if workload == "a":
            steps: list[object] = [Command("true", sudo=False)]
        elif workload in ("b", "e"):
            steps = [Command(f"echo {i} > {DATA}/b{i}", sudo=False) for i in range(10)]
        else:  # c, prepare-c: the same 20 idempotent steps; a re-run finds everything in place
            steps = [PutFile(f"{i}\n".encode(), f"{DATA}/c{i}") for i in range(20)]
        task = Task("Bench", steps, hosts=all_hosts())  # type: ignore[arg-type]
        report = await Executor(run).run_tasks([(Module("Bench", [task]), task)])
        if not report.ok:
            print(f"failed hosts: {' '.join(sorted({f.host for f in report.failures}))}", file=sys.stderr)
            raise SystemExit(f"kubexm: {report.failures[0].host}: {report.failures[0].message}")
        if workload == "c" and report.count("ok") != 20 * len(hosts):
            raise SystemExit("kubexm: the re-run changed something")
    finally:
        await run.close()


def main() -> None:
    tool, workload, hosts_json, key = sys.argv[1:5]
    blob = sys.argv[5] if len(sys.argv) > 5 else None
    if tool not in ("kubexm", "asyncssh"):  # a misspelt tool must not quietly measure another one
        raise SystemExit(f"drive.py: unknown tool {tool!r} (kubexm or asyncssh)")
    if tool == "kubexm":
        # What `kubexm run task` does first: a keeper that is not running yet starts beside the imports.
        from kubexm.hosts.keeper import prestart

        prestart()
    hosts = load_hosts(hosts_json)
    if tool == "kubexm":
        asyncio.run(with_kubexm(workload, hosts, key, blob))
    else:
        asyncio.run(plain(workload, hosts, key, blob))


if __name__ == "__main__":
    main()

"""``kubexm logs``: a support bundle of what on-call needs from every node, and one unit followed across nodes.

Everything sent to a node is declared read-only (``readonly=True``, checked against the allow-list of
``kubexm.hosts.shell``): collecting logs changes no node.

Streaming: a connection returns a command's output whole (``Connection.run`` has no streaming read), so an
item is read in bounded chunks: ``SOURCE | tail -c +OFFSET | head -c CHUNK | base64``, each chunk redacted
and appended to a temporary file on disk, the file then added to the tar. Memory stays at about one chunk
per node whatever the journal's size. Journals are read for a fixed window (``--since @S --until @U``, the
node's own clock), so re-running the source for the next chunk gives the same bytes. Logs keep their newest
part when cut, files their beginning.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import codecs
import contextlib
import hashlib
import io
import json
import os
import posixpath
import re
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubexm.diagnostics.redact import STRADDLE, LineRedactor, Redactor
from kubexm.engine.context import HostContext, RunContext, RunOptions
from kubexm.errors import AuthenticationError, ConnectionFault, KubexmError, UsageError
from kubexm.hosts.pool import ConnectionFactory
from kubexm.hosts.shell import Cmd, script, sh, shell
from kubexm.spec.models import Cluster
from kubexm.state.redact import spec_secret_values

# Every unit kubexm installs or configures (steps/etcd.py, steps/runtime.py, modules/runtime.py,
# steps/kubernetes.py, modules/loadbalancer.py, steps/registry.py, steps/cert_timer.py); a test keeps
# this list in step with those modules.
UNITS: tuple[str, ...] = (
    "etcd.service", "containerd.service", "docker.service", "cri-docker.service", "cri-docker.socket",
    "crio.service", "kubelet.service", "haproxy.service", "keepalived.service", "docker-registry.service",
    "kubexm-cert-renew.service", "kubexm-cert-renew.timer",
)
# Files and directories kubexm writes (configs, env files, unit files and drop-ins).
CONFIG_PATHS: tuple[str, ...] = (
    "/etc/kubernetes", "/etc/etcd", "/etc/etcd.env", "/etc/etcd.bootstrap.env", "/etc/containerd",
    "/etc/crictl.yaml", "/etc/docker/daemon.json", "/etc/crio", "/etc/containers/registries.conf.d",
    "/etc/haproxy", "/etc/keepalived", "/etc/kubexm", "/etc/sysctl.d/99-kubexm.conf",
    "/etc/modules-load.d/kubexm.conf", "/etc/cni/net.d", "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/kubeadm-flags.env", "/var/lib/kubelet/config.json",
    *(f"/etc/systemd/system/{u}" for u in UNITS), *(f"/etc/systemd/system/{u}.d" for u in UNITS),
)
POD_LOGS = "/var/log/pods"
MAX_POD_LOGS = 60  # kube-system container logs per node
CHUNK = 4 << 20  # bytes of source read per round trip
MAX_LINE = 1 << 20  # a longer line is cut (and the cut noted): a line is the unit redaction works on
JOURNAL_TIMEOUT = 300.0
_SEP = "--kubexm-logs--"
_NOTHING_LOGGED = re.compile(r"No journal files were found|No entries")
_UNIT_NAME = re.compile(r"^[A-Za-z0-9@._:\\-]{1,200}$")


def parse_size(text: str) -> int:
    """``200M``, ``1G``, ``512K``, ``1048576``: bytes (binary units)."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", text, re.I)
    if not m:
        raise UsageError(f"size {text!r} is not understood", hint="use a number with K, M or G, e.g. 200M")
    return int(float(m[1]) * (1 << (10 * " KMGT".index(m[2].upper() or " "))))


def parse_duration(text: str) -> int:
    """``2h``, ``10m``, ``30s``, ``1d``, ``1h30m``: seconds."""
    parts = re.findall(r"(\d+)\s*([smhd])", text.strip().lower())
    if not parts or re.sub(r"\d+\s*[smhd]", "", text.strip().lower()).strip():
        raise UsageError(f"duration {text!r} is not understood", hint="use e.g. 30s, 10m, 2h or 1d")
    return sum(int(n) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[u] for n, u in parts)


def spec_secrets(cluster: Cluster) -> list[str]:
    """Every secret value the cluster file holds (sudo and login passwords, passphrases, registry passwords)."""
    return spec_secret_values(cluster)


def skip_reason(path: str) -> str | None:
    """Why a file is never copied (private keys, password files), or None."""
    name = posixpath.basename(path).lower()
    if name.endswith((".key", ".p12", ".pfx", ".jks")) or (name.endswith(".pem") and "key" in name):
        return "private key: never copied"
    if "htpasswd" in name or name in ("shadow", "gshadow"):
        return "password file: never copied"
    return None


def journal_cmd(unit: str | None, since: int, until: int) -> Cmd:
    window = [f"--since=@{since}", f"--until=@{until}", "--no-pager", "-o", "short-iso", "-q"]
    if unit is None:
        return sh("journalctl", "-k", *window, readonly=True)
    return sh("journalctl", "-u", unit, *window, readonly=True)


VERSIONS = script(
    "uname -a\n"
    "cat /etc/os-release 2>/dev/null\n"
    "echo; echo '# versions'\n"
    "command -v etcd >/dev/null 2>&1 && etcd --version 2>&1\n"
    "command -v etcdctl >/dev/null 2>&1 && etcdctl version 2>&1\n"
    "command -v containerd >/dev/null 2>&1 && containerd --version 2>&1\n"
    "command -v runc >/dev/null 2>&1 && runc --version 2>&1\n"
    "command -v crio >/dev/null 2>&1 && crio --version 2>&1\n"
    "command -v cri-dockerd >/dev/null 2>&1 && cri-dockerd --version 2>&1\n"
    "command -v crictl >/dev/null 2>&1 && crictl --version 2>&1\n"
    "command -v docker >/dev/null 2>&1 && docker --version 2>&1\n"
    "command -v kubelet >/dev/null 2>&1 && kubelet --version 2>&1\n"
    "command -v kubeadm >/dev/null 2>&1 && kubeadm version -o short 2>&1\n"
    "command -v kubectl >/dev/null 2>&1 && kubectl version --client 2>&1\n"
    "command -v haproxy >/dev/null 2>&1 && haproxy -v 2>&1\n"
    "command -v keepalived >/dev/null 2>&1 && keepalived --version 2>&1\n"
    "true",  # no newline at the end: the script is grouped into a pipe as `{ ...; }`
    readonly=True,
)
CONTAINERS = script("command -v crictl >/dev/null 2>&1 && crictl ps -a 2>&1; true", readonly=True)


def units_status(units: Sequence[str]) -> Cmd:
    return shell("systemctl status --no-pager --full -n 0 {units} 2>&1; echo; "
                 "systemctl list-units --failed --no-pager --no-legend 2>&1; true", readonly=True, units=list(units))


def unit_files(units: Sequence[str]) -> Cmd:
    return shell("systemctl cat --no-pager {units} 2>&1; true", readonly=True, units=list(units))


def probe_cmd() -> Cmd:
    """One round trip: the node's clock, which of kubexm's units exist, the config files, the pod logs."""
    return shell("date +%s; echo {sep}; systemctl list-unit-files --no-legend --no-pager {units} 2>/dev/null; "
                 "echo {sep}; find {paths} -xdev -type f 2>/dev/null; echo {sep}; "
                 "find {pods} -maxdepth 3 -type f -name '*.log' 2>/dev/null; true",
                 readonly=True, sep=_SEP, units=list(UNITS), paths=list(CONFIG_PATHS), pods=POD_LOGS)


@dataclass
class Probe:
    now: int
    units: list[str]
    files: list[str]
    pod_logs: list[str]


def parse_probe(stdout: str) -> Probe:
    parts = [*stdout.split(_SEP + "\n"), "", "", "", ""][:4]
    try:
        now = int(parts[0].strip().splitlines()[-1])
    except (ValueError, IndexError):
        now = int(time.time())
    units = [line.split()[0] for line in parts[1].splitlines() if line.split() and line.split()[0] in UNITS]
    files = sorted({line.strip() for line in parts[2].splitlines() if line.strip().startswith("/")})
    pods = sorted(line.strip() for line in parts[3].splitlines() if "/kube-system_" in line)
    return Probe(now, units, files, pods[:MAX_POD_LOGS])


# -- one item: read in chunks, redacted, to a temporary file -----------------------------------------------

@dataclass
class ItemRecord:
    """One entry of the manifest."""

    item: str
    path: str | None  # path in the bundle; None when nothing was written
    size: int = 0  # bytes in the bundle (after redaction)
    sha256: str | None = None
    truncated: bool = False
    source_bytes: int | None = None  # what the source produced, when known
    note: str | None = None  # what was cut, or why the item was skipped
    error: str | None = None


class ItemWriter:
    """Bytes in, redacted lines out to a file, with its sha256 and size. Holds at most one line in memory."""

    def __init__(self, redactor: Redactor, fh: io.BufferedWriter) -> None:
        self.lines: LineRedactor = redactor.stream()
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self.pending = ""
        self.skipping = False  # the rest of an over-long line is dropped
        self.cut_lines = 0

    def _out(self, text: str) -> None:
        if text:
            data = text.encode()
            self.fh.write(data)
            self.digest.update(data)
            self.size += len(data)

    def write(self, data: bytes) -> None:
        pieces = (self.pending + self.decoder.decode(data)).split("\n")
        self.pending = pieces.pop()
        for piece in pieces:
            if self.skipping:
                self.skipping = False
                continue
            self._out(self.lines.feed(piece + "\n"))
        if not self.skipping and len(self.pending) > MAX_LINE:
            # Redacted whole, then the end dropped: a secret the cut splits would show its head there.
            kept = self.lines.feed(self.pending)[: MAX_LINE - STRADDLE]
            self._out(kept + f" [kubexm: line cut at {MAX_LINE - STRADDLE} characters]\n")
            self.pending, self.skipping = "", True
            self.cut_lines += 1
        elif self.skipping:
            self.pending = ""

    def skip_partial_first_line(self) -> None:
        """The source was entered mid-line (a log's newest part): drop up to the first newline."""
        self.skipping = True

    def close(self) -> None:
        rest = self.pending + self.decoder.decode(b"", final=True)
        if rest and not self.skipping:
            self._out(self.lines.feed(rest))
        self.pending = ""


class Budget:
    """The overall size cap, shared by every node's items (bytes of source read)."""

    def __init__(self, total: int) -> None:
        self.left = total

    def reserve(self, want: int) -> int:
        got = max(0, min(want, self.left))
        self.left -= got
        return got

    def give_back(self, n: int) -> None:
        self.left += n


async def read_item(host: HostContext, source: Cmd, writer: ItemWriter, *, cap: int, keep_tail: bool,
                    chunk: int = CHUNK, timeout: float | None = None) -> tuple[int, int | None, bool, str | None]:
    """Stream ``source``'s output through ``writer`` in chunks of ``chunk`` bytes, at most ``cap`` bytes.

    Returns (bytes read, total size of the source when known, truncated, stderr of the source)."""

    async def fetch(cmd: Cmd) -> tuple[bytes, str]:
        res = await host.run(cmd, check=False, timeout=timeout)
        try:
            return base64.b64decode(res.stdout), res.stderr.strip()
        except binascii.Error:
            raise KubexmError(f"{host.name}: the output was not base64 (exit {res.exit_status}): "
                              f"{res.stderr.strip()[-200:]}") from None

    n = min(chunk, cap)
    first, err = await fetch(shell("{src} | head -c {n} | base64", readonly=True, src=source, n=n + 1))
    total: int | None = None
    start = 0
    if len(first) <= n:
        writer.write(first)
        return len(first), len(first), False, err or None
    if keep_tail:
        res = await host.run(shell("{src} | wc -c", readonly=True, src=source), check=False, timeout=timeout)
        try:
            total = int(res.stdout.strip() or 0)
        except ValueError:
            total = None
        start = max(0, (total or 0) - cap)
    if start == 0:
        writer.write(first[:n])
        got = n
    else:
        writer.skip_partial_first_line()
        got = 0
    read = got
    offset = start + got
    while read < cap:
        want = min(chunk, cap - read)
        data, err2 = await fetch(shell("{src} | tail -c +{off} | head -c {n} | base64", readonly=True,
                                       src=source, off=offset + 1, n=want + 1))
        err = err or err2
        if len(data) <= want:
            writer.write(data)
            read += len(data)
            return read, total if total is not None else offset + len(data), start > 0, err or None
        writer.write(data[:want])
        read += want
        offset += want
    return read, total, True, err or None


# -- the bundle --------------------------------------------------------------------------------------------

@dataclass
class CollectOptions:
    since: int = 2 * 3600  # seconds of journal
    max_size: int = 200 << 20  # the whole bundle (source bytes read)
    max_item: int = 50 << 20  # one item
    chunk: int = CHUNK


@dataclass
class NodeReport:
    reachable: bool = True
    error: str | None = None
    window: tuple[int, int] | None = None
    units: list[str] = field(default_factory=list)
    absent_units: list[str] = field(default_factory=list)
    items: list[ItemRecord] = field(default_factory=list)


@dataclass
class BundleResult:
    path: Path
    nodes: dict[str, NodeReport]
    local: list[ItemRecord]
    manifest: dict[str, Any]

    @property
    def complete(self) -> bool:
        return all(n.reachable and not any(i.error for i in n.items) for n in self.nodes.values())


class _Bundle:
    """The tar being written: members added one at a time from temporary files, in a thread."""

    def __init__(self, out: Path, prefix: str) -> None:
        self.out = out
        self.part = out.with_name(out.name + ".part")
        fd = os.open(self.part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a bundle is for support only
        self.raw = os.fdopen(fd, "wb")
        self.tar = tarfile.open(fileobj=self.raw, mode="w:gz", compresslevel=6)  # noqa: SIM115 (closed by finish/abort)
        self.prefix = prefix
        self.lock = asyncio.Lock()
        self.tmp = tempfile.TemporaryDirectory(prefix="kubexm-logs-")

    def member(self, rel: str) -> str:
        return f"{self.prefix}/{rel}"

    def _add(self, rel: str, source: Path) -> None:
        info = tarfile.TarInfo(self.member(rel))
        info.size = source.stat().st_size
        info.mtime = int(time.time())
        info.mode = 0o600
        with open(source, "rb") as fh:
            self.tar.addfile(info, fh)

    async def add_file(self, rel: str, source: Path) -> None:
        async with self.lock:
            await asyncio.to_thread(self._add, rel, source)

    def temp(self) -> Path:
        fd, name = tempfile.mkstemp(dir=self.tmp.name)
        os.close(fd)
        return Path(name)

    def finish(self) -> None:
        self.tar.close()
        self.raw.close()
        os.replace(self.part, self.out)
        self.tmp.cleanup()

    def abort(self) -> None:
        for closing in (self.tar.close, self.raw.close):
            with contextlib.suppress(Exception):  # the bundle is being thrown away
                closing()
        self.part.unlink(missing_ok=True)
        self.tmp.cleanup()


async def _collect_item(bundle: _Bundle, host: HostContext, redactor: Redactor, budget: Budget, opts: CollectOptions,
                        item: str, rel: str, source: Cmd, *, keep_tail: bool, timeout: float | None = None) -> ItemRecord:
    record = ItemRecord(item, bundle.member(rel))
    cap = budget.reserve(opts.max_item)
    if cap == 0:
        return ItemRecord(item, None, note="left out: the bundle reached --max-size")
    tmp = bundle.temp()
    read = 0
    try:
        with open(tmp, "wb") as fh:
            writer = ItemWriter(redactor, fh)
            read, total, truncated, err = await read_item(host, source, writer, cap=cap, keep_tail=keep_tail,
                                                          chunk=opts.chunk, timeout=timeout)
            writer.close()
        record.size, record.sha256, record.source_bytes = writer.size, writer.digest.hexdigest(), total
        record.truncated = truncated
        notes = []
        if truncated:
            limit = "--max-size" if cap < opts.max_item else "--max-item-size"
            which = "newest" if keep_tail else "first"
            notes.append(f"cut by {limit}: kept the {which} {read} bytes" + (f" of {total}" if total else ""))
        if writer.cut_lines:
            notes.append(f"{writer.cut_lines} line(s) longer than {MAX_LINE} characters cut")
        record.note = "; ".join(notes) or None
        if err and read == 0:
            reason = redactor.redact(err.splitlines()[-1])[:300]
            if _NOTHING_LOGGED.search(reason):
                record.note = f"empty: {reason}"  # a node without a persistent journal: nothing to collect
            else:
                record.error = reason
        await bundle.add_file(rel, tmp)
    except (ConnectionFault, AuthenticationError):
        raise  # the node is gone: its report says so once
    except KubexmError as exc:
        record.error, record.path = redactor.redact(exc.message)[:300], None
    finally:
        budget.give_back(cap - read)
        tmp.unlink(missing_ok=True)
    return record


async def _collect_node(run: RunContext, name: str, bundle: _Bundle, redactor: Redactor, budget: Budget,
                        opts: CollectOptions, report: NodeReport, progress: Callable[[str], None]) -> None:
    host = run.host(name)
    try:
        res = await host.run(probe_cmd(), check=False)
    except KubexmError as exc:
        report.reachable, report.error = False, redactor.redact(exc.message)[:300]
        progress(f"{name}: unreachable: {report.error}")
        return
    probe = parse_probe(res.stdout)
    # `date +%s` drops the fraction: the window ends at the next whole second so that nothing logged in the
    # probe's own second is left out.
    since, until = probe.now - opts.since, probe.now + 1
    report.window = (since, until)
    report.units = probe.units
    report.absent_units = [u for u in UNITS if u not in probe.units]
    items: list[tuple[str, str, Cmd, bool, float | None]] = [
        ("versions", "versions.txt", VERSIONS, False, None),
        ("units", "units.txt", units_status(UNITS), False, None),
    ]
    if probe.units:
        items.append(("unit-files", "unit-files.txt", unit_files(probe.units), False, None))
    items.append(("containers", "containers.txt", CONTAINERS, False, None))
    for path in probe.files:
        reason = skip_reason(path)
        if reason:
            report.items.append(ItemRecord(f"file {path}", None, note=reason))
            continue
        items.append((f"file {path}", "files" + path, sh("cat", "--", path, readonly=True), False, None))
    items.append(("kernel", "kernel.log", journal_cmd(None, since, until), True, JOURNAL_TIMEOUT))
    for unit in probe.units:
        items.append((f"journal {unit}", f"journal/{unit}.log", journal_cmd(unit, since, until), True, JOURNAL_TIMEOUT))
    for path in probe.pod_logs:
        items.append((f"pod log {path}", "pods" + path.removeprefix(POD_LOGS), sh("cat", "--", path, readonly=True),
                      True, None))
    for item, rel, source, tail, timeout in items:
        try:
            record = await _collect_item(bundle, host, redactor, budget, opts, item, f"{name}/{rel}", source,
                                         keep_tail=tail, timeout=timeout)
        except (ConnectionFault, AuthenticationError) as exc:
            report.reachable, report.error = False, redactor.redact(f"lost during {item}: {exc.message}")[:300]
            progress(f"{name}: {report.error}")
            return
        report.items.append(record)
    progress(f"{name}: {sum(1 for i in report.items if i.path)} item(s), "
             f"{sum(i.size for i in report.items)} bytes")


def _local_items(cluster: Cluster) -> list[tuple[str, str]]:
    """kubexm's own records of the cluster from the state store: (bundle path, text)."""
    from kubexm.spec.dump import dump_cluster
    from kubexm.state.audit import AuditLog
    from kubexm.state.redact import redact
    from kubexm.state.store import Store

    out = [("kubexm/cluster.yaml", dump_cluster(cluster, secrets=False))]
    store = Store()
    try:
        runs = []
        for row in store.runs(cluster.name, limit=50):
            steps = [asdict(s) for s in store.steps_of(row.run_id)]
            runs.append({**asdict(row), "steps": steps})
        out.append(("kubexm/runs.json", json.dumps(redact(runs), indent=1, default=str) + "\n"))
        entries = AuditLog(store).entries(cluster.name)
        out.append(("kubexm/audit.jsonl", "".join(json.dumps(redact(e.record()), sort_keys=True, default=str) + "\n"
                                                  for e in entries)))
    finally:
        store.close()
    return out


def _pool(cluster: Cluster, options: RunOptions, factory: ConnectionFactory | None) -> RunContext:
    from kubexm.api import run_context

    return run_context(cluster, options, command="kubexm logs", factory=factory)


def target_hosts(cluster: Cluster, options: RunOptions) -> list[str]:
    """The selected hosts, after refusing a stored spec whose secrets are <redacted> (before any file or
    connection is made)."""
    from kubexm.api import refuse_redacted
    from kubexm.engine.executor import match_hosts

    refuse_redacted(cluster)
    return match_hosts(cluster, options.nodes) if options.nodes else [h.name for h in cluster.spec.hosts]


def collect(cluster: Cluster, options: RunOptions, out: Path, opts: CollectOptions | None = None, *,
            factory: ConnectionFactory | None = None, progress: Callable[[str], None] = lambda _: None) -> BundleResult:
    """Write a support bundle of ``cluster``'s nodes to ``out`` (a .tar.gz); nothing on any node changes."""
    opts = opts or CollectOptions()
    names = target_hosts(cluster, options)
    redactor = Redactor(spec_secrets(cluster))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    bundle = _Bundle(out, f"kubexm-logs-{cluster.name}-{stamp}")
    reports = {n: NodeReport() for n in names}
    budget = Budget(opts.max_size)
    try:
        local: list[ItemRecord] = []
        for rel, text in _local_items(cluster):
            local.append(_write_text(bundle, redactor, rel, text))
        asyncio.run(_collect_all(cluster, options, names, bundle, redactor, budget, opts, reports, progress, factory))
        manifest = _manifest(cluster, opts, reports, local, budget)
        data = (json.dumps(manifest, indent=2) + "\n").encode()
        info = tarfile.TarInfo(bundle.member("manifest.json"))
        info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
        bundle.tar.addfile(info, io.BytesIO(data))
        bundle.finish()
    except BaseException:
        bundle.abort()
        raise
    return BundleResult(out, reports, local, manifest)


def _write_text(bundle: _Bundle, redactor: Redactor, rel: str, text: str) -> ItemRecord:
    data = redactor.redact(text).encode()
    info = tarfile.TarInfo(bundle.member(rel))
    info.size, info.mtime, info.mode = len(data), int(time.time()), 0o600
    bundle.tar.addfile(info, io.BytesIO(data))
    return ItemRecord(rel, info.name, len(data), hashlib.sha256(data).hexdigest())


async def _collect_all(cluster: Cluster, options: RunOptions, names: list[str], bundle: _Bundle, redactor: Redactor,
                       budget: Budget, opts: CollectOptions, reports: dict[str, NodeReport],
                       progress: Callable[[str], None], factory: ConnectionFactory | None) -> None:
    run = _pool(cluster, options, factory)
    gate = asyncio.Semaphore(max(1, options.parallel))

    async def one(name: str) -> None:
        async with gate:
            await _collect_node(run, name, bundle, redactor, budget, opts, reports[name], progress)

    try:
        await asyncio.gather(*(one(n) for n in names))
    finally:
        await run.close()


def _manifest(cluster: Cluster, opts: CollectOptions, reports: dict[str, NodeReport], local: list[ItemRecord],
              budget: Budget) -> dict[str, Any]:
    def items(records: Iterable[ItemRecord]) -> list[dict[str, Any]]:
        return [{"item": r.item, "path": r.path, "size": r.size, "sha256": r.sha256,
                 "truncated": r.truncated, "source_bytes": r.source_bytes, "note": r.note, "error": r.error}
                for r in records]

    cut = [f"{node}: {r.item}: {r.note}" for node, rep in reports.items() for r in rep.items
           if r.truncated or (r.note and r.note.startswith("left out"))]
    return {
        "kind": "kubexm-support-bundle", "version": 1, "cluster": cluster.name,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "since_seconds": opts.since, "max_size": opts.max_size, "max_item_size": opts.max_item,
        "source_bytes_read": opts.max_size - budget.left, "cut": cut,
        "nodes": {name: {"reachable": rep.reachable, "error": rep.error,
                         "window": None if rep.window is None else {"since": rep.window[0], "until": rep.window[1]},
                         "units": rep.units, "absent_units": rep.absent_units, "items": items(rep.items)}
                  for name, rep in reports.items()},
        "local": items(local),
    }


# -- following one unit ----------------------------------------------------------------------------------

def check_unit(unit: str) -> str:
    if not _UNIT_NAME.match(unit) or unit.startswith("-"):
        raise UsageError(f"{unit!r} is not a systemd unit name", hint="e.g. etcd, kubelet or containerd.service")
    return unit


_CURSOR = "-- cursor: "
POLL_LINES = 5000  # at most this many new lines per node per poll: a burst beyond it is summarised


def _follow_cmd(unit: str, *, lines: int | None, since: str | None, cursor: str | None) -> Cmd:
    """``since``: a journalctl time (``-600s`` is relative to the node's own clock, ``@EPOCH`` absolute)."""
    args = ["-u", unit, "--no-pager", "-o", "short-iso", "-q", "--show-cursor"]
    if cursor:
        args += [f"--after-cursor={cursor}", "-n", str(POLL_LINES)]
    else:
        if lines is not None:
            args += ["-n", str(lines)]
        if since is not None:
            args.append(f"--since={since}")
    return shell("date +%s; journalctl {args}", readonly=True, args=args)


def _split_cursor(stdout: str) -> tuple[int | None, list[str], str | None]:
    lines = stdout.splitlines()
    now = int(lines[0]) if lines and lines[0].strip().isdigit() else None
    body = lines[1:] if now is not None else lines
    cursor = None
    if body and body[-1].startswith(_CURSOR):
        cursor = body.pop()[len(_CURSOR):].strip()
    return now, body, cursor


async def follow_unit(cluster: Cluster, options: RunOptions, unit: str, emit: Callable[[str, str], None], *,
                      lines: int = 50, since: int | None = None, follow: bool = False, interval: float = 1.0,
                      factory: ConnectionFactory | None = None) -> dict[str, str]:
    """Print ``unit``'s journal from every node (``emit(node, line)``), following it when ``follow``.

    Each poll is one short read-only journalctl; cancelling (Ctrl-C) stops the one in flight on the host (the
    connection kills its process group). Returns the nodes that could not be read, with the reason."""
    check_unit(unit)
    names = target_hosts(cluster, options)
    redactor = Redactor(spec_secrets(cluster))
    run = _pool(cluster, options, factory)
    failed: dict[str, str] = {}

    async def one(name: str) -> None:
        host = run.host(name)
        stream = redactor.stream()
        cursor: str | None = None
        start: str | None = None if since is None else f"-{since}s"
        first = True
        while True:
            cmd = _follow_cmd(unit, lines=lines if first else None, since=start, cursor=cursor)
            try:
                res = await host.run(cmd, check=False, timeout=JOURNAL_TIMEOUT)
            except KubexmError as exc:
                failed[name] = redactor.redact(exc.message)
                emit(name, f"[kubexm: cannot read: {failed[name]}]")
                return
            now, body, new_cursor = _split_cursor(res.stdout)
            for line in body:
                out = stream.feed(line + "\n")
                if out:
                    emit(name, out.rstrip("\n"))
            if not res.ok and not body:
                failed[name] = redactor.redact(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else
                                               f"journalctl exited {res.exit_status}: no journal for it on this node")
                emit(name, f"[kubexm: {failed[name]}]")
                return
            if new_cursor:
                cursor = new_cursor
            elif cursor is None and now is not None:
                start = f"@{now}"  # no entry yet: the next poll starts from the node's "now" of this one
            first = False
            if not follow:
                return
            await asyncio.sleep(interval)

    try:
        await asyncio.gather(*(one(n) for n in names))
    finally:
        await run.close()
    return failed

"""etcd backup and restore: snapshots taken on a healthy member, checksummed at every hop.

A backup is one archive on the deploy machine (snapshot, its sha256, metadata, optionally the
PKI) with a ``.sha256`` file beside it; restore refuses an archive whose checksum fails.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from kubexm.assets import sha256_of
from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import ConnectionFault, KubexmError, StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.steps.common import kubexm_command
from kubexm.steps.etcd import (
    BIN,
    PKI_DIR,
    cluster_pki,
    data_dir,
    etcd_members,
    etcdctl,
    initial_cluster,
    url,
    with_api_v3,
)

REMOTE_DIR = "/var/lib/kubexm/backup"


def archive_name(prefix: str, cluster: str, when: datetime) -> str:
    return f"{prefix}{cluster}-etcd-{when.strftime('%Y%m%dT%H%M%SZ')}.tar.gz"


@dataclass(frozen=True)
class BackupEtcd(Step):
    """Snapshot etcd on the first healthy member and keep it, verified, on the deploy machine."""

    def describe(self) -> str:
        return "snapshot etcd on a healthy member and copy it to the deploy machine"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        extra = run.options.extra
        location = Path(extra["to_location"]).expanduser()
        prefix = extra.get("prefix") or ""
        location.mkdir(parents=True, exist_ok=True)
        skipped: list[str] = []
        for name, _ in etcd_members(run.cluster):
            member = run.host(name)
            try:
                health = await member.run(etcdctl("endpoint", "health", readonly=True), check=False, timeout=30)
            except (ConnectionFault, KubexmError) as exc:
                skipped.append(f"{name}: {exc.message}")
                continue
            if not health.ok:
                skipped.append(f"{name}: not healthy")
                continue
            path = await self._snapshot(member, location, prefix, bool(extra.get("include_pki")))
            kept, removed = prune(location, prefix, run.cluster.name, run.cluster.spec.etcd.backup.keep,
                                  run.cluster.spec.etcd.backup.max_age_days)
            run.shared["backup"] = {"archive": str(path), "member": name, "skipped": skipped, "removed": removed}
            rows = [["archive", str(path)], ["taken on", name], ["sha256", sha256_of(path)],
                    ["kept / removed by retention", f"{len(kept)} / {len(removed)}"]]
            rows += [["skipped member", s] for s in skipped]
            run.emit_report("etcd backup", ["what", "value"], rows)
            return
        status = kubexm_command(host, "run", "command", "--nodes", "etcd", "--", "systemctl", "status", "etcd")
        raise StepFailed("no healthy etcd member to take a snapshot from: " + "; ".join(skipped),
                         hint=f"bring at least one member back; see why it is down with `{status}`")

    async def _snapshot(self, member: HostContext, location: Path, prefix: str, include_pki: bool) -> Path:
        stamp = datetime.now(UTC)
        remote = f"{REMOTE_DIR}/snapshot-{stamp.strftime('%Y%m%dT%H%M%S')}.db"
        await member.run(private_dir(REMOTE_DIR) & etcdctl("snapshot", "save", remote), timeout=600)
        try:
            remote_sha = await member.sha256(remote)
            with tempfile.TemporaryDirectory(dir=location) as tmp:
                local = Path(tmp) / "snapshot.db"
                await member.download(remote, local)
                if remote_sha is None or sha256_of(local) != remote_sha:
                    raise StepFailed(f"the snapshot copied from {member.name} does not match its checksum",
                                     hint="re-run the backup; check the deploy machine's disk")
                meta = {"cluster": member.cluster.name, "member": member.name, "time": stamp.isoformat(),
                        "etcd_version": member.cluster.spec.etcd.version, "snapshot_sha256": remote_sha,
                        "members": [n for n, _ in etcd_members(member.cluster)], "pki": include_pki}
                target = location / archive_name(prefix, member.cluster.name, stamp)
                partial = target.with_name(target.name + ".part")
                with tarfile.open(partial, "w:gz") as tar:
                    tar.add(local, arcname="snapshot.db")
                    _add_bytes(tar, "snapshot.db.sha256", f"{remote_sha}  snapshot.db\n".encode())
                    _add_bytes(tar, "meta.json", json.dumps(meta, indent=2).encode())
                    if include_pki:
                        tar.add(cluster_pki(member.cluster).root, arcname="pki")
                partial.chmod(0o600)
                partial.replace(target)
                (location / (target.name + ".sha256")).write_text(f"{sha256_of(target)}  {target.name}\n")
        finally:
            await member.run(sh("rm", "-f", "--", remote), check=False)
        return target


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(time.time())
    info.mode = 0o600
    tar.addfile(info, io.BytesIO(data))


def prune(location: Path, prefix: str, cluster: str, keep: int, max_age_days: int) -> tuple[list[Path], list[Path]]:
    """Keep the newest ``keep`` archives younger than ``max_age_days``; delete the rest (and their .sha256)."""
    archives = sorted(location.glob(f"{prefix}{cluster}-etcd-*.tar.gz"), key=lambda p: p.name, reverse=True)
    cutoff = time.time() - max_age_days * 86400
    kept, removed = [], []
    for index, path in enumerate(archives):
        if index < keep and path.stat().st_mtime >= cutoff:
            kept.append(path)
            continue
        path.unlink()
        path.with_name(path.name + ".sha256").unlink(missing_ok=True)
        removed.append(path)
    return kept, removed


def open_backup(path: Path) -> tuple[bytes, dict[str, object]]:
    """Verify a backup archive (its .sha256 and the snapshot's own sum); return (snapshot, metadata)."""
    if not path.is_file():
        raise KubexmError(f"{path}: no such backup archive", hint="pass the .tar.gz written by `kubexm backup cluster`")
    sidecar = path.with_name(path.name + ".sha256")
    if not sidecar.is_file():
        raise KubexmError(f"{sidecar} is missing: the archive cannot be verified",
                          hint="restore only archives written by `kubexm backup cluster`, with their .sha256 file")
    want = sidecar.read_text().split()[0]
    got = sha256_of(path)
    if want != got:
        raise KubexmError(f"checksum mismatch for {path}: expected {want}, found {got}; refusing to restore it",
                          hint="the archive is corrupt or was altered; use another backup")
    with tarfile.open(path, "r:gz") as tar:
        snap_member = tar.extractfile("snapshot.db")
        meta_member = tar.extractfile("meta.json")
        if snap_member is None or meta_member is None:
            raise KubexmError(f"{path} is not a kubexm etcd backup (snapshot.db or meta.json missing)")
        snapshot = snap_member.read()
        meta = json.loads(meta_member.read())
    if hashlib.sha256(snapshot).hexdigest() != meta.get("snapshot_sha256"):
        raise KubexmError(f"the snapshot inside {path} does not match its recorded checksum; refusing to restore it")
    return snapshot, meta


@dataclass(frozen=True)
class VerifyBackup(Step):
    """Check the archive before anything is stopped."""

    mutates = False

    def describe(self) -> str:
        return "verify the backup archive and its checksums"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        snapshot, meta = open_backup(Path(run.options.extra["from_file"]).expanduser())
        if meta.get("cluster") != run.cluster.name and not run.options.force:
            raise StepFailed(f"the backup is of cluster {meta.get('cluster')}, not {run.cluster.name}",
                             hint="pass --force to restore it into this cluster anyway")
        run.shared["snapshot"] = snapshot
        run.shared["snapshot_meta"] = meta


@dataclass(frozen=True)
class StopEtcd(Step):
    def describe(self) -> str:
        return "stop etcd"

    async def check(self, host: HostContext) -> bool:
        return (await host.run(self.check_script(host), check=False)).ok

    def check_script(self, host: HostContext) -> Cmd:
        # exit 0 ("done") when etcd is not running
        return sh("systemctl", "is-active", "-q", "etcd", readonly=True).negate()

    async def run(self, host: HostContext) -> None:
        await host.run(sh("systemctl", "stop", "etcd"))


@dataclass(frozen=True)
class RestoreMember(Step):
    """Replace the member's data with the snapshot, under its own name and peer URL, and start it."""

    # A second attempt while the first may still be restoring would move its half-written data aside.
    retryable = False

    def describe(self) -> str:
        return "restore the snapshot into this member's data directory and start etcd"

    async def run(self, host: HostContext) -> None:
        run = host.run_ctx
        snapshot: bytes = run.shared["snapshot"]
        data = data_dir(run.cluster)
        remote = f"{REMOTE_DIR}/restore.db"
        await host.run(private_dir(REMOTE_DIR))
        await host.upload(snapshot, remote, mode=0o600)
        aside = f"{data}.before-restore-{datetime.now(UTC).strftime('%Y%m%dT%H%M%S')}"
        await host.run(restore_command(remote, data, aside, name=host.name, initial=initial_cluster(run.cluster),
                                       token=f"kubexm-{run.cluster.name}", peer_url=url(host.address, 2380)),
                       display=f"etcdctl snapshot restore (member {host.name}) and start etcd")
        host.emit("message", message=f"{host.name}: previous data kept in {aside}")


def private_dir(path: str) -> Cmd:
    return sh("mkdir", "-p", "--", path) & sh("chmod", "0700", "--", path)


def restore_command(snapshot: str, data: str, aside: str, *, name: str, initial: str, token: str, peer_url: str) -> Cmd:
    """Move the data directory aside (when there is one), restore the snapshot into it, start etcd.

    Not steps.common.Systemd: etcd is started without waiting (``--no-block``), because a restored member is
    ready only once a quorum of the others has restored too; the task's WaitEtcdHealthy waits for that."""
    restore = with_api_v3(sh(f"{BIN}/etcdctl", "snapshot", "restore", snapshot, "--name", name,
                             "--initial-cluster", initial, "--initial-cluster-token", token,
                             "--initial-advertise-peer-urls", peer_url, "--data-dir", data))
    return shell("if [ -e {data} ]; then mv -- {data} {aside}; fi && {restore} && chmod 0700 -- {data} "
                 "&& rm -f -- {snapshot} && systemctl start --no-block etcd",
                 data=data, aside=aside, restore=restore, snapshot=snapshot)


__all__ = ["PKI_DIR", "BackupEtcd", "RestoreMember", "StopEtcd", "VerifyBackup", "open_backup", "prune"]

"""What an upgrade keeps to go back, going back, and the health gate between the nodes of a rolling change.

Before an upgrade changes a node, the node keeps a copy of the binaries and configs the upgrade replaces under
``/var/lib/kubexm/rollback/<id>/`` with a ``manifest.json`` (versions, each file's sha256). The deploy machine
keeps an etcd snapshot taken right before, and the local state store records the point (id, versions, nodes,
snapshot) as the cluster's last upgrade. ``kubexm rollback cluster`` puts the copies back node by node.
"""

from __future__ import annotations

import asyncio
import json
import posixpath
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubexm import paths
from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.step import Step
from kubexm.errors import NotApplicable, StepFailed
from kubexm.hosts.digest import parse_sha256, sha256_command
from kubexm.hosts.shell import Cmd, seq, sh, shell
from kubexm.spec.models import Cluster
from kubexm.steps.binaries import ASSET_DIR, BIN
from kubexm.steps.common import kubexm_command
from kubexm.steps.etcd import ENV_FILE, UNIT_FILE, cluster_health

ROLLBACK_DIR = "/var/lib/kubexm/rollback"
MANIFEST = "manifest.json"
KUBELET_CONFIG = "/var/lib/kubelet/config.yaml"
KUBEADM_FLAGS = "/var/lib/kubelet/kubeadm-flags.env"
MANIFESTS_DIR = "/etc/kubernetes/manifests"
KUBE_BINARIES = ("kubeadm", "kubelet", "kubectl")


def _marker(component: str) -> str:
    return posixpath.join(ASSET_DIR, f"{component}.installed")


# The files each kind of upgrade replaces on a node (those absent on a node are not kept there). The asset
# markers go back too, so a later run sees the previous release as the one installed.
COMPONENT_FILES: dict[str, tuple[str, ...]] = {
    "etcd": (f"{BIN}/etcd", f"{BIN}/etcdctl", ENV_FILE, UNIT_FILE, _marker("etcd")),
    "kubernetes": (*(f"{BIN}/{b}" for b in KUBE_BINARIES), *(_marker(b) for b in KUBE_BINARIES),
                   *(f"{MANIFESTS_DIR}/{c}.yaml" for c in ("kube-apiserver", "kube-controller-manager",
                                                           "kube-scheduler", "etcd")),
                   KUBELET_CONFIG, KUBEADM_FLAGS),
}
# The unit each kind restarts after its files went back, and the files whose change asks for the restart.
RESTARTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "etcd": ("etcd", (f"{BIN}/etcd", ENV_FILE, UNIT_FILE)),
    "kubernetes": ("kubelet", (f"{BIN}/kubelet", KUBELET_CONFIG, KUBEADM_FLAGS)),
}
_ID = re.compile(r"[^A-Za-z0-9._+-]")


# -- the record in the local state store ----------------------------------------------------------------
def _setting(cluster: str) -> str:
    return f"rollback-point:{cluster}"


def load_point(cluster: str) -> dict[str, Any] | None:
    """The last upgrade's rollback point of ``cluster`` as the state store keeps it (None: no record).
    Only reads: a missing state database is not created."""
    if not paths.state_db().is_file():
        return None
    from kubexm.state.store import Store

    store = Store()
    try:
        row = store.db.execute("SELECT value FROM settings WHERE key=?", (_setting(cluster),)).fetchone()
    finally:
        store.close()
    if row is None:
        return None
    try:
        point = json.loads(row[0])
    except ValueError:
        return None
    return point if isinstance(point, dict) else None


def save_point(cluster: str, point: dict[str, Any]) -> None:
    from kubexm.state.store import Store

    store = Store()
    try:
        with store.tx() as db:
            db.execute("INSERT OR REPLACE INTO settings(key, value) VALUES (?, ?)",
                       (_setting(cluster), json.dumps(point, sort_keys=True)))
    finally:
        store.close()


def target_version(cluster: Cluster, component: str) -> str:
    return cluster.spec.etcd.version if component == "etcd" else cluster.spec.kubernetes.version


def point_nodes(cluster: Cluster, component: str) -> list[str]:
    if component == "etcd":
        return [h.name for h in cluster.hosts_with_role("etcd")]
    names = [h.name for h in cluster.hosts_with_role("control-plane")]
    return names + [h.name for h in cluster.hosts_with_role("worker") if h.name not in names]


def active_point(run: RunContext, component: str) -> dict[str, Any]:
    """The rollback point this upgrade run keeps: the recorded one when it is for the same upgrade (a re-run
    after a failure must keep what the first attempt saved, not the half-upgraded nodes), else a new one."""
    key = f"rollback-point:{component}"
    found: dict[str, Any] | None = run.shared.get(key)
    if found is not None:
        return found
    to = target_version(run.cluster, component)
    stored = load_point(run.cluster.name)
    if stored and stored.get("state") == "ready" and stored.get("component") == component and stored.get("to") == to:
        point = stored
    else:
        extra = run.options.extra
        before = extra.get("from_version") or run.shared.get("upgrade-from")
        point = {"id": _ID.sub("_", f"{component}-{to}-{run.run_id}"), "component": component,
                 "from": str(before) if before else None, "to": to, "nodes": point_nodes(run.cluster, component),
                 "snapshot": None, "created": time.time(), "state": "ready"}
    run.shared[key] = point
    return point


def point_for_rollback(run: RunContext) -> dict[str, Any]:
    """The point a rollback run goes back to: the one the command loaded, or the store's."""
    point = run.options.extra.get("rollback") or load_point(run.cluster.name)
    if not point or point.get("state") != "ready":
        raise StepFailed(f"cluster {run.cluster.name} has no upgrade to roll back",
                         hint="only an upgrade run by kubexm keeps a rollback point")
    found: dict[str, Any] = point
    return found


def point_dir(point_id: str) -> str:
    if not point_id or _ID.search(point_id) or point_id.startswith("."):
        raise StepFailed(f"rollback point id {point_id!r} is not a plain name")
    return posixpath.join(ROLLBACK_DIR, point_id)


def _copy_of(directory: str, path: str) -> str:
    return posixpath.join(directory, "files", path.lstrip("/"))


# -- keeping the point ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeepRollbackPoint(Step):
    """On the deploy machine, before the first node changes: an etcd snapshot (kubexm's etcd) and the record
    in the state store. Done when the store already records this upgrade's point."""

    component: str

    def describe(self) -> str:
        return f"keep an etcd snapshot and record the {self.component} upgrade's rollback point"

    def _snapshot_wanted(self, cluster: Cluster) -> bool:
        return cluster.spec.etcd.type == "kubexm"

    async def check(self, host: HostContext) -> bool:
        point = active_point(host.run_ctx, self.component)
        stored = load_point(host.cluster.name)
        if not stored or stored.get("id") != point["id"]:
            return False
        snapshot = stored.get("snapshot")
        return not self._snapshot_wanted(host.cluster) or bool(snapshot and Path(snapshot).is_file())

    async def run(self, host: HostContext) -> None:
        from kubexm.steps.etcd_backup import BackupEtcd

        run = host.run_ctx
        point = active_point(run, self.component)
        if self._snapshot_wanted(host.cluster):
            extra = run.options.extra
            kept = {k: extra.get(k) for k in ("to_location", "prefix", "include_pki")}
            extra.update({"to_location": str(paths.cluster_dir(run.cluster.name) / "rollback" / point["id"]),
                          "prefix": "pre-upgrade-", "include_pki": False})
            try:
                await BackupEtcd().run(host)
            finally:
                extra.update(kept)
            point["snapshot"] = run.shared["backup"]["archive"]
        save_point(run.cluster.name, point)
        host.emit("message", message=f"rollback point {point['id']} recorded"
                                     + (f", etcd snapshot {point['snapshot']}" if point["snapshot"] else ""))


@dataclass(frozen=True)
class SaveRollbackFiles(Step):
    """Copy what the upgrade will replace on this node, with a manifest of versions and sha256 sums written
    last (a manifest present means the copy is whole). A re-run keeps the first copy."""

    component: str

    def describe(self) -> str:
        return f"keep this node's {self.component} binaries and configs for a rollback"

    def _dir(self, host: HostContext) -> str:
        return point_dir(active_point(host.run_ctx, self.component)["id"])

    def check_script(self, host: HostContext) -> Cmd:
        return sh("test", "-s", posixpath.join(self._dir(host), MANIFEST), readonly=True)

    async def check(self, host: HostContext) -> bool:
        return (await host.run(self.check_script(host), check=False)).ok

    async def run(self, host: HostContext) -> None:
        point = active_point(host.run_ctx, self.component)
        directory = point_dir(point["id"])
        files = list(COMPONENT_FILES[self.component])
        have = parse_sha256((await host.run(sha256_command(files), check=False)).stdout)
        present = [f for f in files if f in have]
        await host.run(shell('mkdir -p -m 0700 -- {dir} && for f in {files}; do d={dir}/files$(dirname -- "$f"); '
                             'mkdir -p -- "$d" && cp -a -- "$f" "$d/" || exit 1; done',
                             dir=directory, files=present) if present else
                       sh("mkdir", "-p", "-m", "0700", "--", directory), display=self.describe())
        copies = parse_sha256((await host.run(sha256_command([_copy_of(directory, f) for f in present]),
                                              check=False)).stdout)
        bad = [f for f in present if copies.get(_copy_of(directory, f)) != have[f]]
        if bad:
            raise StepFailed(f"the rollback copy of {', '.join(bad)} on {host.name} does not match the original",
                             hint=f"check the free space under {ROLLBACK_DIR} on {host.name}, then run the upgrade again")
        manifest = {"id": point["id"], "component": self.component, "from": point.get("from"), "to": point["to"],
                    "node": host.name, "created": time.time(),
                    "files": [{"path": f, "copy": _copy_of(directory, f), "sha256": have[f]} for f in present]}
        await host.upload((json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode(),
                          posixpath.join(directory, MANIFEST), mode=0o600)


# -- going back -----------------------------------------------------------------------------------------
async def node_manifest(host: HostContext, point: dict[str, Any]) -> dict[str, Any] | None:
    text = await host.read_text(posixpath.join(point_dir(str(point["id"])), MANIFEST))
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        raise StepFailed(f"{host.name}: the rollback manifest of {point['id']} is unreadable",
                         hint="restore the node's files by hand from " + point_dir(str(point["id"]))) from None
    return data if isinstance(data, dict) else None


@dataclass(frozen=True)
class RestoreRollbackFiles(Step):
    """Put back the binaries and configs this node kept before the upgrade; done when every one of them has the
    kept sha256 again."""

    def describe(self) -> str:
        return "restore the binaries and configs kept before the upgrade"

    async def _wanted(self, host: HostContext) -> list[dict[str, str]]:
        point = point_for_rollback(host.run_ctx)
        manifest = await node_manifest(host, point)
        if manifest is None:
            raise NotApplicable(f"{host.name} kept nothing for {point['id']} (the upgrade did not reach it)")
        files: list[dict[str, str]] = manifest.get("files", [])
        return files

    async def check(self, host: HostContext) -> bool:
        files = await self._wanted(host)
        have = parse_sha256((await host.run(sha256_command([f["path"] for f in files]), check=False)).stdout)
        return all(have.get(f["path"]) == f["sha256"] for f in files)

    async def run(self, host: HostContext) -> None:
        files = await self._wanted(host)
        have = parse_sha256((await host.run(sha256_command([f["path"] for f in files]), check=False)).stdout)
        for f in files:
            if have.get(f["path"]) == f["sha256"]:
                continue
            # A copy beside the target, then a rename: a running binary is never overwritten in place.
            part = f["path"] + ".kubexm-rollback"
            await host.run(shell("cp -a -- {copy} {part} && mv -f -- {part} {path}",
                                 copy=f["copy"], part=part, path=f["path"]))
            host.vars.setdefault("changed_files", set()).add(f["path"])
        got = parse_sha256((await host.run(sha256_command([f["path"] for f in files]), check=False)).stdout)
        bad = [f["path"] for f in files if got.get(f["path"]) != f["sha256"]]
        if bad:
            raise StepFailed(f"{host.name}: {', '.join(bad)} do not match the kept sha256 after the restore",
                             hint="the kept copies were changed; restore the node from the etcd snapshot and "
                                  "a reinstall instead")


@dataclass(frozen=True)
class FinishRollback(Step):
    """Mark the point used: a second `rollback cluster` finds nothing to roll back."""

    def describe(self) -> str:
        return "mark the rollback point as used"

    async def check(self, host: HostContext) -> bool:
        stored = load_point(host.cluster.name)
        return not stored or stored.get("state") != "ready"

    async def run(self, host: HostContext) -> None:
        point = dict(point_for_rollback(host.run_ctx))
        point.update({"state": "rolled-back", "rolled_back": time.time()})
        save_point(host.cluster.name, point)


# -- the health gate ------------------------------------------------------------------------------------
RUNTIME_UNITS = {"containerd": "containerd", "docker": "docker", "crio": "crio"}


def _runtime_answers(runtime: str) -> Cmd:
    if runtime == "containerd":
        return sh("timeout", "10", "ctr", "version", readonly=True)
    if runtime == "docker":
        return sh("timeout", "10", "docker", "version", readonly=True)
    return sh("timeout", "10", "crictl", "--runtime-endpoint", "unix:///var/run/crio/crio.sock", "version",
              readonly=True)


def _unit_state(unit: str, answers: Cmd | None = None) -> Cmd:
    """Prints ``unit=absent|inactive|silent|ok``: absent when the node has no such unit (not installed)."""
    probe = answers if answers is not None else sh("true", readonly=True)
    return shell("if ! systemctl cat -- {unit} >/dev/null 2>&1; then echo {unit}=absent; "
                 "elif ! systemctl is-active -q -- {unit}; then echo {unit}=inactive; "
                 "elif ! {probe} >/dev/null 2>&1; then echo {unit}=silent; else echo {unit}=ok; fi",
                 unit=unit, probe=probe, readonly=True)


@dataclass(frozen=True)
class NodeHealthy(Step):
    """Between the nodes of a rolling change: the runtime answers, kubelet is active where installed, and on
    an etcd member every member reports healthy. Waits up to ``timeout`` (the run option ``health_timeout``
    overrides it), then stops the run naming the node."""

    mutates = False
    timeout: float = 120.0

    def describe(self) -> str:
        return "health gate: runtime answers, kubelet active, etcd healthy"

    async def problems(self, host: HostContext) -> list[str]:
        runtime = host.cluster.spec.container_runtime.type
        unit = RUNTIME_UNITS[runtime]
        res = await host.run(seq(_unit_state(unit, _runtime_answers(runtime)), _unit_state("kubelet")), check=False)
        states = dict(line.partition("=")[::2] for line in res.stdout.split())
        problems = []
        if states.get(unit) in ("inactive", "silent"):
            problems.append(f"{unit} is {'not active' if states[unit] == 'inactive' else 'not answering'}")
        if states.get("kubelet") == "inactive":
            problems.append("kubelet is not active")
        if "etcd" in host.roles and host.cluster.spec.etcd.type == "kubexm":
            ok, why = await cluster_health(host)
            if not ok:
                problems.append(f"etcd is not healthy ({why})")
        return problems

    async def run(self, host: HostContext) -> None:
        if host.run_ctx.options.dry_run:
            raise NotApplicable("dry run: nothing changed here to wait for")
        deadline = time.monotonic() + float(host.run_ctx.options.extra.get("health_timeout", self.timeout))
        while problems := await self.problems(host):
            if time.monotonic() > deadline:
                units = ["etcd"] if any(p.startswith("etcd") for p in problems) else []
                units += [p.split()[0] for p in problems if not p.startswith("etcd")]
                log = kubexm_command(host, "run", "command", "--nodes", host.name, "--", "journalctl", "-n", "30",
                                     *(w for u in units[:2] for w in ("-u", u)))
                raise StepFailed(f"{host.name} is unhealthy after its change: {'; '.join(problems)}; "
                                 "no further node was changed",
                                 hint=f"see `{log}`, fix {host.name}, then run the same command again "
                                      "(nodes already changed are skipped)")
            await asyncio.sleep(2)

"""Service-account signing key rotation and bootstrap tokens.

The rotation is three phases, each rolled over the control-plane nodes one at a time (tasks are barriers, so
no node starts a phase before every node finished the one before):

1. ``verify``: the new public key is added to kube-apiserver's ``--service-account-key-file`` (tokens signed
   by either key are accepted);
2. ``sign``: kube-apiserver signs with the new key (``--service-account-signing-key-file``), and so does
   kube-controller-manager (``--service-account-private-key-file``);
3. ``retired``, after the grace period: the new pair becomes ``sa.key``/``sa.pub`` on every node and in the
   local PKI, and the flags return to kubeadm's defaults, so the old key is no longer accepted and a later
   ``kubeadm upgrade`` (which renders from kubeadm's defaults) keeps the new key.

The flags go through kubexm's kubeadm configuration (``cluster_configuration``'s extraArgs) and
``kubeadm init phase control-plane``, which rewrites the static pod manifests the same way ``kubeadm init``
wrote them. v1beta4 configurations (Kubernetes 1.31+) take the two key files as two flags; v1beta3's
extraArgs is a map, so there one file holds both public keys (kube-apiserver reads every key in the file).

Progress: the phase and its timestamps live beside the keys in the local PKI (``sa-rotation.json``); each
node's own progress is read from its manifests, so an interrupted rotation resumes where it stopped.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from ruamel.yaml import YAML

from kubexm.engine.context import HostContext
from kubexm.engine.step import Step
from kubexm.errors import StepFailed, UsageError
from kubexm.hosts.shell import Cmd, sh
from kubexm.kube import commands
from kubexm.kube.kubeadm import (
    PKI_DIR,
    TOKEN_CONFIG,
    api_version,
    cluster_configuration,
    dump,
    is_v1beta4,
    new_token,
    node_registration,
)
from kubexm.pki import PKI
from kubexm.pki.certs import key_pem, load_key, new_key, public_pem, write_private, write_public
from kubexm.spec.models import Cluster
from kubexm.steps.etcd import cluster_pki
from kubexm.steps.kubernetes import endpoint

Phase = Literal["verify", "sign", "retired"]

SA_KEY = f"{PKI_DIR}/sa.key"
SA_PUB = f"{PKI_DIR}/sa.pub"
NEXT_KEY = f"{PKI_DIR}/sa-next.key"
NEXT_PUB = f"{PKI_DIR}/sa-next.pub"
VERIFY_BUNDLE = f"{PKI_DIR}/sa-verify.pub"  # v1beta3 only: both public keys in one file
ROTATION_CONFIG = "/etc/kubernetes/kubeadm-sa-rotation.yaml"
MANIFESTS = "/etc/kubernetes/manifests"
COMPONENTS = ("kube-apiserver", "kube-controller-manager")
DEFAULT_GRACE = 24 * 3600
RESTART_TIMEOUT = 240.0
POLL = 3.0


# -- durations ---------------------------------------------------------------------------------------------

_DURATION = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")


def parse_duration(text: str, flag: str) -> int:
    """Seconds of a duration like ``24h``, ``90m``, ``1h30m``, ``7d`` or ``0`` (Go's units, plus days)."""
    m = _DURATION.fullmatch(text.strip())
    if text.strip() == "0":
        return 0
    if not text.strip() or m is None:
        raise UsageError(f"{flag} {text!r} is not a duration", hint=f"write it like 24h, 90m, 1h30m or 7d ({flag} 0: none)")
    d, h, mi, s = (int(g or 0) for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + s


def go_duration(seconds: int) -> str:
    """The form kubeadm's configuration reads (``24h0m0s``)."""
    return f"{seconds // 3600}h{seconds % 3600 // 60}m{seconds % 60}s"


def when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


# -- the rotation's record and keys on the deploy machine ---------------------------------------------------

@dataclass
class Rotation:
    """An unfinished rotation: ``phase`` is the last phase started (``verify``, ``sign`` or ``retire``)."""

    phase: str
    started: float
    grace_seconds: int
    signing_since: float | None = None

    def retire_after(self) -> float | None:
        return None if self.signing_since is None else self.signing_since + self.grace_seconds


def _record(pki: PKI) -> Path:
    return pki.root / "sa-rotation.json"


def load_rotation(pki: PKI) -> Rotation | None:
    path = _record(pki)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        return Rotation(str(data["phase"]), float(data["started"]), int(data["grace_seconds"]),
                        None if data.get("signing_since") is None else float(data["signing_since"]))
    except (ValueError, KeyError, TypeError):
        raise StepFailed(f"{path} is not a readable rotation record",
                         hint="restore it from a backup; it says which phase the service-account key rotation "
                              "reached") from None


def save_rotation(pki: PKI, rotation: Rotation) -> None:
    path = _record(pki)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(asdict(rotation), indent=2) + "\n")
    os.replace(tmp, path)


def next_pair(pki: PKI) -> tuple[Path, Path]:
    return pki.root / "sa-next.key", pki.root / "sa-next.pub"


def ensure_next_key(pki: PKI) -> bool:
    """The new signing key pair (RSA, as kubeadm makes sa.key); an existing one is kept (a resumed rotation)."""
    key_path, pub_path = next_pair(pki)
    if key_path.is_file() and pub_path.is_file():
        return False
    key = new_key("rsa")
    write_private(key_path, key_pem(key))
    write_public(pub_path, public_pem(key))
    return True


def promote_next_key(pki: PKI) -> None:
    """sa.key/sa.pub become the new pair (each written atomically); sa-next stays until every node has it."""
    key_path, pub_path = next_pair(pki)
    data = key_path.read_bytes()
    load_key(data, str(key_path))  # a damaged key must not replace a working one
    write_private(pki.key("sa"), data)
    write_public(pki.root / "sa.pub", pub_path.read_bytes())


def next_files(cluster: Cluster) -> list[tuple[bytes, str, int]]:
    """(content, path on a control-plane node, mode) of what phases 1 and 2 need on every node."""
    pki = cluster_pki(cluster)
    key_path, pub_path = next_pair(pki)
    new_pub = pub_path.read_bytes()
    files = [(key_path.read_bytes(), NEXT_KEY, 0o600), (new_pub, NEXT_PUB, 0o644)]
    if not is_v1beta4(cluster):
        files.append(((pki.root / "sa.pub").read_bytes() + new_pub, VERIFY_BUNDLE, 0o644))
    return files


# -- flags ---------------------------------------------------------------------------------------------------

def overrides(cluster: Cluster, phase: Phase) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(kube-apiserver, kube-controller-manager) extra arguments of ``phase``; none once retired."""
    if phase == "retired":
        return [], []
    if is_v1beta4(cluster):
        verify = [("service-account-key-file", SA_PUB), ("service-account-key-file", NEXT_PUB)]
    else:
        verify = [("service-account-key-file", VERIFY_BUNDLE)]
    if phase == "verify":
        return verify, []
    return ([*verify, ("service-account-signing-key-file", NEXT_KEY)],
            [("service-account-private-key-file", NEXT_KEY)])


def _patch(cluster: Cluster, section: dict[str, Any], args: list[tuple[str, str]]) -> None:
    """Set ``args`` in a component's extraArgs, replacing the spec's own values of the same flags."""
    if not args:
        return
    names = {n for n, _ in args}
    if is_v1beta4(cluster):
        kept = [a for a in section.get("extraArgs") or [] if a["name"] not in names]
        section["extraArgs"] = [*kept, *({"name": n, "value": v} for n, v in args)]
    else:  # a map: every name once (phase 1 and 2 use the bundle file for that reason)
        section["extraArgs"] = {**(section.get("extraArgs") or {}), **dict(args)}


def rotation_config(cluster: Cluster, node: str, phase: Phase) -> str:
    """What ``kubeadm init phase control-plane`` reads on ``node``: its endpoint, and the cluster configuration
    kubexm renders for every run with the phase's flags. No bootstrap token (kubeadm makes none here)."""
    host = cluster.host(node)
    init = {"apiVersion": api_version(cluster), "kind": "InitConfiguration",
            "localAPIEndpoint": {"advertiseAddress": host.internal_ip, "bindPort": 6443},
            "nodeRegistration": node_registration(cluster, host, control_plane=True)}
    conf = cluster_configuration(cluster, endpoint(cluster))
    api, cm = overrides(cluster, phase)
    _patch(cluster, conf["apiServer"], api)
    _patch(cluster, conf["controllerManager"], cm)
    return dump([init, conf])


@dataclass(frozen=True)
class Flags:
    keys: frozenset[str]  # --service-account-key-file values
    signing: str  # --service-account-signing-key-file
    private: str  # kube-controller-manager's --service-account-private-key-file


def wanted_flags(cluster: Cluster, phase: Phase) -> Flags:
    api, cm = overrides(cluster, phase)
    keys = frozenset(v for n, v in api if n == "service-account-key-file") or frozenset({SA_PUB})
    signing = next((v for n, v in api if n == "service-account-signing-key-file"), SA_KEY)
    private = next((v for n, v in cm if n == "service-account-private-key-file"), SA_KEY)
    return Flags(keys, signing, private)


def manifest_flags(text: str) -> dict[str, list[str]]:
    """``--name=value`` arguments of a static pod manifest's first container, by name."""
    doc = YAML(typ="safe").load(text) or {}
    try:
        command = doc["spec"]["containers"][0]["command"]
    except (KeyError, IndexError, TypeError):
        return {}
    out: dict[str, list[str]] = {}
    for arg in command if isinstance(command, list) else []:
        if isinstance(arg, str) and arg.startswith("--") and "=" in arg:
            name, value = arg[2:].split("=", 1)
            out.setdefault(name, []).append(value)
    return out


def node_flags(apiserver: str | None, controller_manager: str | None) -> Flags | None:
    """The service-account flags a node's manifests hold (kubeadm's defaults where a flag is absent)."""
    if apiserver is None or controller_manager is None:
        return None
    api, cm = manifest_flags(apiserver), manifest_flags(controller_manager)
    return Flags(frozenset(api.get("service-account-key-file") or [SA_PUB]),
                 (api.get("service-account-signing-key-file") or [SA_KEY])[-1],
                 (cm.get("service-account-private-key-file") or [SA_KEY])[-1])


def reached(cluster: Cluster, have: Flags | None, phase: Phase) -> bool:
    """Whether a node's flags are at ``phase`` or beyond it (a resumed phase 1 never undoes phase 2)."""
    if have is None:
        return False
    if phase == "verify":
        return have in (wanted_flags(cluster, "verify"), wanted_flags(cluster, "sign"))
    return have == wanted_flags(cluster, phase)


def manifest(component: str) -> str:
    return f"{MANIFESTS}/{component}.yaml"


def control_plane_phase(component: str) -> Cmd:
    return sh("kubeadm", "init", "phase", "control-plane", component.removeprefix("kube-"), "--config", ROTATION_CONFIG)


def container_ids(component: str) -> Cmd:
    return sh("crictl", "ps", "-q", "--name", f"^{component}$", readonly=True)


def local_apiserver_readyz() -> Cmd:
    """This node's own kube-apiserver (not the balanced endpoint, which another node may answer)."""
    return commands.kubectl_get("--raw=/readyz", "--server=https://127.0.0.1:6443", "--request-timeout=5s")


async def local_apiserver_ready(host: HostContext) -> bool:
    res = await host.run(local_apiserver_readyz(), check=False)
    return res.ok and res.stdout.strip() == "ok"


# -- steps: deploy machine -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BeginRotation(Step):
    """The new key pair in the local PKI and the rotation's record, before any node is touched."""

    grace_seconds: int = DEFAULT_GRACE

    def describe(self) -> str:
        return "generate the new service-account key pair and record the rotation"

    async def check(self, host: HostContext) -> bool:
        pki = cluster_pki(host.cluster)
        return load_rotation(pki) is not None and all(p.is_file() for p in next_pair(pki))

    async def run(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        if not pki.key("sa").is_file():
            raise StepFailed(f"{pki.key('sa')} is missing: there is no current service-account key to rotate from",
                             hint="restore the cluster's PKI directory from a backup; kubexm does not guess a key")
        ensure_next_key(pki)
        if load_rotation(pki) is None:
            save_rotation(pki, Rotation("verify", time.time(), self.grace_seconds))
        host.emit("message", message="new service-account key pair: sa-next.key/sa-next.pub in the cluster's PKI")


@dataclass(frozen=True)
class MarkSigningSwitched(Step):
    """Every control plane signs with the new key: the grace period starts now."""

    def describe(self) -> str:
        return "record that the new key signs (the grace period starts)"

    async def check(self, host: HostContext) -> bool:
        rotation = load_rotation(cluster_pki(host.cluster))
        return rotation is not None and rotation.phase in ("sign", "retire")

    async def run(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        rotation = load_rotation(pki) or Rotation("verify", time.time(), DEFAULT_GRACE)
        rotation.phase, rotation.signing_since = "sign", time.time()
        save_rotation(pki, rotation)
        host.emit("message", message=f"the old key is still accepted until {when(rotation.retire_after() or 0)}")


@dataclass(frozen=True)
class PromoteNextKey(Step):
    """Phase 3 starts: sa.key/sa.pub in the local PKI become the new pair, recorded first so a re-run resumes."""

    def describe(self) -> str:
        return "make the new key pair sa.key/sa.pub in the local PKI"

    async def check(self, host: HostContext) -> bool:
        pki = cluster_pki(host.cluster)
        rotation = load_rotation(pki)
        key_path, _ = next_pair(pki)
        return (rotation is not None and rotation.phase == "retire" and key_path.is_file()
                and pki.key("sa").is_file() and key_path.read_bytes() == pki.key("sa").read_bytes())

    async def run(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        rotation = load_rotation(pki)
        if rotation is None or not next_pair(pki)[0].is_file():
            raise StepFailed("no service-account key rotation is in progress", hint="`kubexm token rotate` starts one")
        rotation.phase = "retire"
        save_rotation(pki, rotation)
        promote_next_key(pki)


@dataclass(frozen=True)
class EndRotation(Step):
    """Every node verifies and signs with the new key only: the spare pair and the record go."""

    def describe(self) -> str:
        return "remove the rotation's record and the spare key pair"

    async def check(self, host: HostContext) -> bool:
        pki = cluster_pki(host.cluster)
        return load_rotation(pki) is None and not any(p.exists() for p in next_pair(pki))

    async def run(self, host: HostContext) -> None:
        pki = cluster_pki(host.cluster)
        for path in next_pair(pki):
            path.unlink(missing_ok=True)
        _record(pki).unlink(missing_ok=True)
        host.emit("message", message="service-account key rotated; the old key is no longer accepted")


# -- steps: control-plane nodes ------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlaceNextKey(Step):
    """The new pair (and for v1beta3 the two-key bundle) on the node, for phases 1 and 2."""

    check_unprivileged = False

    def describe(self) -> str:
        return f"place the new service-account key pair in {PKI_DIR}"

    def check_digests(self, host: HostContext) -> dict[str, str] | None:
        try:
            files = next_files(host.cluster)
        except OSError:
            return None  # not generated yet (a dry run): it would be placed
        return {remote: hashlib.sha256(data).hexdigest() for data, remote, _ in files}

    async def check(self, host: HostContext) -> bool:
        digests = self.check_digests(host)
        if digests is None:
            return False
        for remote, wanted in digests.items():
            if await host.sha256(remote) != wanted:
                return False
        return True

    async def run(self, host: HostContext) -> None:
        for data, remote, mode in next_files(host.cluster):
            await host.upload(data, remote, mode=mode)


@dataclass(frozen=True)
class ServiceAccountKeyPhase(Step):
    """One phase on one control-plane node: manifests rewritten by kubeadm from kubexm's configuration, then
    the restarted kube-apiserver (and kube-controller-manager where its manifest changed) waited for."""

    phase: Phase
    restart_timeout: float = RESTART_TIMEOUT

    def describe(self) -> str:
        return {"verify": "accept tokens signed by the new service-account key too",
                "sign": "sign service-account tokens with the new key",
                "retired": "retire the old service-account key"}[self.phase]

    async def _flags(self, host: HostContext) -> Flags | None:
        return node_flags(await host.read_text(manifest("kube-apiserver")),
                          await host.read_text(manifest("kube-controller-manager")))

    async def _retired_files(self, host: HostContext) -> bool:
        pki = cluster_pki(host.cluster)
        try:
            wanted = hashlib.sha256(pki.key("sa").read_bytes()).hexdigest()
        except OSError:
            return False
        gone = sh("test", "!", "-e", NEXT_KEY, readonly=True) & sh("test", "!", "-e", NEXT_PUB, readonly=True) \
            & sh("test", "!", "-e", VERIFY_BUNDLE, readonly=True)
        return await host.sha256(SA_KEY) == wanted and (await host.run(gone, check=False)).ok

    async def check(self, host: HostContext) -> bool:
        if not reached(host.cluster, await self._flags(host), self.phase):
            return False
        if self.phase == "retired" and not await self._retired_files(host):
            return False
        return await local_apiserver_ready(host)

    async def run(self, host: HostContext) -> None:
        cluster = host.cluster
        if not await local_apiserver_ready(host):
            raise StepFailed(f"kube-apiserver on {host.name} is not ready; the rotation restarts only healthy "
                             "control-plane nodes",
                             hint=f"see `crictl ps -a` and `journalctl -u kubelet` on {host.name}, then re-run "
                                  "`kubexm token rotate` to go on from this node")
        keys_changed = False
        if self.phase == "retired":
            pki = cluster_pki(cluster)
            keys_changed = await host.upload(pki.key("sa").read_bytes(), SA_KEY, mode=0o600)
            keys_changed = await host.upload((pki.root / "sa.pub").read_bytes(), SA_PUB, mode=0o644) or keys_changed
        before = {c: (await host.sha256(manifest(c)), await self._ids(host, c)) for c in COMPONENTS}
        await host.upload(rotation_config(cluster, host.name, self.phase).encode(), ROTATION_CONFIG, mode=0o600)
        try:
            for component in COMPONENTS:
                await host.run(control_plane_phase(component), timeout=host.timeout_for("long"))
        finally:
            await host.run(commands.remove(ROTATION_CONFIG), check=False)
        have = await self._flags(host)
        if have != wanted_flags(cluster, self.phase):
            raise StepFailed(f"{host.name}: kubeadm wrote manifests without the service-account flags of phase "
                             f"{self.phase}", hint="compare /etc/kubernetes/manifests/kube-apiserver.yaml with "
                                                   "spec.kubernetes.apiServerExtraArgs; remove service-account flags "
                                                   "from the cluster file")
        for component in COMPONENTS:
            digest, ids = before[component]
            if await host.sha256(manifest(component)) == digest:
                if not keys_changed:
                    continue
                # Same flags, new key files (a node that never had the new pair): kubelet would not restart it.
                await host.run(commands.restart_static_pod(component), timeout=180)
            await self._wait_restarted(host, component, ids)
        if self.phase == "retired":
            await host.run(sh("rm", "-f", "--", NEXT_KEY, NEXT_PUB, VERIFY_BUNDLE))

    @staticmethod
    async def _ids(host: HostContext, component: str) -> set[str]:
        res = await host.run(container_ids(component), check=False)
        return set(res.stdout.split()) if res.ok else set()

    async def _wait_restarted(self, host: HostContext, component: str, before: set[str]) -> None:
        """A container of ``component`` that was not running before (kubelet restarts static pods whose
        manifest changed), and for kube-apiserver an answer to /readyz from it."""
        deadline = time.monotonic() + self.restart_timeout
        while True:
            ids = await self._ids(host, component)
            if ids and not ids & before and (component != "kube-apiserver" or await local_apiserver_ready(host)):
                return
            if time.monotonic() > deadline:
                raise StepFailed(f"{component} on {host.name} did not come back within {int(self.restart_timeout)}s "
                                 f"of its new manifest; the rotation stopped here, later nodes were not touched",
                                 hint=f"see `crictl ps -a` and `journalctl -u kubelet` on {host.name}, then re-run "
                                      "`kubexm token rotate`")
            await asyncio.sleep(POLL)


# -- bootstrap tokens ----------------------------------------------------------------------------------------

TOKEN_ID = re.compile(r"[a-z0-9]{6}")
BOOTSTRAP_GROUP = "system:bootstrappers:kubeadm:default-node-token"
# Go template for kubectl (base64decode is kubectl's): one line per token with id, expiry, usages, groups,
# description. The token's secret half is never selected, so it does not leave the node.
_LIST_TEMPLATE = (
    '{{range .items}}{{index .data "token-id" | base64decode}}{{"\\t"}}'
    '{{with index .data "expiration"}}{{base64decode .}}{{end}}{{"\\t"}}'
    '{{with index .data "usage-bootstrap-authentication"}}authentication {{end}}'
    '{{with index .data "usage-bootstrap-signing"}}signing{{end}}{{"\\t"}}'
    '{{with index .data "auth-extra-groups"}}{{base64decode .}}{{end}}{{"\\t"}}'
    '{{with index .data "description"}}{{base64decode .}}{{end}}{{"\\n"}}{{end}}'
)


def list_tokens_command() -> Cmd:
    """The bootstrap-token Secrets `kubeadm token list` reads, read-only and without their secret half."""
    return commands.kubectl_get("secrets", "-n", "kube-system", "--field-selector=type=bootstrap.kubernetes.io/token",
                                "-o", f"go-template={_LIST_TEMPLATE}")


@dataclass(frozen=True)
class TokenInfo:
    id: str
    expires: str  # RFC 3339, "" for a token that never expires
    usages: str
    groups: str
    description: str

    def ttl(self, now: float | None = None) -> str:
        if not self.expires:
            return "<forever>"
        try:
            left = datetime.fromisoformat(self.expires.replace("Z", "+00:00")).timestamp() - (now or time.time())
        except ValueError:
            return "?"
        if left <= 0:
            return "expired"
        days, hours, minutes = int(left) // 86400, int(left) % 86400 // 3600, int(left) % 3600 // 60
        return f"{days}d{hours}h" if days else f"{hours}h{minutes}m" if hours else f"{minutes}m"


def parse_tokens(stdout: str) -> list[TokenInfo]:
    out = []
    for line in stdout.splitlines():
        parts = line.split("\t", 4)
        if len(parts) == 5 and TOKEN_ID.fullmatch(parts[0]):
            out.append(TokenInfo(parts[0], parts[1], ",".join(parts[2].split()), parts[3], parts[4]))
    return out


async def list_tokens(host: HostContext) -> list[TokenInfo]:
    res = await host.run(list_tokens_command(), check=False)
    if not res.ok:
        raise StepFailed(f"cannot list bootstrap tokens on {host.name}: {res.stderr.strip()[:200]}",
                         hint="the API server must answer on the first control-plane node")
    return parse_tokens(res.stdout)


def token_id(text: str) -> str:
    """A token id from the command line; the full token (id.secret) is refused: the secret must not be in argv."""
    if "." in text:
        raise UsageError("pass the token id only (the 6 characters before the dot): the secret half does not "
                         "belong on a command line", hint="`kubexm token list` shows the ids")
    if not TOKEN_ID.fullmatch(text):
        raise UsageError(f"{text!r} is not a bootstrap token id (6 characters a-z, 0-9)",
                         hint="`kubexm token list` shows the ids")
    return text


def create_config(cluster: Cluster, token: str, ttl_seconds: int, description: str) -> str:
    """For `kubeadm token create --config`: the token is read from this 0600 file, never from argv."""
    entry: dict[str, Any] = {"token": token, "ttl": go_duration(ttl_seconds),
                             "usages": ["signing", "authentication"], "groups": [BOOTSTRAP_GROUP]}
    if description:
        entry["description"] = description
    return dump([{"apiVersion": api_version(cluster), "kind": "InitConfiguration", "bootstrapTokens": [entry]}])


@dataclass(frozen=True)
class ListBootstrapTokens(Step):
    mutates = False

    def describe(self) -> str:
        return "list bootstrap tokens"

    async def run(self, host: HostContext) -> None:
        host.run_ctx.shared["bootstrap-tokens"] = [asdict(t) for t in await list_tokens(host)]


@dataclass(frozen=True)
class CreateBootstrapToken(Step):
    """A new token from a 0600 file; kubeadm's echo of it is discarded. The caller prints it, once."""

    ttl_seconds: int = DEFAULT_GRACE
    description: str = ""
    retryable = False  # a repeat after a transport fault would make a second token

    def describe(self) -> str:
        return "create a bootstrap token"

    async def run(self, host: HostContext) -> None:
        token = new_token()
        await host.upload(create_config(host.cluster, token, self.ttl_seconds, self.description).encode(),
                          TOKEN_CONFIG, mode=0o600)
        try:
            await host.run(commands.token_create(), display="kubeadm token create")
        finally:
            await host.run(commands.remove(TOKEN_CONFIG), check=False)
        host.run_ctx.shared["bootstrap-token"] = token
        host.emit("message", message=f"created bootstrap token {token.split('.', 1)[0]}")


@dataclass(frozen=True)
class DeleteBootstrapToken(Step):
    id: str

    def describe(self) -> str:
        return f"delete bootstrap token {self.id}"

    async def check(self, host: HostContext) -> bool:
        return self.id not in {t.id for t in await list_tokens(host)}

    async def run(self, host: HostContext) -> None:
        await host.run(commands.token_delete(self.id))

"""`kubexm token`: the service-account key rotation, and bootstrap tokens on the first control plane."""

from __future__ import annotations

import time

from kubexm.engine import SERIAL, Module, Pipeline, Task, deploy_machine, first, role
from kubexm.engine.context import HostContext, RunContext
from kubexm.engine.step import Step
from kubexm.spec.models import Cluster
from kubexm.steps.etcd import cluster_pki
from kubexm.steps.tokens import (
    DEFAULT_GRACE,
    BeginRotation,
    CreateBootstrapToken,
    DeleteBootstrapToken,
    EndRotation,
    ListBootstrapTokens,
    MarkSigningSwitched,
    PlaceNextKey,
    PromoteNextKey,
    Rotation,
    ServiceAccountKeyPhase,
    load_rotation,
    when,
)

TAGS = frozenset({"kubernetes", "service-account"})
PLAN_COLUMNS = ["phase", "what", "when"]
_WHAT = {
    "verify": "every control plane, one at a time, accepts tokens signed by the new key too",
    "sign": "every control plane, one at a time, signs with the new key",
    "retire": "every control plane, one at a time, stops accepting the old key",
}


def decide(rotation: Rotation | None, now: float, finish: bool, grace: int | None) -> list[str]:
    """The phases this run goes through: ``start`` (a new key and record), ``verify``, ``sign``, ``retire``.

    A new rotation goes up to ``sign``; the old key is retired by a run after the grace period (counted from
    the signing switch), or by ``--finish`` at once. An interrupted phase is resumed."""
    if rotation is None:
        return ["start", "verify", "sign", *(["retire"] if finish else [])]
    if rotation.phase == "verify":
        return ["verify", "sign", *(["retire"] if finish else [])]
    if rotation.phase == "retire":
        return ["retire"]
    since = rotation.signing_since if rotation.signing_since is not None else now
    due = since + (rotation.grace_seconds if grace is None else grace)
    return ["retire"] if finish or now >= due else []


def _rows(rotation: Rotation | None, phases: list[str], now: float, grace: int) -> list[list[str]]:
    since = rotation.signing_since if rotation is not None and rotation.signing_since is not None else now
    rows = []
    for n, phase in enumerate(("verify", "sign", "retire"), 1):
        if phase in phases:
            at = "now"
        elif phase == "retire":
            at = f"after {when(since + grace)}: re-run `kubexm token rotate` (or pass --finish)"
        else:
            at = "done"
        rows.append([str(n), _WHAT[phase], at])
    return rows


def plan_rotation(host: HostContext) -> list[Step]:
    """Decides and reports the phases (offline plans too), before anything changes; returns the first step."""
    extra = host.run_ctx.options.extra
    grace_given = extra.get("grace")
    rotation = load_rotation(cluster_pki(host.cluster))
    now = time.time()
    phases = decide(rotation, now, bool(extra.get("finish")), None if grace_given is None else int(grace_given))
    host.run_ctx.shared["sa-rotation-phases"] = phases
    grace = int(grace_given) if grace_given is not None else (rotation.grace_seconds if rotation else DEFAULT_GRACE)
    host.run_ctx.emit_report("Service-account key rotation", PLAN_COLUMNS, _rows(rotation, phases, now, grace))
    return [BeginRotation(grace)] if "start" in phases else []


def _phases(run: RunContext) -> list[str]:
    phases: list[str] = run.shared.get("sa-rotation-phases", [])
    return phases


def _when(phase: str, *steps: Step) -> object:
    def steps_for(host: HostContext) -> list[Step]:
        return list(steps) if phase in _phases(host.run_ctx) else []
    return steps_for


def _then(phase: str, *steps: Step) -> object:
    def then(run: RunContext) -> list[Step]:
        return list(steps) if phase in _phases(run) else []
    return then


def _kubeadm(cluster: Cluster) -> bool:
    return cluster.spec.kubernetes.deploy_mode == "kubeadm"


CONTROL_PLANES = role("control-plane")

PlanRotation = Task("PlanServiceAccountKeyRotation", steps=plan_rotation, hosts=deploy_machine(),
                    tags=TAGS | {"plan"}, description="which phases this run goes through (from the local record)")
PlaceKeys = Task("PlaceNewServiceAccountKey", steps=_when("verify", PlaceNextKey()),  # type: ignore[arg-type]
                 hosts=CONTROL_PLANES, tags=TAGS,
                 description="the new key pair on every control-plane node")
TrustNewKey = Task("TrustNewServiceAccountKey", steps=_when("verify", ServiceAccountKeyPhase("verify")),  # type: ignore[arg-type]
                   hosts=CONTROL_PLANES, tags=TAGS, strategy=SERIAL,
                   description="phase 1: kube-apiserver verifies both keys, one node at a time")
SignWithNewKey = Task("SignWithNewServiceAccountKey", steps=_when("sign", ServiceAccountKeyPhase("sign")),  # type: ignore[arg-type]
                      hosts=CONTROL_PLANES, tags=TAGS, strategy=SERIAL,
                      then=_then("sign", MarkSigningSwitched()), then_on=deploy_machine(),  # type: ignore[arg-type]
                      description="phase 2: tokens signed with the new key, one node at a time; the grace starts")
PromoteKey = Task("PromoteNewServiceAccountKey", steps=_when("retire", PromoteNextKey()),  # type: ignore[arg-type]
                  hosts=deploy_machine(), tags=TAGS,
                  description="phase 3 starts: the new pair becomes sa.key/sa.pub in the local PKI")
RetireOldKey = Task("RetireOldServiceAccountKey", steps=_when("retire", ServiceAccountKeyPhase("retired")),  # type: ignore[arg-type]
                    hosts=CONTROL_PLANES, tags=TAGS, strategy=SERIAL,
                    then=_then("retire", EndRotation()), then_on=deploy_machine(),  # type: ignore[arg-type]
                    description="phase 3: the old key is no longer accepted, one node at a time")

ROTATE_SA_KEY = Pipeline(
    "RotateServiceAccountKeyPipeline",
    [Module("ServiceAccountKeyRotation", [PlanRotation, PlaceKeys, TrustNewKey, SignWithNewKey, PromoteKey,
                                          RetireOldKey], enabled=_kubeadm, tags=TAGS,
            description="rotate the key that signs service-account tokens, without rejecting valid tokens")],
    description="rotate the service-account signing key: trust the new key, sign with it, retire the old one",
)

BOOTSTRAP = frozenset({"kubernetes", "bootstrap-token"})


def _token_steps(kind: str) -> object:
    def steps(host: HostContext) -> list[Step]:
        extra = host.run_ctx.options.extra
        if kind == "create":
            return [CreateBootstrapToken(int(extra.get("ttl", DEFAULT_GRACE)), str(extra.get("description", "")))]
        return [DeleteBootstrapToken(str(extra["token_id"]))]
    return steps


def _token_pipeline(verb: str, steps: object, description: str) -> Pipeline:
    task = Task(f"{verb}BootstrapToken{'s' if verb == 'List' else ''}", steps=steps,  # type: ignore[arg-type]
                hosts=first(CONTROL_PLANES), tags=BOOTSTRAP, description=description)
    module = Module(f"{verb}BootstrapTokensModule", [task], enabled=_kubeadm, tags=BOOTSTRAP)
    return Pipeline(f"{verb}BootstrapToken{'s' if verb == 'List' else ''}Pipeline", [module], description=description)


LIST_TOKENS = _token_pipeline("List", [ListBootstrapTokens()], "list bootstrap tokens, without their secret half")
CREATE_TOKEN = _token_pipeline("Create", _token_steps("create"), "create a bootstrap token with a TTL")
DELETE_TOKEN = _token_pipeline("Delete", _token_steps("delete"), "delete a bootstrap token by its id")

ALL = [ROTATE_SA_KEY, LIST_TOKENS, CREATE_TOKEN, DELETE_TOKEN]

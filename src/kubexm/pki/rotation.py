"""CA rotation on the deploy machine: the new CA, the bundles nodes trust in each phase, and the record that
lets an interrupted rotation resume.

A rotation of one CA (``kubernetes``: ``ca``, ``etcd``: ``etcd/ca``, ``front-proxy``: ``front-proxy-ca``) goes
through three phases, each rolled over the nodes one at a time:

1. ``trust``: a new CA is made (``<ca>-next`` in the local PKI); every node trusts old and new (its CA file
   holds both, the signing CA first, so a CA key beside it still matches the first certificate);
2. ``reissue``: the new CA becomes ``<ca>`` (the old one is kept as ``<ca>-old``), every leaf and kubeconfig
   identity it signs is re-issued from it, and each node receives them (it still trusts both CAs);
3. ``drop``: every node trusts the new CA only; then ``<ca>-old`` and the record are removed.

``ca-rotation.json`` in the PKI directory holds the component, the phase and, per phase, the node passes
done (``NODE/GROUP``), so a re-run goes on at the phase and node where the last run stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from kubexm.errors import KubexmError, UsageError
from kubexm.pki.certs import CertSpec, cert_pem, key_pem, make_ca, new_key, write_private, write_public
from kubexm.pki.layout import CA, ETCD_CA, FRONT_PROXY_CA
from kubexm.pki.store import PKI, Change

if TYPE_CHECKING:
    from kubexm.spec.models import Cluster

RECORD = "ca-rotation.json"
PHASES = ("trust", "reissue", "drop")
CA_OF = {"kubernetes": CA, "etcd": ETCD_CA, "front-proxy": FRONT_PROXY_CA}
# The leaves (`certs renew` names) each CA signs, re-issued in phase 2.
LEAVES = {
    "kubernetes": ("apiserver", "apiserver-kubelet-client", "admin.conf", "super-admin.conf", "controller-manager.conf",
                   "scheduler.conf", "kubelet.conf", "kubelet-client", "kubelet-serving"),
    "etcd": ("etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client"),
    "front-proxy": ("front-proxy-client",),
}
PHASE_WHAT = {
    "trust": "every node trusts the old and the new CA (CA files and kubeconfigs' certificate-authority-data)",
    "reissue": "the new CA signs: every leaf and kubeconfig identity re-issued from it and placed",
    "drop": "every node trusts the new CA only",
}


def next_path(ca: str) -> str:
    return f"{ca}-next"


def old_path(ca: str) -> str:
    return f"{ca}-old"


@dataclass
class CARotation:
    """An unfinished rotation: ``phase`` is the phase started last; ``done[phase]`` the node passes finished."""

    component: str
    phase: str
    started: str
    done: dict[str, list[str]] = field(default_factory=dict)
    reissued: bool = False

    @property
    def ca(self) -> str:
        return CA_OF[self.component].path

    def is_done(self, phase: str, node: str, group: str) -> bool:
        return f"{node}/{group}" in self.done.get(phase, [])

    def as_json(self) -> dict[str, object]:
        return {"component": self.component, "phase": self.phase, "started": self.started,
                "done": {p: sorted(set(v)) for p, v in self.done.items()}, "reissued": self.reissued}


def record_path(pki: PKI) -> Path:
    return pki.root / RECORD


def load(pki: PKI) -> CARotation | None:
    path = record_path(pki)
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
        rotation = CARotation(str(data["component"]), str(data["phase"]), str(data["started"]),
                              {str(k): [str(x) for x in v] for k, v in dict(data.get("done") or {}).items()},
                              bool(data.get("reissued", False)))
    except (ValueError, KeyError, TypeError, AttributeError):
        raise KubexmError(f"{path} is not a readable CA rotation record",
                          hint="restore it from a backup of the PKI directory; it says which phase the rotation "
                               "reached") from None
    if rotation.component not in CA_OF or rotation.phase not in PHASES:
        raise KubexmError(f"{path} names an unknown component or phase ({rotation.component}, {rotation.phase})",
                          hint="restore it from a backup of the PKI directory")
    return rotation


def save(pki: PKI, rotation: CARotation) -> None:
    path = record_path(pki)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(rotation.as_json(), indent=2) + "\n")
    os.replace(tmp, path)


def mark_done(pki: PKI, phase: str, node: str, group: str) -> None:
    rotation = load(pki)
    if rotation is None:
        return
    rotation.done.setdefault(phase, [])
    if f"{node}/{group}" not in rotation.done[phase]:
        rotation.done[phase].append(f"{node}/{group}")
    save(pki, rotation)


def begin(pki: PKI, component: str) -> tuple[CARotation, Change | None]:
    """Phase 1 starts: the new CA (same name, new key; an existing ``-next`` of an interrupted start is kept)."""
    spec = CA_OF[component]
    if not pki.crt(spec.path).is_file():
        raise KubexmError(f"the {component} CA {pki.crt(spec.path)} is missing on this machine, so there is no CA "
                          "to rotate from", hint="restore the cluster's PKI directory from a backup")
    nxt = CertSpec(next_path(spec.path), spec.common_name, "", spec.organizations, spec.dns_names)
    change = None
    if not pki.exists(nxt.path):
        key = new_key(pki.key_type)
        write_private(pki.key(nxt.path), key_pem(key))
        write_public(pki.crt(nxt.path), cert_pem(make_ca(nxt, key, pki.ca_days)))
        change = Change(nxt.path, "created")
    rotation = CARotation(component, "trust", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    save(pki, rotation)
    return rotation, change


def promote(pki: PKI, ca: str) -> bool:
    """Phase 2 starts: ``<ca>`` becomes ``<ca>-old`` and ``<ca>-next`` becomes ``<ca>``. Safe to repeat: a
    promotion cut short between the two moves finishes, a finished one changes nothing."""
    nxt, old = next_path(ca), old_path(ca)
    if not pki.exists(nxt):
        if pki.exists(old) and pki.exists(ca):
            return False  # promoted already
        raise KubexmError(f"the new CA {pki.crt(nxt)} is missing, so the rotation cannot go on",
                          hint="restore the PKI directory from a backup taken during the rotation")
    if not pki.exists(old):
        write_private(pki.key(old), pki.key(ca).read_bytes())
        write_public(pki.crt(old), pki.crt(ca).read_bytes())
    write_private(pki.key(ca), pki.key(nxt).read_bytes())
    write_public(pki.crt(ca), pki.crt(nxt).read_bytes())
    pki.key(nxt).unlink()
    pki.crt(nxt).unlink()
    return True


def bundle(pki: PKI, ca: str, phase: str) -> bytes:
    """What nodes trust in ``phase``: the signing CA first, then the other one while both are trusted."""
    if phase == "trust":
        return pki.crt(ca).read_bytes() + pki.crt(next_path(ca)).read_bytes()
    if phase == "reissue":
        return pki.crt(ca).read_bytes() + pki.crt(old_path(ca)).read_bytes()
    return pki.crt(ca).read_bytes()


def finish(pki: PKI, ca: str) -> None:
    """Every node trusts the new CA only: the old pair and the record go."""
    for path in (pki.key(old_path(ca)), pki.crt(old_path(ca))):
        path.unlink(missing_ok=True)
    record_path(pki).unlink(missing_ok=True)


# -- guards for other commands -------------------------------------------------------------------------------

def refuse_during_rotation(cluster: Cluster, action: str) -> None:
    """``action`` (upgrade, add nodes) would write CA files and keys of the pre-rotation state: refused while a
    service-account key or CA rotation is unfinished, naming the command that finishes it."""
    from kubexm.steps.etcd import cluster_pki

    pki = cluster_pki(cluster)
    if (pki.root / "sa-rotation.json").is_file():
        raise UsageError(f"cannot {action} {cluster.name}: a service-account key rotation is in progress",
                         hint="finish it with `kubexm token rotate` (after its grace period, or with --finish at once), then run "
                              "this again")
    rotation = load(pki)
    if rotation is not None:
        raise UsageError(f"cannot {action} {cluster.name}: a rotation of the {rotation.component} CA is in progress "
                         f"(phase {rotation.phase})",
                         hint=f"finish it first with `kubexm certs rotate-ca --component {rotation.component}`, then "
                              "run this again")

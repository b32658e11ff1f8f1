"""Renewal on the deploy machine: CA checks, re-issuing leaves with the SANs they had, and the record of an
unfinished renewal.

A renewal re-issues leaves once, then distributes them node by node. ``renewal.json`` in the PKI directory
names the certificates already re-issued by a renewal that has not reached every node yet: a re-run (after a
node was unreachable) does not re-issue them again, so the nodes that already have them are skipped and only
the missing ones are finished. The record is removed when every node has its files.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Iterable
from dataclasses import replace

from kubexm.errors import KubexmError
from kubexm.pki.certs import CertSpec, inspect, write_private
from kubexm.pki.store import PKI, Change

RECORD = "renewal.json"
MANUAL_ROTATION = "https://kubernetes.io/docs/tasks/tls/manual-rotation-of-ca-certificates/"


def check_ca(pki: PKI, ca: str) -> None:
    """Refuse to sign with a CA that is missing, lacks its key, or has expired (one-line errors with the fix)."""
    crt, key = pki.crt(ca), pki.key(ca)
    if not crt.is_file():
        raise KubexmError(f"the CA certificate {crt} is missing on this machine, so nothing can be re-issued from it",
                          hint="restore the cluster's PKI directory from a backup (kubexm never replaces a CA on its "
                               "own)")
    if not key.is_file():
        raise KubexmError(f"the CA key {key} is missing on this machine, so kubexm cannot sign renewed certificates",
                          hint=f"restore {key} from a backup of the PKI directory")
    cert, _ = pki.load(ca)
    info = inspect(cert, ca)
    if info.days_left < 0:
        raise KubexmError(
            f"the {ca} CA expired on {info.not_after:%Y-%m-%d}: certificates it signs are trusted by nobody, so "
            "renewing leaves cannot help; the CA itself must be rotated first",
            hint=f"`kubexm certs rotate-ca` needs a CA the cluster still trusts, so rotate it by hand ({MANUAL_ROTATION}), "
                 f"put the new "
                 f"pair at {crt} and {key}, then run `kubexm certs renew --all`")


def with_current_sans(pki: PKI, spec: CertSpec) -> CertSpec:
    """``spec`` plus the SANs the existing local certificate already has: a renewal never drops a name
    clients may use; names the spec now adds are included."""
    if spec.is_ca or not pki.crt(spec.path).is_file():
        return spec
    cert, _ = pki.load(spec.path)
    have = inspect(cert, spec.path).sans
    dns, ips = list(spec.dns_names), list(spec.ip_addresses)
    known = spec.sans()
    for name in sorted(have - known):
        try:
            ips.append(str(ipaddress.ip_address(name)))
        except ValueError:
            dns.append(name)
    return replace(spec, dns_names=tuple(dict.fromkeys(dns)), ip_addresses=tuple(dict.fromkeys(ips)))


def pending_names(pki: PKI) -> set[str]:
    path = pki.root / RECORD
    if not path.is_file():
        return set()
    try:
        data = json.loads(path.read_text())
    except ValueError:
        return set()  # an unreadable record: re-issuing again is safe, only slower
    return {str(n) for n in data.get("names", [])}


def record_pending(pki: PKI, names: Iterable[str]) -> None:
    data = {"names": sorted(set(names)), "started": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")}
    write_private(pki.root / RECORD, (json.dumps(data, indent=2) + "\n").encode())


def clear_pending(pki: PKI) -> None:
    (pki.root / RECORD).unlink(missing_ok=True)


def reissue(pki: PKI, specs: Iterable[CertSpec]) -> list[Change]:
    """New leaves from the same CAs, keeping each key and every SAN it had (kubeadm's `certs renew` does the
    same); leaves that never existed locally are created."""
    seen: dict[str, CertSpec] = {}
    for spec in specs:
        if not spec.is_ca:
            seen.setdefault(spec.path, spec)
    for ca in sorted({s.ca for s in seen.values()}):
        check_ca(pki, ca)
    return pki.renew([with_current_sans(pki, s) for s in seen.values()])

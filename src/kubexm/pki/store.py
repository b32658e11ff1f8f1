"""A cluster's PKI on the deploy machine: ``$KUBEXM_HOME/clusters/NAME/pki`` in kubeadm's layout.

CAs are created once and reused; an existing CA is never replaced behind the user's back.
Leaves are (re)issued only when missing, expiring, no longer covering the names they must,
or not signed by the current CA, so a second run changes nothing.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from ruamel.yaml import YAML

from kubexm import paths
from kubexm.errors import KubexmError
from kubexm.pki.certs import (
    CA_DAYS,
    LEAF_DAYS,
    CertInfo,
    CertSpec,
    KeyType,
    PrivateKey,
    cert_pem,
    inspect,
    key_matches,
    key_pem,
    load_cert,
    load_key,
    make_ca,
    new_key,
    public_pem,
    sign_leaf,
    write_private,
    write_public,
)

RENEW_BEFORE_DAYS = 30


@dataclass(frozen=True)
class Change:
    path: str
    reason: str  # "created", "renewed: expires in 12 days", "reissued: SANs changed", ...


class PKI:
    def __init__(self, root: Path, key_type: KeyType = "rsa", ca_days: int = CA_DAYS, leaf_days: int = LEAF_DAYS) -> None:
        self.root = root
        self.key_type = key_type
        self.ca_days = ca_days
        self.leaf_days = leaf_days

    @classmethod
    def for_cluster(cls, name: str, **kwargs: object) -> PKI:
        return cls(paths.cluster_dir(name) / "pki", **kwargs)  # type: ignore[arg-type]

    def crt(self, path: str) -> Path:
        return self.root / f"{path}.crt"

    def key(self, path: str) -> Path:
        return self.root / f"{path}.key"

    def exists(self, path: str) -> bool:
        return self.crt(path).is_file() and self.key(path).is_file()

    def load(self, path: str) -> tuple[x509.Certificate, PrivateKey]:
        cert = load_cert(self.crt(path).read_bytes(), str(self.crt(path)))
        key = load_key(self.key(path).read_bytes(), str(self.key(path)))
        return cert, key

    def _save(self, path: str, cert: x509.Certificate, key: PrivateKey) -> None:
        write_private(self.key(path), key_pem(key))
        write_public(self.crt(path), cert_pem(cert))

    # -- issuing --------------------------------------------------------------------------
    def ensure_ca(self, spec: CertSpec) -> Change | None:
        if self.exists(spec.path):
            cert, key = self.load(spec.path)
            if not key_matches(cert, key):
                raise KubexmError(f"{self.crt(spec.path)} and {self.key(spec.path)} do not belong together",
                                  hint="restore the CA pair from a backup; kubexm never replaces a CA on its own")
            return None
        if self.crt(spec.path).exists() or self.key(spec.path).exists():
            missing = self.key(spec.path) if self.crt(spec.path).exists() else self.crt(spec.path)
            raise KubexmError(f"half a CA: {missing} is missing",
                              hint="restore it from a backup; kubexm never replaces a CA on its own")
        key = new_key(self.key_type)
        self._save(spec.path, make_ca(spec, key, self.ca_days), key)
        return Change(spec.path, "created")

    def _leaf_reason(self, spec: CertSpec) -> str | None:
        if not self.exists(spec.path):
            return "created"
        cert, key = self.load(spec.path)
        info = inspect(cert, spec.path)
        ca_cert, _ = self.load(spec.ca)
        if cert.issuer != ca_cert.subject or not _signed_by(cert, ca_cert):
            return "reissued: not signed by the current CA"
        if not key_matches(cert, key):
            return "reissued: key does not match the certificate"
        if info.days_left < RENEW_BEFORE_DAYS:
            return f"renewed: expires in {info.days_left} days"
        missing = spec.sans() - info.sans
        if missing:
            return f"reissued: SANs now include {', '.join(sorted(missing))}"
        return None

    def issue(self, spec: CertSpec, force: bool = False, rotate_key: bool = False) -> Change | None:
        if spec.is_ca:
            return self.ensure_ca(spec)
        reason = "renewed" if force else self._leaf_reason(spec)
        if reason is None:
            return None
        ca_cert, ca_key = self.load(spec.ca)
        key = None
        if self.exists(spec.path) and not rotate_key and reason != "reissued: key does not match the certificate":
            _, key = self.load(spec.path)
        key = key or new_key(self.key_type)
        self._save(spec.path, sign_leaf(spec, key, ca_cert, ca_key, self.leaf_days), key)
        return Change(spec.path, reason)

    def pending(self, specs: Iterable[CertSpec]) -> list[Change]:
        """What ``ensure`` would do, without writing anything (for checks and plans)."""
        out = []
        cas_missing = set()
        for spec in sorted(specs, key=lambda s: not s.is_ca):
            if spec.is_ca:
                if not self.exists(spec.path):
                    cas_missing.add(spec.path)
                    out.append(Change(spec.path, "created"))
                continue
            if spec.ca in cas_missing:
                out.append(Change(spec.path, "created"))
                continue
            reason = self._leaf_reason(spec)
            if reason:
                out.append(Change(spec.path, reason))
        return out

    def ensure(self, specs: Iterable[CertSpec]) -> list[Change]:
        """Issue what is missing or stale; CAs first so leaves can be signed."""
        ordered = sorted(specs, key=lambda s: not s.is_ca)
        return [c for c in (self.issue(s) for s in ordered) if c is not None]

    def renew(self, specs: Iterable[CertSpec], rotate_keys: bool = False) -> list[Change]:
        """New leaves from the same CAs (CAs themselves are left alone)."""
        out = []
        for spec in specs:
            if spec.is_ca:
                continue
            change = self.issue(spec, force=True, rotate_key=rotate_keys)
            if change is not None:
                out.append(change)
        return out

    def ensure_service_account_key(self) -> Change | None:
        """sa.key/sa.pub: the key pair that signs service-account tokens (no certificate)."""
        if self.key("sa").is_file() and (self.root / "sa.pub").is_file():
            return None
        key = new_key("rsa")
        write_private(self.key("sa"), key_pem(key))
        write_public(self.root / "sa.pub", public_pem(key))
        return Change("sa", "created")

    # -- inspecting -----------------------------------------------------------------------
    def inspect_all(self) -> list[CertInfo]:
        out = []
        for crt in sorted(self.root.rglob("*.crt")):
            rel = str(crt.relative_to(self.root))[:-4]
            out.append(inspect(load_cert(crt.read_bytes(), str(crt)), rel))
        return out

    # -- kubeconfigs ----------------------------------------------------------------------
    def kubeconfig(self, spec: CertSpec, cluster_name: str, server: str) -> str:
        """A kubeconfig with the CA and the client certificate embedded (kubeadm's style)."""
        self.issue(spec)
        cert, key = self.load(spec.path)
        ca_cert, _ = self.load(spec.ca)
        user = spec.common_name
        context = f"{user}@{cluster_name}"
        doc = {
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": cluster_name, "cluster": {
                "certificate-authority-data": _b64(cert_pem(ca_cert)), "server": server}}],
            "contexts": [{"name": context, "context": {"cluster": cluster_name, "user": user}}],
            "current-context": context,
            "preferences": {},
            "users": [{"name": user, "user": {
                "client-certificate-data": _b64(cert_pem(cert)), "client-key-data": _b64(key_pem(key))}}],
        }
        out = io.StringIO()
        yaml = YAML()
        yaml.default_flow_style = False
        yaml.dump(doc, out)
        return out.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _signed_by(cert: x509.Certificate, ca: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(ca)
    except Exception:  # InvalidSignature, a different key type: either way not signed by this CA
        return False
    return True

"""Keys and X.509 certificates with the ``cryptography`` package: CAs, signed leaves, inspection.

Only this module touches cryptography's API; the rest of kubexm talks in PEM bytes and
the small dataclasses below.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from kubexm.errors import KubexmError
from kubexm.pki.spec import CertSpec

KeyType = Literal["rsa", "ecdsa"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CA_DAYS = 3650
LEAF_DAYS = 365


def new_key(kind: KeyType = "rsa") -> PrivateKey:
    if kind == "ecdsa":
        return ec.generate_private_key(ec.SECP256R1())
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(data: bytes, where: str) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise KubexmError(f"{where} is not a readable private key: {exc}",
                          hint="restore it from a backup, or remove the pair to generate a new one") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise KubexmError(f"{where}: unsupported key type {type(key).__name__}", hint="use RSA or ECDSA keys")
    return key


def load_cert(data: bytes, where: str) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError as exc:
        raise KubexmError(f"{where} is not a readable certificate: {exc}") from None


def _name(cn: str, orgs: tuple[str, ...] = ()) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    attrs.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    return x509.Name(attrs)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(spec: CertSpec, key: PrivateKey, days: int = CA_DAYS) -> x509.Certificate:
    now = _now()
    name = _name(spec.common_name, spec.organizations)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=True,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )
    if spec.dns_names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(d) for d in spec.dns_names]),
                                        critical=False)
    return builder.sign(key, hashes.SHA256())


def sign_leaf(spec: CertSpec, key: PrivateKey, ca_cert: x509.Certificate, ca_key: PrivateKey,
              days: int = LEAF_DAYS) -> x509.Certificate:
    now = _now()
    # A leaf never outlives its CA: clients would reject the chain after the CA expires anyway.
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    ekus = [{"server": ExtendedKeyUsageOID.SERVER_AUTH, "client": ExtendedKeyUsageOID.CLIENT_AUTH}[u]
            for u in spec.usages]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(spec.common_name, spec.organizations)).issuer_name(ca_cert.subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=isinstance(key, rsa.RSAPrivateKey), data_encipherment=False,
                                     key_agreement=False, key_cert_sign=False, crl_sign=False, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in spec.dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in spec.ip_addresses]
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


@dataclass(frozen=True)
class CertInfo:
    """What `certs check` shows of one certificate."""

    path: str
    subject: str
    issuer: str
    serial: int
    not_after: dt.datetime
    sans: frozenset[str] = field(default_factory=frozenset)
    is_ca: bool = False

    @property
    def days_left(self) -> int:
        return (self.not_after - _now()).days

    def status(self, warn_days: int = 30) -> str:
        if self.days_left < 0:
            return "expired"
        return "expiring" if self.days_left < warn_days else "ok"


def inspect(cert: x509.Certificate, path: str) -> CertInfo:
    try:
        san_ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans = {*san_ext.get_values_for_type(x509.DNSName), *(str(i) for i in san_ext.get_values_for_type(x509.IPAddress))}
    except x509.ExtensionNotFound:
        sans = set()
    try:
        is_ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    return CertInfo(path, cert.subject.rfc4514_string(), cert.issuer.rfc4514_string(), cert.serial_number,
                    cert.not_valid_after_utc, frozenset(sans), is_ca)


def key_matches(cert: x509.Certificate, key: PrivateKey) -> bool:
    return cert.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo) \
        == key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


def write_private(path: Path, data: bytes) -> None:
    """Write a secret atomically with mode 0600 from the first byte (never briefly world-readable)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_public(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)

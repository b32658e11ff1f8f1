"""Certificates and keys in kubeadm's layout, made with the ``cryptography`` package."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kubexm.pki.certs import CertInfo, CertSpec
    from kubexm.pki.store import PKI, Change

__all__ = ["PKI", "CertInfo", "CertSpec", "Change"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: importing any kubexm.pki module runs this package first, and most importers (the
    # layout, the node inventory, `health`) need no key or certificate code, nor the cryptography package.
    if name in ("CertInfo", "CertSpec"):
        from kubexm.pki import certs

        return getattr(certs, name)
    if name in ("PKI", "Change"):
        from kubexm.pki import store

        return getattr(store, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

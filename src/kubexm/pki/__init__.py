"""Certificates and keys in kubeadm's layout, made with the ``cryptography`` package."""

from kubexm.pki.certs import CertInfo, CertSpec
from kubexm.pki.store import PKI, Change

__all__ = ["PKI", "CertInfo", "CertSpec", "Change"]

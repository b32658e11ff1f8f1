"""What a certificate must say (``CertSpec``): plain data, without the ``cryptography`` package, so code that
only names certificates (the layout, the node inventory, `health`) does not load it."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

Usage = Literal["server", "client"]


@dataclass(frozen=True)
class CertSpec:
    """What one certificate must say; ``path`` is its name in the kubeadm layout without suffix."""

    path: str
    common_name: str
    ca: str  # path of the signing CA ("ca", "etcd/ca", "front-proxy-ca"); "" for a CA itself
    organizations: tuple[str, ...] = ()
    dns_names: tuple[str, ...] = ()
    ip_addresses: tuple[str, ...] = ()
    usages: tuple[Usage, ...] = ()

    @property
    def is_ca(self) -> bool:
        return not self.ca

    def sans(self) -> set[str]:
        return {*self.dns_names, *(str(ipaddress.ip_address(i)) for i in self.ip_addresses)}

"""The built-in cluster used when no file is given: this machine alone, over the local connection."""

from __future__ import annotations

import re
import socket

from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster


def local_host_name() -> str:
    """This machine's hostname turned into a valid host name (RFC 1123 label)."""
    name = re.sub(r"[^a-z0-9-]+", "-", socket.gethostname().split(".")[0].lower()).strip("-")
    return name[:63].rstrip("-") or "localhost"  # cut at 63, it must still end with a letter or digit


def default_local_cluster_yaml() -> str:
    name = local_host_name()
    return f"""\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: local
spec:
  hosts:
    - name: {name}
      address: 127.0.0.1
      connection: local
  roleGroups:
    etcd: [{name}]
    control-plane: [{name}]
    worker: [{name}]
"""


def default_local_cluster() -> Cluster:
    return parse_cluster(default_local_cluster_yaml(), source="<built-in local cluster>")

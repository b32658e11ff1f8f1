"""etcd on a node as commands reach it: its data dir (checked), binaries, client certificates and the etcdctl
command line. Light on purpose: read-only commands (health, scan) use it without loading the etcd steps and,
through them, the PKI, cryptography and the asset code."""

from __future__ import annotations

import ipaddress
import posixpath
import re

from kubexm.errors import StepFailed
from kubexm.hosts.shell import Cmd, sh, shell
from kubexm.spec.models import Cluster

BIN = "/usr/local/bin"
PKI_DIR = "/etc/kubernetes/pki/etcd"
LOCAL_ENDPOINT = "https://127.0.0.1:2379"
# Where a data directory must never point: `kubexm delete nodes` ends with `rm -rf` of it.
_SYSTEM_DIRS = frozenset({"/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib64", "/opt", "/proc", "/root",
                          "/run", "/sbin", "/srv", "/sys", "/tmp", "/usr", "/usr/local", "/usr/local/bin", "/var",
                          "/var/lib", "/var/lib/kubexm", "/var/tmp", "/etc/kubernetes"})
CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def data_dir(cluster: Cluster) -> str:
    """spec.etcd.dataDir, checked before it reaches `mv` or `rm -rf`: absolute, no `..`, no control
    character, not a system directory. Any other character (a space, `;`) is carried as one quoted word."""
    value = cluster.spec.etcd.data_dir
    if CONTROL.search(value):
        raise StepFailed(f"spec.etcd.dataDir {value!r} holds a line break or control character",
                         hint="use a plain absolute path, e.g. /var/lib/etcd")
    if not value.startswith("/") or ".." in value.split("/"):
        raise StepFailed(f"spec.etcd.dataDir {value!r} must be an absolute path without '..'",
                         hint="e.g. /var/lib/etcd")
    normal = "/" + posixpath.normpath(value).lstrip("/")  # also "//x" (normpath keeps two leading slashes)
    if normal in _SYSTEM_DIRS:
        raise StepFailed(f"spec.etcd.dataDir {value!r} is a system directory; etcd's data would replace it "
                         "and removing a member deletes it", hint="use a directory of its own, e.g. /var/lib/etcd")
    return normal


def url(address: str, port: int) -> str:
    """An https URL of an address: IPv6 literals in brackets, as etcd and its certificates expect."""
    # A host name is not an IP literal: ":" never occurs in one, so only IPv6 literals get brackets.
    if ":" in address and ipaddress.ip_address(address).version == 6:
        return f"https://[{address}]:{port}"
    return f"https://{address}:{port}"


def etcdctl(*args: str, endpoints: str = LOCAL_ENDPOINT, readonly: bool = False) -> Cmd:
    """etcdctl on a member, authenticated with the health-check client certificate; each argument one word.
    ``readonly``: the sub-command only reads (endpoint health, member list), verified by the command builder."""
    command = sh(f"{BIN}/etcdctl", f"--endpoints={endpoints}", f"--cacert={PKI_DIR}/ca.crt",
                 f"--cert={PKI_DIR}/healthcheck-client.crt", f"--key={PKI_DIR}/healthcheck-client.key",
                 "--command-timeout=10s", *args, readonly=readonly)
    return with_api_v3(command)


def with_api_v3(command: Cmd) -> Cmd:
    # etcdctl before 3.4 speaks the v2 API unless told otherwise.
    return shell("ETCDCTL_API=3 {command}", command=command, readonly=command.readonly)

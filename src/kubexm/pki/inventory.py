"""Every certificate and kubeconfig kubexm (or kubeadm on kubexm's CAs) places on a node, by name.

The names are what ``kubexm certs renew NAME`` accepts and what ``certs check`` prints. For each node the
inventory says where each file lives, which local PKI entry should be there (``local``), which CA signs it
and what must restart to use a new one. What the nodes hold is read with one read-only command per node
(``read_command``) and judged here (``judge``), so the same logic serves check, plan and renew.

The load balancer holds no certificate (haproxy passes TLS through; keepalived and kube-vip have none). The
registry (``spec.registry.type: docker-registry``) serves with a certificate from its own CA in kubexm's PKI.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import io
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from kubexm.errors import UsageError
from kubexm.pki.layout import (
    CA,
    ETCD_CA,
    FRONT_PROXY_CA,
    etcd_member_specs,
    etcd_specs,
    kubeconfig_specs,
    kubelet_kubeconfig_spec,
)
from kubexm.pki.spec import CertSpec
from kubexm.spec.models import Cluster

if TYPE_CHECKING:  # the cryptography package loads where certificates are read, not to list them
    from cryptography import x509

NODE_PKI = "/etc/kubernetes/pki"
KUBE_DIR = "/etc/kubernetes"
KUBELET_PKI = "/var/lib/kubelet/pki"
KUBELET_CLIENT = f"{KUBELET_PKI}/kubelet-client-current.pem"

Kind = Literal["cert", "kubeconfig", "pem", "keypair"]
# What must restart to use a renewed file: the etcd systemd unit, a static pod, kubelet, or nothing.
Restart = Literal["etcd", "etcd-pod", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet",
                  "docker-registry", ""]
# Which rolling phase of `certs renew` places a file: etcd members, control-plane nodes, worker kubelets, registry.
Group = Literal["etcd", "control-plane", "kubelet", "registry"]

REGISTRY_CA = "registry/ca"
CA_NAMES = {"ca": CA.path, "front-proxy-ca": FRONT_PROXY_CA.path, "etcd-ca": ETCD_CA.path, "registry-ca": REGISTRY_CA}
CA_LABELS = {CA.path: "kubernetes", FRONT_PROXY_CA.path: "front-proxy", ETCD_CA.path: "etcd", REGISTRY_CA: "registry"}
RENEWABLE = ("etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client", "apiserver",
             "apiserver-kubelet-client", "front-proxy-client", "admin.conf", "super-admin.conf",
             "controller-manager.conf", "scheduler.conf", "kubelet.conf", "kubelet-client", "kubelet-serving",
             "registry-server")
GROUPS = {
    "etcd": ("etcd-server", "etcd-peer", "etcd-healthcheck-client", "apiserver-etcd-client"),
    "control-plane": ("apiserver", "apiserver-kubelet-client", "front-proxy-client", "apiserver-etcd-client",
                      "admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf"),
    "kubeconfigs": ("admin.conf", "super-admin.conf", "controller-manager.conf", "scheduler.conf", "kubelet.conf"),
    "kubelet": ("kubelet.conf", "kubelet-client", "kubelet-serving"),
    "registry": ("registry-server",),
}
KNOWN = (*RENEWABLE, *CA_NAMES, "sa")


@dataclass(frozen=True)
class Placed:
    """One file on one node."""

    name: str
    path: str
    kind: Kind
    local: str | None  # the local PKI entry (``etcd/nodes/n1/server``) whose certificate belongs here
    ca: str | None  # the local CA that signs it (``etcd/ca``); None for a CA or the sa key pair
    restart: Restart = ""
    group: Group = "control-plane"
    spec: CertSpec | None = None  # how to (re)issue ``local``; None: not renewable by `certs renew`
    key_mode: int = 0o600
    key_owner: str = "root:root"  # a service that reads its key as its own user: group-readable by that group

    @property
    def renewable(self) -> bool:
        return self.spec is not None

    @property
    def key_path(self) -> str:
        return self.path[:-4] + ".key" if self.path.endswith(".crt") else ""


def kubelet_serving_spec(cluster: Cluster, node: str) -> CertSpec:
    """kubelet's serving certificate from the cluster CA (kubelet's own is self-signed and trusted by nobody)."""
    host = cluster.host(node)
    ips = tuple(dict.fromkeys([host.internal_ip, host.address]))
    return CertSpec(f"kubelet/nodes/{node}/serving", node, CA.path, (), (node,), _ips(ips), ("server",))


def _ips(values: Iterable[str]) -> tuple[str, ...]:
    import ipaddress

    out = []
    for v in values:
        try:
            out.append(str(ipaddress.ip_address(v)))
        except ValueError:
            continue  # a DNS name as address: it is not an IP SAN
    return tuple(out)


def node_inventory(cluster: Cluster, node: str) -> list[Placed]:
    """Every file kubexm expects on ``node`` for its roles (absent ones are simply not reported)."""
    from kubexm.pki.layout import apiserver_sans, kubernetes_specs

    roles = set(cluster.roles_of(node))
    etcd_type = cluster.spec.etcd.type
    host = cluster.host(node)
    addresses = list(dict.fromkeys([host.internal_ip, host.address]))
    out: list[Placed] = []
    etcd_dir = f"{NODE_PKI}/etcd"
    clients = {s.path: s for s in etcd_specs(cluster) if s.path in ("etcd/healthcheck-client", "apiserver-etcd-client")}
    hc = clients["etcd/healthcheck-client"]
    member = {s.path.rsplit("/", 1)[-1]: s for s in etcd_member_specs(node, addresses)}
    if "etcd" in roles and etcd_type == "kubexm":
        out += [
            Placed("etcd-ca", f"{etcd_dir}/ca.crt", "cert", ETCD_CA.path, None, "etcd", "etcd"),
            Placed("etcd-server", f"{etcd_dir}/server.crt", "cert", member["server"].path, ETCD_CA.path, "etcd", "etcd",
                   member["server"]),
            Placed("etcd-peer", f"{etcd_dir}/peer.crt", "cert", member["peer"].path, ETCD_CA.path, "etcd", "etcd",
                   member["peer"]),
            Placed("etcd-healthcheck-client", f"{etcd_dir}/healthcheck-client.crt", "cert", hc.path, ETCD_CA.path,
                   "etcd", "etcd", hc),
        ]
    if "control-plane" in roles:
        specs = {s.path: s for s in kubernetes_specs(cluster)}
        dns, ips = apiserver_sans(cluster)
        out += [
            Placed("ca", f"{NODE_PKI}/ca.crt", "cert", CA.path, None),
            Placed("front-proxy-ca", f"{NODE_PKI}/front-proxy-ca.crt", "cert", FRONT_PROXY_CA.path, None),
            Placed("etcd-ca", f"{etcd_dir}/ca.crt", "cert", ETCD_CA.path, None),
            Placed("apiserver", f"{NODE_PKI}/apiserver.crt", "cert", "apiserver", CA.path, "kube-apiserver",
                   spec=replace(specs["apiserver"], dns_names=dns, ip_addresses=ips)),
            Placed("apiserver-kubelet-client", f"{NODE_PKI}/apiserver-kubelet-client.crt", "cert",
                   "apiserver-kubelet-client", CA.path, "kube-apiserver", spec=specs["apiserver-kubelet-client"]),
            Placed("front-proxy-client", f"{NODE_PKI}/front-proxy-client.crt", "cert", "front-proxy-client",
                   FRONT_PROXY_CA.path, "kube-apiserver", spec=specs["front-proxy-client"]),
            Placed("sa", f"{NODE_PKI}/sa.key", "keypair", None, None),
        ]
        client = clients["apiserver-etcd-client"]
        if etcd_type == "external":
            # The user's etcd, the user's client certificate: reported, never re-issued by kubexm.
            out.append(Placed("apiserver-etcd-client", f"{NODE_PKI}/apiserver-etcd-client.crt", "cert", None, None))
        else:
            out.append(Placed("apiserver-etcd-client", f"{NODE_PKI}/apiserver-etcd-client.crt", "cert", client.path,
                              ETCD_CA.path, "kube-apiserver", spec=client))
        if etcd_type == "kubeadm":
            # Stacked etcd: kubeadm issued these on the node from the etcd CA kubexm placed there.
            out += [
                Placed("etcd-server", f"{etcd_dir}/server.crt", "cert", member["server"].path, ETCD_CA.path, "etcd-pod",
                       spec=member["server"]),
                Placed("etcd-peer", f"{etcd_dir}/peer.crt", "cert", member["peer"].path, ETCD_CA.path, "etcd-pod",
                       spec=member["peer"]),
                Placed("etcd-healthcheck-client", f"{etcd_dir}/healthcheck-client.crt", "cert", hc.path, ETCD_CA.path,
                       "etcd-pod", spec=hc),
            ]
        confs = kubeconfig_specs(cluster)
        for file, restart in (("admin.conf", ""), ("super-admin.conf", ""),
                              ("controller-manager.conf", "kube-controller-manager"), ("scheduler.conf", "kube-scheduler")):
            spec = confs[file]
            out.append(Placed(file, f"{KUBE_DIR}/{file}", "kubeconfig", spec.path, CA.path, restart, spec=spec))  # type: ignore[arg-type]
    if roles & {"control-plane", "worker"}:
        group: Group = "control-plane" if "control-plane" in roles else "kubelet"
        if group == "kubelet":
            out.append(Placed("ca", f"{NODE_PKI}/ca.crt", "cert", CA.path, None, group=group))  # kubeadm join's copy
        kubelet = kubelet_kubeconfig_spec(node)
        serving = kubelet_serving_spec(cluster, node)
        out += [
            Placed("kubelet.conf", f"{KUBE_DIR}/kubelet.conf", "kubeconfig", kubelet.path, CA.path, "kubelet", group,
                   kubelet),
            Placed("kubelet-client", KUBELET_CLIENT, "pem", kubelet.path, CA.path, "kubelet", group, kubelet),
            Placed("kubelet-serving", f"{KUBELET_PKI}/kubelet.crt", "cert", serving.path, CA.path, "kubelet", group,
                   serving),
        ]
    out += _registry_files(cluster, node, roles)
    seen: dict[str, Placed] = {}
    for p in out:
        seen.setdefault(p.path, p)  # etcd/ca.crt on a node that is both etcd member and control plane: once
    return list(seen.values())


def _registry_files(cluster: Cluster, node: str, roles: set[str]) -> list[Placed]:
    """The registry's CA and serving certificate, as kubexm.steps.registry places them."""
    if "registry" not in roles or cluster.spec.registry.type != "docker-registry":
        return []
    from kubexm.steps import registry

    spec = registry.server_cert_spec(cluster, node)
    return [Placed("registry-ca", registry.CA_FILE, "cert", REGISTRY_CA, None, "", "registry"),
            Placed("registry-server", registry.CERT_FILE, "cert", spec.path, REGISTRY_CA, "docker-registry", "registry",
                   spec, key_mode=0o640, key_owner=registry.OWNER)]


def resolve_names(values: Iterable[str]) -> list[str]:
    """Certificate names from ``certs renew NAME…`` (groups expanded), in inventory order; UsageError naming
    the valid ones otherwise."""
    wanted: set[str] = set()
    for value in values:
        v = value.strip()
        if v == "all":
            wanted |= set(RENEWABLE)
        elif v in GROUPS:
            wanted |= set(GROUPS[v])
        elif v in RENEWABLE:
            wanted.add(v)
        elif v in CA_NAMES or v == "sa":
            what = "the service-account key pair" if v == "sa" else f"'{v}' is a CA"
            raise UsageError(f"{what}: `certs renew` re-issues leaf certificates and kubeconfigs from the existing CAs",
                             hint="rotating a CA or the service-account key is a separate operation: "
                                  "`kubexm certs rotate-ca --component kubernetes|etcd|front-proxy` or "
                                  "`kubexm token rotate`")
        else:
            raise UsageError(f"unknown certificate name {v!r}; valid: all, {', '.join(GROUPS)}, {', '.join(RENEWABLE)}")
    return [n for n in RENEWABLE if n in wanted]


# -- reading a node -----------------------------------------------------------------------------------------

FILE_MARK = "#kubexm-file "
PRESENT_MARK = "#kubexm-present "


@dataclass(frozen=True)
class NodeRead:
    """What one node holds: the certificate blocks of each existing file (keys never leave the node), the
    kubeconfigs without their ``client-key-data`` lines, and which probe paths exist."""

    files: dict[str, str] = field(default_factory=dict)
    present: frozenset[str] = frozenset()


def read_command(cert_paths: list[str], kubeconfig_paths: list[str], probe_paths: list[str]) -> Any:
    """One read-only command printing every existing file of ``cert_paths`` (certificate blocks only: a
    PEM with a key in it such as kubelet-client-current.pem prints no key), every kubeconfig without its
    key line, and which of ``probe_paths`` exist."""
    from kubexm.hosts.shell import shell

    # One awk for every file instead of a program per file (a control-plane node holds ~25): the loops only
    # sort with builtins. Files awk cannot open (unreadable without sudo) or that are empty are named without
    # content, as they are: awk gets only readable, non-empty ones, since one it cannot open ends its run.
    # Every path is absolute, so awk never takes one for a ``var=value`` assignment; ``n`` counts the
    # certificate files in x's (no arithmetic expansion: the read-only verifier reads plain words only).
    return shell(
        "set --; n=; "
        "for f in {certs}; do if test -e \"$f\"; then if test -r \"$f\" && test -s \"$f\"; then "
        "set -- \"$@\" \"$f\"; n=\"${{n}}x\"; else echo \"#kubexm-file $f\"; fi; fi; done; "
        "for f in {confs}; do if test -e \"$f\"; then if test -r \"$f\" && test -s \"$f\"; then "
        "set -- \"$@\" \"$f\"; else echo \"#kubexm-file $f\"; fi; fi; done; "
        "if test $# -gt 0; then awk -v certs=\"$n\" '"
        "FNR == 1 {{ i++; print \"#kubexm-file \" FILENAME; pem = 0 }} "
        "i <= length(certs) {{ if ($0 ~ /-----BEGIN CERTIFICATE-----/) pem = 1; if (pem) print; "
        "if ($0 ~ /-----END CERTIFICATE-----/) pem = 0; next }} "
        "$0 !~ /client-key-data/' \"$@\"; fi; "
        "for f in {probes}; do if test -e \"$f\"; then echo \"#kubexm-present $f\"; fi; done; true",
        certs=cert_paths or ["/nonexistent"], confs=kubeconfig_paths or ["/nonexistent"],
        probes=probe_paths or ["/nonexistent"], readonly=True)


def parse_read(stdout: str) -> NodeRead:
    files: dict[str, list[str]] = {}
    present: set[str] = set()
    current: list[str] | None = None
    for line in stdout.splitlines():
        if line.startswith(FILE_MARK):
            current = files.setdefault(line[len(FILE_MARK):], [])
        elif line.startswith(PRESENT_MARK):
            present.add(line[len(PRESENT_MARK):])
            current = None
        elif current is not None:
            current.append(line)
    return NodeRead({k: "\n".join(v) + "\n" for k, v in files.items()}, frozenset(present))


def inventory_read_command(placed: list[Placed], extra_probes: Iterable[str] = ()) -> Any:
    certs = [p.path for p in placed if p.kind in ("cert", "pem")]
    confs = [p.path for p in placed if p.kind == "kubeconfig"]
    probes = [*(f for p in placed if p.kind == "keypair" for f in (p.path, p.path[:-4] + ".pub")), *extra_probes]
    return read_command(certs, confs, probes)


_PEM = re.compile(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", re.S)


def first_cert(text: str) -> x509.Certificate | None:
    from cryptography import x509

    m = _PEM.search(text)
    if not m:
        return None
    try:
        return x509.load_pem_x509_certificate(m.group(0).encode())
    except ValueError:
        return None


def load_kubeconfig(text: str) -> dict[str, Any] | None:
    from ruamel.yaml import YAML  # loaded where a kubeconfig is read, not to list what a node holds

    try:
        doc = YAML(typ="safe").load(text)
    except Exception:  # not YAML at all: reported as unreadable
        return None
    return doc if isinstance(doc, dict) else None


def kubeconfig_user(doc: dict[str, Any]) -> dict[str, Any]:
    """The user entry of the current context (kubeadm writes exactly one)."""
    users = doc.get("users") or []
    wanted = None
    for ctx in doc.get("contexts") or []:
        if ctx.get("name") == doc.get("current-context"):
            wanted = (ctx.get("context") or {}).get("user")
    for u in users:
        if wanted is None or u.get("name") == wanted:
            user: dict[str, Any] = u.get("user") or {}
            return user
    return {}


def kubeconfig_cert(text: str) -> tuple[x509.Certificate | None, str | None]:
    """(embedded client certificate, or None; the file it names instead, or None)."""
    doc = load_kubeconfig(text)
    if doc is None:
        return None, None
    user = kubeconfig_user(doc)
    data = user.get("client-certificate-data")
    if data:
        try:
            return first_cert(base64.b64decode(data).decode()), None
        except (ValueError, UnicodeDecodeError):
            return None, None
    path = user.get("client-certificate")
    return None, str(path) if path else None


def fingerprint(cert: x509.Certificate) -> str:
    from cryptography.hazmat.primitives import serialization

    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


# -- judging ------------------------------------------------------------------------------------------------

@dataclass
class Finding:
    """One row of `certs check` (the keys of ``as_json`` are the documented, stable JSON fields)."""

    host: str
    name: str
    path: str
    kind: str
    subject_cn: str = ""
    issuer: str = ""
    chains_to: str | None = None
    sans: list[str] = field(default_factory=list)
    not_after: dt.datetime | None = None
    days_left: int | None = None
    status: str = "ok"
    differs_from_local: bool | None = None
    fingerprint: str | None = None
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "name": self.name, "path": self.path, "kind": self.kind,
                "subject_cn": self.subject_cn, "issuer": self.issuer, "chains_to": self.chains_to,
                "sans": self.sans, "not_after": self.not_after.isoformat() if self.not_after else None,
                "days_left": self.days_left, "status": self.status, "differs_from_local": self.differs_from_local,
                "fingerprint_sha256": self.fingerprint, "problems": self.problems}


def _cn(name: x509.Name) -> str:
    from cryptography.x509.oid import NameOID

    attrs = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(attrs[0].value) if attrs else name.rfc4514_string()


def chains_to(cert: x509.Certificate, local_cas: dict[str, x509.Certificate]) -> str | None:
    """The label of the local CA that signed ``cert`` (or that ``cert`` is), ``self-signed``, or None."""
    for path, ca in local_cas.items():
        if fingerprint(ca) == fingerprint(cert):
            return CA_LABELS.get(path, path)
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature, issuer mismatch, other key type: not this CA
            continue
        return CA_LABELS.get(path, path)
    if cert.issuer == cert.subject:
        return "self-signed"
    return None


def judge(host: str, placed: Placed, cert: x509.Certificate | None, local_cas: dict[str, x509.Certificate],
          local_certs: dict[str, x509.Certificate], warn_days: int, note: str = "") -> Finding:
    """One node file against the local PKI and the spec: expiry, chain, SANs, same-as-local."""
    f = Finding(host, placed.name, placed.path, placed.kind)
    if cert is None:
        f.status = "unreadable"
        f.problems.append(note or f"no certificate could be read from {placed.path}")
        return f
    from kubexm.pki.certs import inspect

    info = inspect(cert, placed.path)
    f.subject_cn, f.issuer = _cn(cert.subject), _cn(cert.issuer)
    f.sans = sorted(info.sans)
    f.not_after, f.days_left, f.status = info.not_after, info.days_left, info.status(warn_days)
    f.fingerprint = fingerprint(cert)
    f.chains_to = chains_to(cert, local_cas)
    wanted_ca = CA_LABELS.get(placed.ca or placed.local or "")
    if placed.local and placed.local in local_certs:
        f.differs_from_local = fingerprint(local_certs[placed.local]) != f.fingerprint
    if wanted_ca and f.chains_to != wanted_ca and placed.name != "kubelet-serving":
        f.problems.append(f"not signed by the local {wanted_ca} CA (chains to {f.chains_to or 'an unknown CA'})")
    elif placed.name == "kubelet-serving" and f.chains_to == "self-signed":
        f.problems.append("kubelet's own self-signed serving certificate: "
                          "`kubexm certs renew kubelet-serving` replaces it with one from the cluster CA")
    if placed.spec is not None and placed.spec.sans() and f.chains_to != "self-signed":
        missing = sorted(placed.spec.sans() - info.sans)
        if missing:
            f.problems.append(f"SANs lack {', '.join(missing)} that the spec now needs: "
                              f"run `kubexm certs renew {placed.name}`")
    if note:
        f.problems.append(note)
    return f


def posix_dir(path: str) -> str:
    return posixpath.dirname(path) or "/"


def rewrite_kubeconfig(text: str, ca_pem: bytes, cert_pem: bytes, key_pem: bytes) -> bytes:
    """The node's kubeconfig (server, names kept as found) with new client credentials and CA data."""
    from kubexm.kube.kubeadm import quote_strings

    doc = load_kubeconfig(text) or {}
    for cluster in doc.get("clusters") or []:
        entry = cluster.setdefault("cluster", {})
        entry.pop("certificate-authority", None)
        entry["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    user = kubeconfig_user(doc)
    for k in ("client-certificate", "client-key"):
        user.pop(k, None)
    user["client-certificate-data"] = base64.b64encode(cert_pem).decode()
    user["client-key-data"] = base64.b64encode(key_pem).decode()
    out = io.StringIO()
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.default_flow_style = False
    yaml.dump(quote_strings(doc), out)  # kubectl and client-go read YAML 1.1: names like "no" stay strings
    return out.getvalue().encode()

"""Validated string types of the cluster file: each value is checked for what it is before any step sees it.

Every type here refuses control and invisible formatting characters (line breaks, NUL, bidi marks), so no
value can start a new line in a config file or hide what a reviewer reads; secrets refuse only what breaks
the line they are sent on (NUL, CR, LF). On top of that each type follows its own grammar (addresses,
POSIX user names, package names, the image reference grammar, ...), chosen so that a value can neither
be read as an option (no leading ``-``) nor leave the directory it names (no ``..``).

Each type carries a :class:`Kind` marker. ``SpecModel`` (models.py) refuses control characters in every
string field whatever its type, and tests/spec/test_hostile_values.py walks the models and fails on a
string field without a marker, or on free text not listed there.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, SecretStr


@dataclass(frozen=True)
class Kind:
    """What a string field holds. ``free_text``: no grammar beyond the character rules (listed in the tests)."""

    name: str
    free_text: bool = False


_SHOWN = 60


def show(value: str) -> str:
    """A value quoted for a one-line error: control characters escaped, long values cut."""
    text = value if len(value) <= _SHOWN else value[:_SHOWN] + "..."
    return repr(text)


# Line breaks YAML and config readers honour besides CR/LF: NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR.
_BREAKS = frozenset("\r\n\x00\x85\u2028\u2029")


def bad_character(value: str) -> str | None:
    """Description of the first character no cluster-file value may hold, else None."""
    for ch in value:
        category = unicodedata.category(ch)
        if ch in _BREAKS or category in ("Cc", "Cf", "Zl", "Zp", "Cs"):
            name = {"\n": "a newline", "\r": "a carriage return", "\x00": "a NUL byte", "\t": "a tab"}.get(ch)
            return name or f"the invisible or control character U+{ord(ch):04X}"
    return None


def check_text(value: str) -> str:
    """Free text: anything printable (spaces, quotes, non-ASCII letters)."""
    bad = bad_character(value)
    if bad:
        raise ValueError(f"contains {bad}; values must be printable text on one line")
    return value


def check_secret(value: SecretStr) -> SecretStr:
    raw = value.get_secret_value()
    for ch, name in (("\x00", "a NUL byte"), ("\n", "a newline"), ("\r", "a carriage return")):
        if ch in raw:  # never echo the secret
            raise ValueError(f"contains {name}, which cannot be sent as a secret; remove it")
    return value


def _rule(check: Callable[[str], str | None]) -> Callable[[str], str]:
    """An AfterValidator from ``check`` (returns a problem, or None): control characters are refused first."""

    def validate(value: str) -> str:
        check_text(value)
        problem = check(value)
        if problem:
            raise ValueError(problem)
        return value

    return validate


# --- names and addresses ------------------------------------------------------------------------

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DNS1123_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*")


def is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def is_hostname(value: str) -> bool:
    """RFC 1123 host name; an all-numeric last label is refused, so a mistyped IPv4 address is not a name."""
    return (len(value) <= 253 and _HOSTNAME.fullmatch(value) is not None
            and not value.rsplit(".", 1)[-1].isdigit())


def _address(value: str) -> str | None:
    if is_ip(value) or is_hostname(value):
        return None
    return f"{show(value)} is not an IPv4 or IPv6 address or a host name (letters, digits, '-' and '.'; IDN names in punycode)"


def _ip(value: str) -> str | None:
    return None if is_ip(value) else f"{show(value)} is not an IP address"


def _cidr(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        return f"{show(value)} is not a network in CIDR form ({exc})"
    return None


def _dns_name(value: str) -> str | None:
    if len(value) <= 253 and _DNS1123_SUBDOMAIN.fullmatch(value) and all(len(p) <= 63 for p in value.split(".")):
        return None
    return f"{show(value)} is not a DNS name (lowercase letters, digits, '-' and '.', e.g. cluster.local)"


def _dns_label(value: str) -> str | None:
    if _DNS1123_LABEL.fullmatch(value):
        return None
    return (f"{show(value)} is not a DNS-1123 label (at most 63 lowercase letters, digits and '-', "
            "starting and ending with a letter or digit)")


def _cert_san(value: str) -> str | None:
    name = value[2:] if value.startswith("*.") else value
    if is_ip(value) or is_hostname(name):
        return None
    return f"{show(value)} is not an IP address or a DNS name (a leading '*.' is allowed)"


_NODE_NAME = re.compile(r"[a-z0-9](?:[-a-z0-9.]*[a-z0-9])?")
_NODE_NAME_MESSAGE = "must be lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"


def _node_name(value: str) -> str | None:
    if len(value) <= 63 and _NODE_NAME.fullmatch(value):
        return None
    return f"{_NODE_NAME_MESSAGE}, at most 63 (not {show(value)})"


def _cluster_name(value: str) -> str | None:
    if _DNS1123_LABEL.fullmatch(value):
        return None
    return f"must be lowercase letters, digits or '-', starting and ending with a letter or digit, at most 63 (not {show(value)})"


_USER = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,31}")


def _user(value: str) -> str | None:
    if _USER.fullmatch(value):
        return None
    return (f"{show(value)} is not a POSIX login name (letters, digits, '_', '.', '-', starting with a letter "
            "or '_', at most 32)")


def _interface(value: str) -> str | None:
    # The kernel's dev_valid_name: 1-15 bytes, not . or .., no '/', ':' or whitespace.
    if not value or len(value.encode()) > 15 or value in (".", ".."):
        return f"{show(value)} is not an interface name (1 to 15 characters, e.g. eth0)"
    if any(ch in "/:" or ch.isspace() for ch in value):
        return f"{show(value)} is not an interface name ('/', ':' and spaces are not allowed)"
    if value.startswith("-"):
        return f"{show(value)} is not an interface name (it would read as an option)"
    # Stricter than the kernel: names with quotes or shell syntax exist only to break scripts, and keepalived
    # and kube-vip get only what steps/balancer.py writes into them (a letter or digit first, then . _ -).
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value, re.ASCII):
        return f"{show(value)} is not an interface name (letters, digits and . _ -, starting with a letter or digit)"
    return None


# --- registries and images (github.com/distribution/reference grammar) --------------------------

_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_DOMAIN_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_REFERENCE = re.compile(rf"(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?", re.ASCII)
_REPO_PATH = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*", re.ASCII)
_TAG_RE = re.compile(_TAG, re.ASCII)


def _port_ok(port: str) -> bool:
    return port.isascii() and port.isdigit() and 1 <= int(port) <= 65535


def split_host_port(value: str) -> tuple[str, str | None]:
    """``host[:port]`` or ``[v6]:port`` -> (host, port or None); a bare IPv6 address has no port."""
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            return value, None
        return host, rest[1:] if rest.startswith(":") else (rest or None)
    if value.count(":") == 1:
        host, port = value.split(":")
        return host, port
    return value, None


def _registry_host(value: str) -> str | None:
    host, port = split_host_port(value)
    bracketed = value.startswith("[")
    host_ok = (is_ip(host) and (":" not in host or bracketed or port is None)) or is_hostname(host)
    if host_ok and (port is None or _port_ok(port)) and not (bracketed and not is_ip(host)):
        return None
    return f"{show(value)} is not a registry host (host[:port], e.g. registry.example.com:5000, no scheme or path)"


def _registry_prefix(value: str) -> str | None:
    host, _, path = value.partition("/")
    if _registry_host(host) is None and (not path or _REPO_PATH.fullmatch(path)):
        return None
    return (f"{show(value)} is not a registry (host[:port] with an optional lowercase repository path, "
            "e.g. registry.example.com:5000/library, no scheme)")


def _repo_path(value: str) -> str | None:
    if _REPO_PATH.fullmatch(value):
        return None
    return f"{show(value)} is not a repository path (lowercase components separated by '/', e.g. mirror/k8s)"


def _image(value: str) -> str | None:
    match = _REFERENCE.fullmatch(value)
    if match and len(match.group("name")) <= 255:
        return None
    return (f"{show(value)} is not an image reference ([registry/]repository[:tag][@digest], "
            "lowercase repository, e.g. docker.io/library/haproxy:2.8)")


def _version(value: str) -> str | None:
    if re.fullmatch(r"v?[0-9]+(?:\.[0-9]+){0,3}(?:[-+][0-9A-Za-z][0-9A-Za-z.+-]*)?", value, re.ASCII):
        return None
    return f"{show(value)} is not a version (like v1.2.3 or 1.2.3-rc.1)"


# --- URLs ---------------------------------------------------------------------------------------

# RFC 3986 characters, less the ones with no use in the URLs of a cluster file that shells read: ' ( ) $ *.
_URL_CHARS = re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!&+,;=%]+")


def _url_rule(schemes: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(value: str) -> str | None:
        allowed = ", ".join(f"{s}://" for s in schemes)
        if not _URL_CHARS.fullmatch(value):
            return f"{show(value)} is not a URL (no spaces, quotes, '$', '(', ')' or '*'; percent-encode them)"
        try:
            parts = urlsplit(value)
            port = parts.port
        except ValueError as exc:
            return f"{show(value)} is not a URL ({exc})"
        if parts.scheme.lower() not in schemes:
            return f"{show(value)} must start with {allowed}"
        host = parts.hostname or ""
        if not (is_ip(host) or is_hostname(host)) or (port is not None and not 1 <= port <= 65535):
            return f"{show(value)} has no valid host (scheme://host[:port]/path)"
        return None

    return check


# --- system -------------------------------------------------------------------------------------


# Any printable character is allowed (spaces, quotes, ';', '$'): paths are carried verbatim, quoted as one
# word in commands and escaped for each config format by its writer.
def _abs_path(value: str) -> str | None:
    if not value.startswith("/"):
        return f"{show(value)} is not an absolute path (start it with /)"
    if "/../" in value + "/":
        return f"{show(value)} must not contain a '..' segment"
    if value == "/":
        return "'/' is the root directory; name a directory below it"
    if value.startswith("//") or posixpath.normpath(value) != value:
        return f"{show(value)} is not a normalised path; write {show('/' + posixpath.normpath(value).lstrip('/'))}"
    return None


def _local_path(value: str) -> str | None:
    return None if value.strip() else "is empty; give a file or directory path"


# Debian (name[:arch][=version]) and RPM (name[-version[-release]][.arch]) package names; both start with
# a letter or digit, so a name is never read as an option.
_PACKAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+~-]*(?::[a-z0-9-]+)?(?:=[A-Za-z0-9][A-Za-z0-9.+~:_-]*)?", re.ASCII)


def _package(value: str) -> str | None:
    if _PACKAGE.fullmatch(value) and len(value) <= 200:
        return None
    return (f"{show(value)} is not a package name (letters, digits and + - . _ ~, starting with a letter or "
            "digit; name=version for apt)")


_SYSCTL_KEY = re.compile(r"[a-z][a-z0-9_]*(?:[./][A-Za-z0-9_-]+)*", re.ASCII)


def _sysctl_key(value: str) -> str | None:
    if _SYSCTL_KEY.fullmatch(value) and ".." not in value.replace("/", "."):
        return None
    return f"{show(value)} is not a sysctl key (dotted names like net.ipv4.ip_forward)"


def _kernel_module(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,54}", value, re.ASCII):
        return None
    return f"{show(value)} is not a kernel module name (letters, digits, '_' and '-')"


def _timezone(value: str) -> str | None:
    if len(value) <= 64 and re.fullmatch(r"[A-Za-z][A-Za-z0-9_+-]*(?:/[A-Za-z0-9_+-]+)*", value, re.ASCII):
        return None
    return f"{show(value)} is not a time zone name (like UTC or Asia/Shanghai)"


def _identifier(value: str) -> str | None:
    if re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", value, re.ASCII):
        return None
    return f"{show(value)} is not a name (lowercase letters, digits, '.', '_' and '-', starting with a letter or digit)"


def _sha256(value: str) -> str | None:
    return None if re.fullmatch(r"[0-9a-f]{64}", value) else f"{show(value)} is not a sha256 (64 lowercase hex digits)"


def _flag_name(value: str) -> str | None:
    if value.startswith("-"):
        return f"{show(value)}: write the flag name without leading dashes (e.g. audit-log-path)"
    if re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value, re.ASCII):
        return None
    return f"{show(value)} is not a flag name (letters, digits, '-', '_' and '.')"


def _feature_gate(value: str) -> str | None:
    if re.fullmatch(r"[A-Z][A-Za-z0-9]*", value, re.ASCII):
        return None
    return f"{show(value)} is not a feature gate name (like NFTablesProxyMode)"


def _schedule(value: str) -> str | None:
    if re.fullmatch(r"[A-Za-z0-9*,/:.~ -]+", value, re.ASCII) and not value.startswith("-") \
            and "../" not in value and "/.." not in value:  # '..' alone is a systemd range (Mon..Fri)
        return None
    return f"{show(value)} is not a schedule (a systemd calendar expression like 'daily' or '*-*-* 02:00:00')"


def _dns_upstream(value: str) -> str | None:
    if value.startswith("/"):  # a resolv.conf-style file, a word of the Corefile
        ok = _abs_path(value) is None and re.fullmatch(r"[A-Za-z0-9._/-]+", value, re.ASCII)
        return None if ok else f"{show(value)} is not a file path for CoreDNS (letters, digits, '.', '_', '-')"
    rest = value
    for scheme in ("dns://", "tls://"):
        rest = rest.removeprefix(scheme)
    host, port = split_host_port(rest)
    if (is_ip(host) or is_hostname(host)) and (port is None or _port_ok(port)):
        return None
    return f"{show(value)} is not a DNS server (IP[:port], [IPv6]:port, tls://IP or a resolv.conf path)"


def _registry_user(value: str) -> str | None:
    return f"{show(value)}: a registry user name cannot contain ':'" if ":" in value else None


_CHART_NAME = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?(?:/[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?)?", re.ASCII)
_chart_url = _url_rule(("oci", "http", "https"))


def _chart(value: str) -> str | None:
    if "://" in value:
        return _chart_url(value)
    if _CHART_NAME.fullmatch(value):
        return None
    return f"{show(value)} is not a chart (a name like ingress-nginx, repo/name, or an oci:// or https:// URL)"


_http_url = _url_rule(("http", "https"))


def _manifest_source(value: str) -> str | None:
    return _http_url(value) if "://" in value else _local_path(value)


# --- Kubernetes labels and taints ---------------------------------------------------------------

_QUALIFIED_NAME = re.compile(r"(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", re.ASCII)


def _label_key(value: str) -> str | None:
    prefix, sep, name = value.rpartition("/")
    if sep and (not prefix or _dns_name(prefix) is not None):
        return f"{show(value)}: the prefix before '/' must be a DNS name (like example.com)"
    if len(name) > 63 or not _QUALIFIED_NAME.fullmatch(name):
        return (f"{show(value)} is not a label key (at most 63 letters, digits, '-', '_' or '.', starting and "
                "ending with a letter or digit, with an optional DNS prefix and '/')")
    return None


def _label_value(value: str) -> str | None:
    if value == "" or (len(value) <= 63 and _QUALIFIED_NAME.fullmatch(value)):
        return None
    return (f"{show(value)} is not a label value (at most 63 letters, digits, '-', '_' or '.', starting and "
            "ending with a letter or digit)")


TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")


def _taint(value: str) -> str | None:
    head, sep, effect = value.rpartition(":")
    if not sep or effect not in TAINT_EFFECTS:
        return f"{show(value)} is not a taint (key[=value]:effect, effect {', '.join(TAINT_EFFECTS)})"
    key, _, val = head.partition("=")
    return _label_key(key) or _label_value(val)


def parse_taint(value: str) -> dict[str, str]:
    """A validated ``key[=value]:effect`` as the Kubernetes API and kubeadm write a taint."""
    head, _, effect = value.rpartition(":")
    key, sep, val = head.partition("=")
    return {"key": key, **({"value": val} if sep else {}), "effect": effect}


def _normalised(normalise: Callable[[str], str], check: Callable[[str], str | None]) -> Callable[[str], str]:
    """Like _rule, after ``normalise`` (a trailing '/' users often write)."""
    validate = _rule(check)
    return lambda value: validate(normalise(value) or value)


# The types. ``Text`` and the other free_text kinds accept anything printable on one line; every field of
# such a type is listed in tests/spec/test_hostile_values.py with why its value is harmless verbatim.
Text = Annotated[str, AfterValidator(check_text), Kind("text", free_text=True)]
Secret = Annotated[SecretStr, AfterValidator(check_secret), Kind("secret", free_text=True)]
LocalPath = Annotated[str, AfterValidator(_rule(_local_path)), Kind("local-path", free_text=True)]
ManifestSource = Annotated[str, AfterValidator(_rule(_manifest_source)), Kind("manifest-source", free_text=True)]
RegistryUser = Annotated[str, AfterValidator(_rule(_registry_user)), Kind("registry-user", free_text=True)]

Address = Annotated[str, AfterValidator(_rule(_address)), Kind("address")]
NtpServer = Annotated[str, AfterValidator(_rule(_address)), Kind("ntp-server")]
IPAddress = Annotated[str, AfterValidator(_rule(_ip)), Kind("ip")]
Cidr = Annotated[str, AfterValidator(_rule(_cidr)), Kind("cidr")]
DnsName = Annotated[str, AfterValidator(_rule(_dns_name)), Kind("dns-name")]
DnsLabel = Annotated[str, AfterValidator(_rule(_dns_label)), Kind("dns-label")]
CertSan = Annotated[str, AfterValidator(_rule(_cert_san)), Kind("cert-san")]
NodeName = Annotated[str, AfterValidator(_rule(_node_name)), Kind("node-name")]
ClusterName = Annotated[str, AfterValidator(_rule(_cluster_name)), Kind("cluster-name")]
UserName = Annotated[str, AfterValidator(_rule(_user)), Kind("user")]
InterfaceName = Annotated[str, AfterValidator(_rule(_interface)), Kind("interface")]
RegistryHost = Annotated[str, AfterValidator(_rule(_registry_host)), Kind("registry-host")]
RegistryPrefix = Annotated[str, AfterValidator(_normalised(lambda v: v.rstrip("/"), _registry_prefix)), Kind("registry")]
RepositoryPath = Annotated[str, AfterValidator(_normalised(lambda v: v.strip("/"), _repo_path)), Kind("repository-path")]
ImageRef = Annotated[str, AfterValidator(_rule(_image)), Kind("image")]
ImageTag = Annotated[str, AfterValidator(_rule(lambda v: None if _TAG_RE.fullmatch(v) else
                                               f"{show(v)} is not an image tag (letters, digits, '_', '.', '-')")),
                     Kind("image-tag")]
Version = Annotated[str, AfterValidator(_rule(_version)), Kind("version")]
Url = Annotated[str, AfterValidator(_rule(_http_url)), Kind("url")]
ChartRef = Annotated[str, AfterValidator(_rule(_chart)), Kind("chart")]
AbsPath = Annotated[str, AfterValidator(_rule(_abs_path)), Kind("abs-path")]
PackageName = Annotated[str, AfterValidator(_rule(_package)), Kind("package")]
SysctlKey = Annotated[str, AfterValidator(_rule(_sysctl_key)), Kind("sysctl-key")]
SysctlValue = Annotated[str, AfterValidator(check_text), Kind("sysctl-value", free_text=True)]
KernelModule = Annotated[str, AfterValidator(_rule(_kernel_module)), Kind("kernel-module")]
Timezone = Annotated[str, AfterValidator(_rule(_timezone)), Kind("timezone")]
Identifier = Annotated[str, AfterValidator(_rule(_identifier)), Kind("identifier")]
Sha256 = Annotated[str, AfterValidator(_rule(_sha256)), Kind("sha256")]
FlagName = Annotated[str, AfterValidator(_rule(_flag_name)), Kind("flag-name")]
ArgValue = Annotated[str, AfterValidator(check_text), Kind("arg-value", free_text=True)]
FeatureGate = Annotated[str, AfterValidator(_rule(_feature_gate)), Kind("feature-gate")]
Schedule = Annotated[str, AfterValidator(_rule(_schedule)), Kind("schedule")]
DnsUpstream = Annotated[str, AfterValidator(_rule(_dns_upstream)), Kind("dns-upstream")]
LabelKey = Annotated[str, AfterValidator(_rule(_label_key)), Kind("label-key")]
LabelValue = Annotated[str, AfterValidator(_rule(_label_value)), Kind("label-value")]
Taint = Annotated[str, AfterValidator(_rule(_taint)), Kind("taint")]

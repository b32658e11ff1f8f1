"""Redaction of every text a support bundle or a followed log holds: one function, line by line, with state.

Text from nodes is hostile to a simple search-and-replace: a private key spans lines, a YAML block scalar
holds a token on the lines below its key, a journal line holds ``--token=...`` in a process's argv, a
container registry's ``config.json`` holds base64 ``user:password``. ``Redactor.lines`` is the one
function: it carries what it needs from line to line (inside a private key, inside a secret block scalar),
so a stream cut into chunks is redacted exactly as the whole text would be. Literal secrets from the cluster
file (sudo passwords, registry passwords, ...) are scrubbed from every line whatever surrounds them.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from kubexm.state.redact import REDACTED, is_secret_key

# Names whose value is never a secret although the name looks like one (kube settings the CIS scan and
# on-call need to read): keeping them readable costs nothing.
_NOT_SECRET_KEYS = frozenset({
    "authorization-mode", "authorizationmode", "authorization_mode", "anonymous-auth", "client-cert-auth",
    "peer-client-cert-auth", "enable-bootstrap-token-auth", "auth-type", "authtype", "key-usages", "keyusages",
    "token-ttl", "ttl", "discovery-token-ca-cert-hash", "discovery-token-unsafe-skip-ca-verification",
})
# Values that are never secrets: booleans, nulls, absolute paths (a key *file* is named, not its content).
_HARMLESS_VALUE = re.compile(r"""^["']?(true|false|yes|no|null|none|~|<redacted>)?["']?,?$""", re.I)
# An absolute path of at least two parts (a secret that happens to start with "/" is rarely that).
_PATH_VALUE = re.compile(r"""^["']?/[\w.@:+-]+(/[\w.@:+-]*)+["']?,?$""")

_KEY = r"[A-Za-z_][\w.-]*"
# `key: value`, `key = "value"`, `KEY=value`, `- key: value`, `export KEY=value` at the start of a line:
# the rest of the line is the value (YAML/INI/env values may hold spaces).
_LINE_KV = re.compile(rf"""^(?P<lead>\s*(?:-\s+)?(?:export\s+)?)(?P<q>["']?)(?P<key>{_KEY})(?P=q)"""
                      r"""(?P<sep>\s*[:=]\s*)(?P<val>.*)$""")
# `"key": "value"` / `key=value` / `key: value` anywhere in a line (JSON, flow YAML, a logged map).
_INLINE_KV = re.compile(
    rf"""(?P<pre>(?<![\w-])(?P<q>["']?)(?P<key>{_KEY})(?P=q)\s*[:=]\s*)"""
    r"""(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|\[[^\]\n]*\]|[^\s,;{}\[\]"']+)""")
# `--token=abc`, `--password abc`, `-p=abc` in a process's command line.
_FLAG = re.compile(r"""(?P<pre>(?<![\w-])--?(?P<key>[A-Za-z][\w-]*)(?:=|\s+))(?P<val>"(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s"']+)""")
_URL_CREDS = re.compile(r"(?P<pre>\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+@", re.I)
_AUTH_SCHEME = re.compile(r"\b(?P<pre>(?:Bearer|Basic|Digest|token)\s+)[A-Za-z0-9+/=._~-]{8,}", re.I)
# kubeadm bootstrap tokens (``abcdef.0123456789abcdef``) and JWTs (service account tokens), wherever they are.
_BOOTSTRAP_TOKEN = re.compile(r"(?<![A-Za-z0-9])[a-z0-9]{6}\.[a-z0-9]{16}(?![A-Za-z0-9])")
_JWT = re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
# Password hashes (htpasswd, shadow-style): `user:$2y$...`.
_PW_HASH = re.compile(r"(?P<pre>^[^:\s]+:)(?:\$(?:2[abxy]|apr1|1|5|6|y|gy|7)\$|\{SHA\})\S+")
# A bare base64 line (a key body seen without its header, say in a log tail that starts mid-block).
_BARE_B64 = re.compile(r"^\s*[A-Za-z0-9+/]{40,}={0,2}\s*$")
# Cheap tests that let most lines skip the patterns: every secret key name holds one of these words (see
# kubexm.state.redact._SECRET_WORD and the SecretStr field names), and a bootstrap token has its dot here.
_GATE_WORDS = ("pass", "secret", "token", "key", "auth", "credential", "bearer", "basic", "digest")
_GATE_TOKEN = re.compile(r"\.[a-z0-9]{16}")
_PEM_BEGIN = re.compile(r"-----BEGIN ([A-Z0-9 ]*)-----")
_PEM_END = re.compile(r"-----END ([A-Z0-9 ]*)-----")
_BLOCK_SCALAR = re.compile(r"^[|>][-+0-9]*\s*(#.*)?$")

# A private key block longer than this many lines has lost its END marker: stop hiding (bare base64 lines
# are still hidden by _BARE_B64), so a truncated key cannot swallow the rest of a journal.
MAX_KEY_LINES = 200
# Longest stretch a literal secret or a pattern could straddle when an over-long line is cut.
STRADDLE = 512


def _harmless(value: str) -> bool:
    value = value.strip()
    return bool(_HARMLESS_VALUE.match(value) or _PATH_VALUE.match(value))


def _secret_key(key: str) -> bool:
    name = key.strip("\"'").lower()
    if name in _NOT_SECRET_KEYS or name.rsplit(".", 1)[-1] in _NOT_SECRET_KEYS:
        return False
    return is_secret_key(name)


def _quoted_like(value: str) -> str:
    """REDACTED in the quotes the value had, so a redacted JSON/TOML file still parses."""
    value = value.rstrip()
    trail = "," if value.endswith(",") else ""
    body = value[:-1] if trail else value
    for q in ('"', "'"):
        if len(body) >= 2 and body.startswith(q) and body.endswith(q):
            return f"{q}{REDACTED}{q}{trail}"
    if body.startswith("[") and body.endswith("]"):
        return f'["{REDACTED}"]{trail}'
    return REDACTED + trail


def secret_variants(secret: str) -> set[str]:
    """The forms a secret takes in files and logs: as is, JSON-escaped and URL-escaped (base64 ``user:pass``
    in registry auths is caught by the ``auth`` key, wherever the secret falls in it)."""
    out = {secret, json.dumps(secret)[1:-1], urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret)}
    return {v for v in out if v}


@dataclass
class Redactor:
    """Redacts text line by line. ``secrets``: literal values (from the cluster file) scrubbed everywhere;
    values shorter than ``min_secret`` are left to the patterns (scrubbing "ab" would shred every line)."""

    secrets: Iterable[str] = ()
    min_secret: int = 4
    _literals: list[str] = field(init=False, default_factory=list)
    _literal_re: re.Pattern[str] | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        found: set[str] = set()
        for s in self.secrets:
            if s and len(s) >= self.min_secret and s != REDACTED:
                found |= {v for v in secret_variants(s) if len(v) >= self.min_secret}
        self._literals = sorted(found, key=len, reverse=True)
        self._literal_re = re.compile("|".join(map(re.escape, self._literals))) if self._literals else None

    @property
    def longest_secret(self) -> int:
        return max((len(s) for s in self._literals), default=0)

    def stream(self) -> LineRedactor:
        """A redactor for one text given a line at a time (it keeps the state between lines)."""
        return LineRedactor(self)

    def redact(self, text: str) -> str:
        """The whole text redacted (the same code path as a stream)."""
        lines = self.stream()
        return "".join(lines.feed(line) for line in text.splitlines(keepends=True))

    def scrub(self, line: str) -> str:
        """Patterns and literal secrets within one line (no state).

        Each pattern runs only when a cheap test says it could match: most journal lines hold nothing secret,
        and a support bundle is millions of lines."""
        line = self.scrub_literals(line)
        low = line.lower()
        if any(w in low for w in _GATE_WORDS):
            m = _LINE_KV.match(line.rstrip("\r\n"))
            if m and _secret_key(m["key"]) and not _harmless(m["val"]) \
                    and not _BLOCK_SCALAR.match(m["val"].strip()) and m["val"].strip() not in ("", "{", "["):
                end = line[len(line.rstrip("\r\n")):]
                line = f"{m['lead']}{m['q']}{m['key']}{m['q']}{m['sep']}{_quoted_like(m['val'])}{end}"
            line = _INLINE_KV.sub(_kv_sub, line)
            line = _FLAG.sub(_kv_sub, line)
            line = _AUTH_SCHEME.sub(lambda m: f"{m['pre']}{REDACTED}", line)
        if "://" in line and "@" in line:
            line = _URL_CREDS.sub(lambda m: f"{m['pre']}{REDACTED}@", line)
        if _GATE_TOKEN.search(line):
            line = _BOOTSTRAP_TOKEN.sub(REDACTED, line)
        if "eyJ" in line:
            line = _JWT.sub(REDACTED, line)
        if "$" in line or "{SHA}" in line:
            line = _PW_HASH.sub(lambda m: f"{m['pre']}{REDACTED}", line)
        if _BARE_B64.match(line):
            line = REDACTED + ("\n" if line.endswith("\n") else "")
        return self.scrub_literals(line)  # a pattern's replacement can join pieces into a secret: once more

    def scrub_literals(self, line: str) -> str:
        if self._literal_re is not None and any(s in line for s in self._literals):
            line = self._literal_re.sub(REDACTED, line)
        return line


def _kv_sub(m: re.Match[str]) -> str:
    if not _secret_key(m["key"]) or _harmless(m["val"]):
        return m.group(0)
    return m["pre"] + _quoted_like(m["val"])


class LineRedactor:
    """State of one text being redacted: inside a private key, inside a secret YAML block scalar."""

    def __init__(self, redactor: Redactor) -> None:
        self.r = redactor
        self.in_key: str | None = None  # the PEM label whose END line ends the hidden block
        self.key_lines = 0
        self.in_cert = False
        self.block_indent: int | None = None  # indentation of a secret key whose block scalar is hidden
        self.block_said = False

    def feed(self, line: str) -> str:
        """One line (with its newline, if it had one) redacted; "" when the line is hidden whole."""
        nl = "\n" if line.endswith("\n") else ""
        if self.in_key is not None:
            end = _PEM_END.search(line)
            if end and end.group(1) == self.in_key:
                self.in_key = None
                return line[end.start():]  # the END marker line (nothing secret on it) closes the block
            self.key_lines += 1
            if self.key_lines <= MAX_KEY_LINES:
                return ""
            self.in_key = None
        if self.block_indent is not None:
            stripped = line.strip()
            if not stripped:
                return line
            if len(line) - len(line.lstrip(" \t")) > self.block_indent:
                if self.block_said:
                    return ""
                self.block_said = True
                return line[:len(line) - len(line.lstrip(" \t"))] + REDACTED + nl
            self.block_indent = None
        begin = _PEM_BEGIN.search(line) if "-----" in line else None
        if begin and "PRIVATE KEY" in begin.group(1):
            self.in_key, self.key_lines = begin.group(1), 0
            head = self.r.scrub(line[:begin.start()]) if begin.start() else ""
            end = _PEM_END.search(line, begin.end())
            if end and end.group(1) == self.in_key:  # a whole key on one line (escaped newlines, say)
                self.in_key = None
                return f"{head}{begin.group(0)}{REDACTED}{end.group(0)}{self.feed(line[end.end():]) if line[end.end():] else ''}"
            return f"{head}{begin.group(0)}\n{REDACTED}\n"
        if begin and begin.group(1) == "CERTIFICATE":
            self.in_cert = True
        elif "-----END" in line:
            self.in_cert = False
        if self.in_cert and _BARE_B64.match(line):
            return self.r.scrub_literals(line)
        m = _LINE_KV.match(line.rstrip("\r\n"))
        if m and _secret_key(m["key"]) and _BLOCK_SCALAR.match(m["val"].strip()):
            self.block_indent = len(line) - len(line.lstrip(" \t"))
            self.block_said = False
            return line
        return self.r.scrub(line)

    def lines(self, lines: Iterable[str]) -> Iterator[str]:
        for line in lines:
            out = self.feed(line)
            if out:
                yield out

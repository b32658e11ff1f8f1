"""What may reach the run history, the audit log and lock files: command lines and details without secrets.

The secret fields of the cluster file (every ``SecretStr`` of ``spec.models``: passwords, passphrases,
sudo passwords, registry auths) can be set on the command line with ``--set``/``-e key.path=value``; such
a value, and any ``key=value`` word whose key looks secret, is replaced by ``<redacted>`` here, whatever
the caller already did: the state layer does not trust its callers to have redacted.
"""

from __future__ import annotations

import re
import shlex
from functools import cache
from typing import Any

REDACTED = "<redacted>"
# Words that name a secret in a key (any casing, camelCase or snake_case): over-redacting a harmless
# value costs a less readable history line, under-redacting costs a password on disk.
_SECRET_WORD = re.compile(r"pass(word|phrase|wd)?|secret|token|private[_-]?key|credential|auth|\bkey\b", re.I)
_OVERRIDE_FLAGS = ("--set", "-e")


@cache
def secret_field_names() -> frozenset[str]:
    """Every name (snake_case and YAML alias) of a SecretStr field of the cluster models, lower-cased."""
    from pydantic import BaseModel, SecretStr

    from kubexm.spec.models import Cluster

    names: set[str] = set()
    seen: set[type] = set()

    def walk(model: type[BaseModel]) -> None:
        if model in seen:
            return
        seen.add(model)
        for fname, field in model.model_fields.items():
            for kind in _types_in(field.annotation):
                if kind is SecretStr:
                    names.add(fname.lower())
                    if field.alias:
                        names.add(field.alias.lower())
                elif isinstance(kind, type) and issubclass(kind, BaseModel):
                    walk(kind)

    walk(Cluster)
    return frozenset(names)


def _types_in(annotation: Any) -> list[Any]:
    args = getattr(annotation, "__args__", None)
    if not args:
        return [annotation]
    return [t for a in args for t in _types_in(a)]


def is_secret_key(key: str) -> bool:
    """``spec.hosts[0].sudoPassword``, ``auths``, ``PASSWORD``: does this key (path) name a secret?"""
    last = re.sub(r"\[[^\]]*\]", "", key.strip().rsplit(".", 1)[-1]).lstrip("-")
    return last.lower() in secret_field_names() or bool(_SECRET_WORD.search(last))


def _secret_setting(word: str) -> bool:
    key, sep, value = word.partition("=")
    # `--set spec.hosts[0]={name: a, sudoPassword: x}` names no secret in its key but sets one.
    return bool(sep) and (is_secret_key(key) or bool(_SECRET_WORD.search(value)))


def _redact_setting(word: str) -> str:
    return f"{word.partition('=')[0]}={REDACTED}" if _secret_setting(word) else word


def redact_argv(argv: list[str]) -> list[str]:
    """The words of a command line with the value of every secret ``key=value`` (``--set``/``-e`` or not)
    replaced by ``<redacted>``."""
    out: list[str] = []
    for word in argv:
        flag = next((f for f in _OVERRIDE_FLAGS if word.startswith(f + "=")), None)
        if flag is not None:  # --set=spec...=value
            out.append(f"{flag}={_redact_setting(word[len(flag) + 1:])}")
        elif word.startswith("-e") and not word.startswith("--") and len(word) > 2:  # -espec...=value
            out.append("-e" + _redact_setting(word[2:].removeprefix("=")))
        else:
            out.append(_redact_setting(word))
    return out


def redact_command_line(command: str) -> str:
    """``command`` (a shell-quoted command line) with every secret setting redacted."""
    try:
        words = shlex.split(command)
    except ValueError:  # unbalanced quotes: not from shlex.join; redact whole settings word by word
        return " ".join(_redact_setting(w) for w in command.split(" "))
    redacted = redact_argv(words)
    return command if redacted == words else shlex.join(redacted)


def redact(value: Any) -> Any:
    """Replace values under secret-looking keys, at any depth, before they reach the log."""
    if isinstance(value, dict):
        return {k: (REDACTED if is_secret_key(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    if isinstance(value, str) and "=" in value:
        return _redact_setting(value)
    return value


def spec_secret_values(cluster: Any, min_length: int = 1) -> list[str]:
    """Every secret value a cluster holds (each ``SecretStr``: sudo and login passwords, passphrases, registry
    passwords) and the forms configs carry them in (docker's base64 ``user:password``); longest first, so a
    secret that contains another is replaced whole. What logs, plans and diffs scrub literally."""
    import base64

    from pydantic import BaseModel, SecretStr

    found: list[str] = []

    def walk(value: object) -> None:
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)

    walk(cluster)
    for auth in cluster.spec.registry.auths:
        found.append(base64.b64encode(f"{auth.username}:{auth.password.get_secret_value()}".encode()).decode())
    return sorted({s for s in found if len(s) >= max(1, min_length)}, key=len, reverse=True)

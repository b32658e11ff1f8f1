"""Jinja2 templates of every file kubexm writes on a host, and the escaping each format needs.

Every value a template prints passes ``_finalize``: a line break, NUL or other control character in a
value is refused at render time, so no value from the cluster file can add a line to a config file
(a second ``ExecStart=``, a TOML table, an haproxy directive). A value that is meant to span lines
(a PEM block) is passed through the ``block`` filter, which says so explicitly.
"""

from __future__ import annotations

import json
import re
import shlex
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment

_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


class TemplateValueError(ValueError):
    """A value cannot be written into a config file safely (it would add a line or hide a NUL)."""


class Block(str):
    """Text that may span lines, placed in a template on purpose (``{{ pem | block }}``)."""


def _finalize(value: Any) -> Any:
    if isinstance(value, str) and not isinstance(value, Block) and _CONTROL.search(value):
        raise TemplateValueError(f"refusing to write {value!r} into a config file: it holds a line break or "
                                 "control character")
    return value


def toml_string(value: Any) -> str:
    """A TOML basic string with its quotes: JSON's escapes are valid TOML, so a value never breaks out."""
    return json.dumps(str(value), ensure_ascii=False)


def systemd_quote(value: Any) -> str:
    """One word for a systemd unit line (``Environment=``, ``ExecStart=``): double-quoted with C escapes, and
    ``%`` doubled so systemd does not expand it as a specifier."""
    text = str(value)
    if "\x00" in text:
        raise TemplateValueError("a NUL byte cannot be written into a unit file")
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("%", "%%")
    return f'"{escaped}"'


def env_file_value(value: Any) -> str:
    """A value for an ``EnvironmentFile=`` line, read by systemd (and by ``sh`` where a script sources it):
    single-quoted, which both read literally; single quotes inside are closed, escaped and reopened."""
    text = str(value)
    if _CONTROL.search(text):
        raise TemplateValueError(f"refusing to write {text!r} into an environment file: it holds a control character")
    return shlex.quote(text)


@lru_cache(maxsize=1)
def environment() -> Environment:
    # Imported here: a run that renders nothing (a command on every host) need not load Jinja2.
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # StrictUndefined: a missing value is an error at render time, never an empty string in a config.
    env = Environment(loader=PackageLoader("kubexm", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True, finalize=_finalize)
    env.filters["toml"] = toml_string
    env.filters["json"] = lambda value: json.dumps(value, ensure_ascii=False)
    # YAML: a JSON string is a double-quoted YAML scalar, a string for every YAML 1.1 and 1.2 reader alike
    # (Go's yaml.v2 would read a bare no/on/y as a boolean).
    env.filters["yaml"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    env.filters["systemd"] = systemd_quote
    env.filters["env"] = env_file_value
    env.filters["shell"] = lambda value: shlex.quote(str(value))
    env.filters["block"] = Block
    return env


def render(template: str, /, **values: Any) -> str:
    return environment().get_template(template).render(**values)

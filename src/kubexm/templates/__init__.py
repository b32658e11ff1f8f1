"""Jinja2 templates of every file kubexm writes on a host."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from jinja2 import Environment


@lru_cache(maxsize=1)
def environment() -> Environment:
    # Imported here: a run that renders nothing (a command on every host) need not load Jinja2.
    from jinja2 import Environment, PackageLoader, StrictUndefined

    # StrictUndefined: a missing value is an error at render time, never an empty string in a config.
    env = Environment(loader=PackageLoader("kubexm", "templates"), undefined=StrictUndefined,
                      keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    # A TOML basic string with its quotes: JSON's escapes are valid TOML, so user values
    # (passwords, paths) can never break out of the string.
    env.filters["toml"] = lambda value: json.dumps(str(value), ensure_ascii=False)
    return env


def render(template: str, /, **values: Any) -> str:
    return environment().get_template(template).render(**values)

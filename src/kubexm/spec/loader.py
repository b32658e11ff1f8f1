"""Read a cluster file into a validated Cluster, with errors that point at FILE:LINE and the field.

ruamel's round-trip loader keeps the line of every key and list item, so a pydantic error
location such as ``("spec", "hosts", 1, "address")`` can be mapped back to the line a user
has to edit.
"""

from __future__ import annotations

import difflib
import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from kubexm.errors import SpecError
from kubexm.spec import parse_cache
from kubexm.spec.models import API_VERSION, KIND, Cluster

if TYPE_CHECKING:
    from ruamel.yaml import YAML
    from ruamel.yaml.comments import CommentedMap

Loc = tuple[str | int, ...]


def load_cluster(path: Path | str, overrides: Sequence[str] = (), validate: bool = True) -> Cluster:
    """Load and validate a cluster file; every problem is reported, one line each."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(
            [f"{path}: no such file"],
            hint="pass the cluster file with -f FILE; `kubexm create config -o cluster.yaml` writes a sample",
        ) from None
    except IsADirectoryError:
        raise SpecError([f"{path}: is a directory, not a cluster file"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError([f"{path}: cannot read the cluster file ({exc})"]) from None
    return parse_cluster(text, source=str(path), overrides=overrides, validate=validate)


def parse_cluster(
    text: str, source: str = "<cluster>", overrides: Sequence[str] = (), validate: bool = True
) -> Cluster:
    """Parse YAML text into a Cluster; ``overrides`` are ``key.path=value`` settings applied first."""
    entry = parse_cache.entry(text)
    cached = parse_cache.load(entry)
    if cached is not None:
        try:
            return _build(cached, source, overrides, validate)
        except SpecError:
            # A cached plain dict knows no lines: the same errors are reported from ruamel's parse below.
            cached = None
    data = _parse_yaml(text, source)
    parse_cache.store(entry, data)
    return _build(data, source, overrides, validate)


def _build(data: dict[str, Any], source: str, overrides: Sequence[str], validate: bool) -> Cluster:
    """Overrides, header, models and cross-field checks on parsed data. Errors name lines when ``data`` is
    ruamel's (a cached plain dict has none)."""
    for item in overrides:
        apply_override(data, item)
    problems = _header_problems(data, source)
    if problems:
        raise SpecError(problems)
    try:
        cluster = Cluster.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_errors(exc, data, source)) from None
    if validate:
        from kubexm.spec.validate import validate_cluster

        cross = validate_cluster(cluster)
        if cross:
            raise SpecError([f"{source}:{_line_of_path(data, p)}: {p}" for p in cross])
    return cluster


def _yaml() -> YAML:
    from ruamel.yaml import YAML

    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    return yaml


def _parse_yaml(text: str, source: str) -> CommentedMap:
    if not text.strip():
        raise SpecError(
            [f"{source}: the file is empty"],
            hint="`kubexm create config` prints a sample cluster file to start from",
        )
    from ruamel.yaml.comments import CommentedMap
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        data = _yaml().load(io.StringIO(text))
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = (exc.problem or exc.context or "invalid YAML").strip()
        if "found duplicate key" in str(exc):
            reason = "duplicate key " + str(exc).split("found duplicate key", 1)[1].split("\n")[0].strip()
        raise SpecError([f"{source}:{line}: invalid YAML: {reason}"], hint="fix the YAML syntax") from None
    except YAMLError as exc:
        raise SpecError([f"{source}: invalid YAML: {str(exc).splitlines()[0]}"]) from None
    if data is None:
        raise SpecError([f"{source}: the file is empty (only comments)"],
                        hint="`kubexm create config` prints a sample cluster file to start from")
    if not isinstance(data, CommentedMap):
        kind = "a list" if isinstance(data, list) else f"a {type(data).__name__}"
        raise SpecError(
            [f"{source}:1: the cluster file must be a mapping (apiVersion, kind, metadata, spec), not {kind}"]
        )
    return data


def _header_problems(data: dict[str, Any], source: str) -> list[str]:
    problems = []
    api = data.get("apiVersion")
    if api != API_VERSION:
        problems.append(
            f"{source}:{_line_of(data, ('apiVersion',))}: apiVersion: is {api!r}, must be '{API_VERSION}'"
        )
    kind = data.get("kind")
    if kind != KIND:
        problems.append(f"{source}:{_line_of(data, ('kind',))}: kind: is {kind!r}, must be '{KIND}'")
    return problems


# --- mapping pydantic error locations to YAML lines -------------------------------------------


def _line_of(data: Any, loc: Loc) -> int:
    """1-based line of the deepest node of ``loc`` present in the YAML (the parent's when missing)."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    line = 1
    node = data
    for part in loc:
        try:
            if isinstance(node, CommentedMap) and isinstance(part, str) and part in node:
                pos = node.lc.key(part)
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
                pos = node.lc.item(part)
            else:
                break
        except (KeyError, IndexError, TypeError):  # set by an -e override: it has no line in the file
            break
        if pos is None:
            break
        line = pos[0] + 1
        node = node[part]
    return line


def _line_of_path(data: Any, problem: str) -> int:
    """Line for a validate_cluster problem, which starts with a dotted field path."""
    path = problem.split(":", 1)[0].strip()
    return _line_of(data, parse_path(path) if path else ())


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_./-]+")


def _display(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _PLAIN_KEY.fullmatch(str(part)):
            out += ("." if out else "") + str(part)
        else:  # a map key with spaces, quotes or control characters: quoted, so the message stays one line
            out += f"[{str(part)!r}]"
    return out


def _known_fields(model: type[BaseModel]) -> list[str]:
    return [info.alias or name for name, info in model.model_fields.items()]


def _model_at(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that holds the last element of ``loc`` (for 'did you mean')."""
    model: Any = Cluster
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = next(
            (f for n, f in model.model_fields.items() if part in (n, f.alias)),
            None,
        )
        if field is None:
            return None
        model = _inner_model(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _inner_model(annotation: Any) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _format_errors(exc: ValidationError, data: dict[str, Any], source: str) -> list[str]:
    problems: list[str] = []
    for err in exc.errors(include_url=False, include_input=False):
        loc: Loc = tuple(err["loc"])
        # pydantic appends the union member / function name for some errors; keep field parts only.
        loc = tuple(p for p in loc if isinstance(p, int) or not str(p).startswith(("function-", "lax-")))
        is_key = bool(loc) and loc[-1] == "[key]"  # pydantic's marker of a map key (not its value) being wrong
        loc = loc[:-1] if is_key else loc
        path = _display(loc[:-1]) + f"[{str(loc[-1])!r}]" if is_key else _display(loc)
        line = _line_of(data, loc)
        kind = err["type"]
        msg = err["msg"]
        if kind == "extra_forbidden":
            model = _model_at(loc)
            known = _known_fields(model) if model else []
            lowered = {k.lower(): k for k in known}
            close = [lowered[c] for c in difflib.get_close_matches(str(loc[-1]).lower(), list(lowered), n=1)]
            fix = f"did you mean '{close[0]}'?" if close else "remove it"
            if known and not close:
                fix += f" (allowed here: {', '.join(known)})"
            text = f"unknown field {str(loc[-1])!r}; {fix}"
        elif kind == "missing":
            text = "is required but missing; add it"
        elif kind == "literal_error":
            text = f"{msg.replace('Input should be', 'must be')}"
        elif kind == "value_error":
            text = msg.removeprefix("Value error, ")
        elif kind == "string_type":
            text = "must be text; quote the value (YAML read it as a number or list)"
        elif kind == "string_pattern_mismatch":
            text = "must be lowercase letters, digits, '-' or '.', starting and ending with a letter or digit"
        else:
            text = msg.replace("Input should be", "must be")
        problems.append(f"{source}:{line}: {path}: {'key ' if is_key else ''}{text}")
    return problems


# --- overrides (-e key.path=value) -------------------------------------------------------------


def parse_path(path: str) -> Loc:
    """``spec.hosts[0].port`` -> ("spec", "hosts", 0, "port")."""
    parts: list[str | int] = []
    for chunk in path.split("."):
        if not chunk:
            raise SpecError([f"override '{path}': empty path element"], hint="use a path like spec.kubernetes.version")
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            if not index.isdigit():
                raise SpecError([f"override '{path}': '[{index}]' is not a list index"])
            parts.append(int(index))
            rest = rest.removeprefix("[")
    return tuple(parts)


def apply_override(data: dict[str, Any], item: str) -> None:
    """Set one ``key.path=value`` in the parsed file; the value is read as a YAML scalar."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise SpecError([f"override '{item}': expected key=value"], hint="e.g. -e spec.kubernetes.version=v1.31.2")
    loc = parse_path(key.strip())
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        value = YAML(typ="safe").load(raw) if raw.strip() else ""
    except YAMLError:
        value = raw
    node: Any = data
    for i, part in enumerate(loc[:-1]):
        nxt = loc[i + 1]
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise SpecError([f"override '{key}': {_display(loc[: i + 1])} does not exist in the file"])
            node = node[part]
            continue
        if not isinstance(node, dict):
            raise SpecError([f"override '{key}': {_display(loc[:i])} is not a mapping"])
        if part not in node:
            node[part] = [] if isinstance(nxt, int) else type(node)()
        node = node[part]
    last = loc[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise SpecError([f"override '{key}': {_display(loc)} does not exist in the file"])
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise SpecError([f"override '{key}': {_display(loc[:-1])} is not a mapping"])

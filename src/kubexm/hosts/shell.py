"""The one way to build a command for a host: every value is quoted, shell syntax only from literals.

A ``Cmd`` is finished shell text plus what kubexm knows about it. There are three ways to make one:

- ``sh("systemctl", "restart", unit)``: one simple command; every argument is a word, quoted for the
  shell, whatever it holds (spaces, ``;``, ``$(...)``, newlines, a leading ``-`` stays an argument).
- ``shell("test -e {path} || mkdir -p {path}", path=p)``: a template of shell syntax that must be a
  string literal in the source (tests/hardening/test_command_building.py walks the syntax trees to make
  sure of it); each ``{name}`` is replaced by its value quoted as one word (a list: one word per item;
  a ``Cmd``: its text, grouped when needed).
- ``user_shell(text)``: a command line the user typed on purpose (``kubexm run command``): shell by
  intent, never built from the cluster file.

Commands combine with ``&`` (``&&``), ``|`` (pipe), ``.orelse()`` (``||``) and ``.then()`` (``;``);
the operands are grouped so the shell parses them as Python reads them.

``readonly=True`` declares a command that only reads. The engine refuses every command not declared so
while it plans (checks, dry runs): that is what makes a dry run unable to change a host. The declaration
is checked, not trusted: each program at a command position of the template must be on the read-only
list below (with its sub-commands where a program can also write), and output may only be redirected
to /dev/null or to another descriptor.
"""

from __future__ import annotations

import functools
import re
import shlex
import string
from collections.abc import Iterable
from dataclasses import dataclass
from os import PathLike
from typing import Union

Word = Union[str, int, "PathLike[str]"]
Value = Union[Word, "Cmd", Iterable[Word]]

# Nesting of shell text, so operators group their operands as Python reads them.
_SIMPLE, _PIPE, _ANDOR, _LIST = 0, 1, 2, 3


class UnsafeCommand(ValueError):
    """A command could not be built safely (an internal error: the code asked for something unsafe)."""


def _braced(text: str) -> str:
    """``{ text; }``; a text ending in a newline (a script, a here-document) is closed by that newline."""
    return "{ " + text + ("}" if text.endswith("\n") else "; }")


@dataclass(frozen=True)
class Cmd:
    """Shell text built only by this module. ``readonly``: declared and verified to only read."""

    text: str
    readonly: bool = False
    level: int = _SIMPLE

    def __str__(self) -> str:
        return self.text

    def _operand(self, level: int, *, right: bool) -> str:
        # Same-level chains are left-associative; a right operand of the same level must be grouped
        # (``a && (b || c)`` is not ``a && b || c``). Pipes and lists are associative.
        if self.level > level or (right and self.level == level and level == _ANDOR):
            return _braced(self.text)
        return self.text

    def _join(self, op: str, other: Cmd, level: int) -> Cmd:
        if not isinstance(other, Cmd):
            raise UnsafeCommand(f"cannot combine a command with {type(other).__name__}: build it with sh()")
        return Cmd(f"{self._operand(level, right=False)} {op} {other._operand(level, right=True)}",
                   self.readonly and other.readonly, level)

    def __and__(self, other: Cmd) -> Cmd:
        """``self && other``."""
        return self._join("&&", other, _ANDOR)

    def __or__(self, other: Cmd) -> Cmd:
        """``self | other`` (a pipe)."""
        return self._join("|", other, _PIPE)

    def orelse(self, other: Cmd) -> Cmd:
        """``self || other``."""
        return self._join("||", other, _ANDOR)

    def then(self, other: Cmd) -> Cmd:
        """``self; other``: other runs whatever self's exit status."""
        return self._join(";", other, _LIST)

    def group(self) -> Cmd:
        return self if self.level == _SIMPLE else Cmd(_braced(self.text), self.readonly)

    def _redirect(self, suffix: str, readonly: bool) -> Cmd:
        return Cmd(f"{self.group().text} {suffix}", self.readonly and readonly)

    def to(self, path: Word) -> Cmd:
        """Standard output written to ``path`` (replaced)."""
        return self._redirect(">" + _quote(path), False)

    def append_to(self, path: Word) -> Cmd:
        return self._redirect(">>" + _quote(path), False)

    def quiet(self) -> Cmd:
        """Both outputs discarded."""
        return self._redirect(">/dev/null 2>&1", True)

    def no_stderr(self) -> Cmd:
        return self._redirect("2>/dev/null", True)

    def subshell(self) -> Cmd:
        """``( self )``: runs in a child shell, so an ``exit`` in it ends only itself."""
        return Cmd("( " + self.text + " )", self.readonly)

    def negate(self) -> Cmd:
        return Cmd("! " + self.group().text, self.readonly)

    def as_argument(self) -> str:
        """This command's text quoted as one word (for ``sh -c``, ``timeout ... sh -c``)."""
        return shlex.quote(self.text)


def _quote(value: Word) -> str:
    if isinstance(value, bool):  # bool is an int: a True that reaches a command line is a bug
        raise UnsafeCommand("a boolean is not a command argument")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, (str, PathLike)):
        text = str(value) if isinstance(value, str) else str(value.__fspath__())
        if "\x00" in text:
            raise UnsafeCommand("a NUL byte cannot be passed in a command line")
        return shlex.quote(text)
    raise UnsafeCommand(f"{type(value).__name__} is not a command argument; pass str, int or a path")


def _words(value: Value) -> str:
    if isinstance(value, Cmd):
        return value.group().text
    if isinstance(value, (str, int, PathLike)):
        return _quote(value)
    if isinstance(value, Iterable):
        return " ".join(_quote(v) for v in value)
    raise UnsafeCommand(f"{type(value).__name__} cannot be placed in a command")


def sh(*args: Word, readonly: bool = False) -> Cmd:
    """One simple command; each argument becomes exactly one word, whatever it holds."""
    if not args:
        raise UnsafeCommand("an empty command")
    words = [_quote(a) for a in args]
    if readonly:
        _verify_readonly(shlex.split(" ".join(words)))
    return Cmd(" ".join(words), readonly)


def shell(template: str, /, *, readonly: bool = False, **values: Value) -> Cmd:
    """Shell syntax from a literal ``template``; every ``{name}`` gets its value quoted (see module doc).

    ``{{`` and ``}}`` stand for literal braces (``${{VAR}}`` is the shell's ``${VAR}``).
    """
    names = _template_fields(template)
    missing = names - values.keys()
    unused = values.keys() - names
    if missing or unused:
        raise UnsafeCommand(f"template fields {sorted(missing)} missing, {sorted(unused)} unused")
    if readonly:
        commands = frozenset(k for k, v in values.items() if isinstance(v, Cmd))
        if any(not values[k].readonly for k in commands):  # type: ignore[union-attr]
            raise UnsafeCommand("a read-only command cannot include a command that is not read-only")
        _verify_readonly_template(template, commands)
    return Cmd(template.format_map({k: _words(v) for k, v in values.items()}), readonly,
               _level_of_template(template))


def seq(*commands: Cmd) -> Cmd:
    """``a; b; c``: each runs whatever the one before returned."""
    if not commands:
        raise UnsafeCommand("an empty command")
    out = commands[0]
    for c in commands[1:]:
        out = out.then(c)
    return out


def script(text: str, /, *, readonly: bool = False) -> Cmd:
    """A literal shell script with no values in it (the facts probe, say); must be a literal in the source."""
    if readonly:
        _verify_readonly_template(text.replace("{", "{{").replace("}", "}}"))
    return Cmd(text, readonly, _LIST)


def user_shell(text: str) -> Cmd:
    """A command line the user typed to be run as shell (``kubexm run command``); never spec values."""
    if "\x00" in text:
        raise UnsafeCommand("a NUL byte cannot be passed in a command line")
    return Cmd(text, False, _LIST)


def in_dir_of(path: str) -> str:
    """The directory of a remote path (what ``dirname`` would print), for mkdir before a write."""
    head = path.rsplit("/", 1)[0]
    return head or "/"


@functools.cache
def _template_fields(template: str) -> frozenset[str]:
    fields = set()
    for _, name, spec, conv in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier() or spec or conv:
            raise UnsafeCommand(f"template field {{{name}}} must be a plain name (no format spec or index)")
        fields.add(name)
    return frozenset(fields)


@functools.cache
def _level_of_template(template: str) -> int:
    # A field stands for a single word here; only the template's own operators decide the level.
    tokens = _tokens(template)
    if any(t in (";", "\n", "&") for t in tokens):
        return _LIST
    if any(t in ("&&", "||") for t in tokens):
        return _ANDOR
    if "|" in tokens:
        return _PIPE
    return _SIMPLE


def _tokens(template: str, commands: frozenset[str] = frozenset()) -> list[str]:
    probe = template.format_map({name: "true" if name in commands else "W" for name in _template_fields(template)})
    lexer = shlex.shlex(probe.replace("\n", " ; "), posix=True, punctuation_chars=";&|()<>")
    lexer.whitespace_split = True
    lexer.commenters = ""
    try:
        return list(lexer)
    except ValueError as exc:  # unbalanced quotes in a literal template: a programming error
        raise UnsafeCommand(f"template does not parse: {exc}") from exc


# Programs that only read, and for those that can also write, the sub-commands or flags that read.
# ``None``: any arguments. A set: the first non-option argument must be one of these.
_READ_PROGRAMS: dict[str, frozenset[str] | None] = {
    p: None for p in (
        "cat", "test", "[", "stat", "sha256sum", "md5sum", "echo", "printf", "grep", "egrep", "awk", "cut",
        "wc", "head", "tail", "ls", "readlink", "realpath", "dirname", "basename", "uname", "id", "whoami",
        "getent", "ss", "lsmod", "date", "true", "false", "sort", "uniq", "tr", "command", "type", "which",
        "nproc", "free", "df", "du", "ps", "pgrep", "dpkg-query", "rpm", "uptime", "journalctl", "timeout",
        "findmnt", "mountpoint", "lsblk", "env", "printenv", "cmp", "diff", "od", "base64", "xargs",
        "getenforce", "sestatus", "tar", "gzip", "zcat", "jq", "column", "seq", "sleep", "curl", "base32",
        "crictl", "docker", "helm", "kubeadm", "chronyc", "swapon", "ldd", "file", "hostnamectl", "getconf", "locale",
        "systemd-detect-virt", "stat", "sha512sum", "cksum", "nslookup", "ping", "timedatectl", "lscpu",
        # shell built-ins that change nothing outside the shell itself ("." only ever appears in literal
        # templates, reading files such as /etc/os-release)
        ".", ":", "export", "set", "unset", "exit", "return", "read", "shift", "break", "continue", "local",
        "wait", "trap",
    )
}
_READ_PROGRAMS.update({
    "systemctl": frozenset({"is-active", "is-enabled", "is-failed", "show", "status", "cat", "list-units",
                            "list-unit-files", "is-system-running"}),
    "etcdctl": frozenset({"endpoint", "member", "version", "get", "alarm", "check", "snapshot"}),
    "kubectl": frozenset({"get", "version", "config", "describe", "cluster-info", "auth", "api-resources"}),
    "ctr": frozenset({"images", "image", "i", "version", "namespaces", "ns", "containers", "c", "plugins"}),
    "ip": frozenset({"addr", "address", "a", "route", "r", "link", "l", "-o", "-br", "-4", "-6", "neigh"}),
    "openssl": frozenset({"x509", "dgst", "verify", "req", "rsa", "ec", "pkey", "version", "s_client", "crl"}),
    "sysctl": None,  # checked below: no -w/-p, no key=value
    "hostname": None,  # checked below: options only (an operand sets the name)
    "firewall-cmd": None,  # checked below: queries only
    "ufw": frozenset({"status"}),
    "sed": None,  # checked below: never with -i
    "find": None,  # checked below: never with -delete, -exec, -fprint
    "skopeo": frozenset({"inspect", "list-tags", "--version"}),
    "dnf": frozenset({"list", "info", "repoquery", "--version"}),
    "yum": frozenset({"list", "info", "--version"}),
    "apt-cache": frozenset({"policy", "show", "depends", "search"}),
    "modinfo": None,
    "nft": frozenset({"list", "-a", "-j"}),
    "iptables": frozenset({"-S", "-L", "-C", "--version"}),
})
# Daemons: read-only only with an argument that makes them report and exit (their version, a check of a config);
# any other arguments, or none, start the daemon, which writes (etcd its data dir, haproxy its pid file, ...).
_REPORT_ONLY: dict[str, frozenset[str]] = {
    "etcd": frozenset({"--version"}),
    "kubelet": frozenset({"--version"}),
    "containerd": frozenset({"--version", "-v"}),
    "dockerd": frozenset({"--version", "-v"}),
    "crio": frozenset({"--version", "version"}),
    "cri-dockerd": frozenset({"--version"}),
    "haproxy": frozenset({"-v", "-vv", "-c"}),
    "keepalived": frozenset({"--version", "-v", "-t", "--config-test"}),
}
_READ_PROGRAMS.update({p: None for p in _REPORT_ONLY})
_READ_PROGRAMS["runc"] = None  # its writing sub-commands are refused below
# Sub-commands that write, refused even where the program's entry above allows the first word.
_WRITING_ARGS = {
    "etcdctl": {"remove", "add", "promote", "update", "restore", "put", "del", "defrag", "disarm", "move-leader"},
    "openssl": {"-out", "-keyout"},
    "sed": {"-i", "--in-place"},
    "find": {"-delete", "-exec", "-execdir", "-fprint", "-fprintf", "-fls", "-ok"},
    "tar": {"-x", "-c", "x", "c", "xf", "cf", "-xf", "-cf", "-xzf", "-czf", "--extract", "--create"},
    "xargs": {"rm", "mv", "cp", "chmod", "chown", "tee", "kill", "sh", "bash"},
    "timeout": {"rm", "mv", "cp", "chmod", "chown", "tee", "kill", "sh", "bash"},
    "ctr": {"import", "rm", "remove", "pull", "push", "tag", "export"},
    "docker": {"rm", "run", "load", "pull", "push", "start", "stop", "kill", "exec"},
    "crictl": {"rm", "rmi", "pull", "runp", "stopp", "rmp", "exec", "create", "start", "stop"},
    "runc": {"run", "exec", "create", "start", "delete", "kill", "pause", "resume", "update", "checkpoint",
             "restore", "spec"},
    "kubeadm": {"init", "join", "reset", "upgrade", "certs", "kubeconfig", "token"},
    "kubectl": {"set-context", "use-context", "set-cluster", "set-credentials", "delete-context"},
    "helm": {"install", "upgrade", "uninstall", "delete", "rollback", "repo"},
    "curl": {"-o", "--output", "-O", "-T", "--upload-file", "-X", "--data", "-d"},
    "skopeo": {"copy", "delete", "sync"},
    "iptables": {"-A", "-D", "-I", "-F", "-X", "-N"},
    "sort": {"-o"},
    "sysctl": {"-w", "--write", "-p", "--load", "--system"},
    "kubelet": {"--bootstrap-kubeconfig"},
}
# Programs that take options only when reading: any operand changes something.
_OPTIONS_ONLY = {"hostname"}
_KEYWORDS = {"if", "then", "else", "elif", "fi", "do", "done", "while", "until", "!", "{", "}", "(", ")",
             "case", "esac", "in"}
_CONTROL = {";", "&&", "||", "|", "&", "(", ")", ";;"}
_ASSIGN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@functools.cache
def _verify_readonly_template(template: str, commands: frozenset[str] = frozenset()) -> None:
    """``commands``: the fields that hold a (read-only) command; the others hold words."""
    if "`" in template:
        raise UnsafeCommand("use $(...) rather than backticks in a read-only command")
    _verify_readonly(_tokens(template, commands))
    # Command substitutions inside double quotes are one word to the tokenizer: check what they run too.
    for inner in _substitutions(template):
        _verify_readonly_template(inner)


def _substitutions(text: str) -> list[str]:
    """The bodies of ``$( ... )`` in ``text`` (outermost only), skipping single-quoted spans."""
    found, i = [], 0
    while (start := text.find("$(", i)) != -1:
        depth, j, quoted = 1, start + 2, False
        while j < len(text) and depth:
            ch = text[j]
            if ch == "'":
                quoted = not quoted
            elif not quoted and ch == "(":
                depth += 1
            elif not quoted and ch == ")":
                depth -= 1
            j += 1
        found.append(text[start + 2:j - 1])
        i = j
    return found


def _verify_readonly(tokens: list[str]) -> None:
    """Refuse a command declared read-only whose programs or redirections could write."""
    at_command = True
    skip_for = False
    program = ""
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        target = tokens[i + 1] if i + 1 < len(tokens) else ""
        if tok in (">", ">>", ">|", "<>", "&>", "&>>"):
            if target != "/dev/null" and not target.startswith("&"):
                raise UnsafeCommand(f"a read-only command writes to {target!r}")
            i += 2
            continue
        if tok in (">&", "<&", ">>&"):
            # Duplicating a descriptor: only onto the standard ones (or closing one); `>&3` could be a socket.
            if target not in ("1", "2", "-"):
                raise UnsafeCommand(f"a read-only command duplicates a descriptor onto {target!r}")
            i += 2
            continue
        if tok in ("<", "<<"):
            # bash opens /dev/tcp and /dev/udp as sockets, which can be written through: allowed only for the
            # no-op `:` (a connect probe that sends nothing).
            if target.startswith(("/dev/tcp/", "/dev/udp/")) and not (program == ":" or (at_command and
                                                                                         tokens[i + 2:i + 3] == [":"])):
                raise UnsafeCommand(f"a read-only command opens {target!r} for anything but a connect probe")
            i += 2
            continue
        if tok.isdigit() and i + 1 < len(tokens) and tokens[i + 1] in (">", ">>", "<", ">|", "<>", ">&", "<&"):
            i += 1  # the descriptor of the redirection that follows
            continue
        if tok in _CONTROL:
            at_command, skip_for, program = True, False, ""
        elif skip_for:
            if tok == "do":
                at_command, skip_for = True, False
        elif at_command:
            if tok == "for":
                skip_for = True
            elif tok == "case":
                raise UnsafeCommand("case statements are not allowed in read-only commands")
            elif tok in _KEYWORDS or _ASSIGN.match(tok):
                pass
            else:
                name = tok.rsplit("/", 1)[-1]
                if name in _SHELLS:
                    _verify_nested_shell(name, _until_control(tokens[i + 1:]))
                    at_command = False
                    i += 1
                    continue
                if name not in _READ_PROGRAMS:
                    raise UnsafeCommand(f"{name!r} is not a known read-only program")
                at_command, program = False, name
                _verify_arguments(name, [t for t in _until_control(tokens[i + 1:])])
        i += 1


def _until_control(tokens: list[str]) -> list[str]:
    out: list[str] = []
    for tok in tokens:
        if tok in _CONTROL or tok in (">", ">>", "<", "<<", ">|"):
            if out and out[-1].isdigit() and tok not in _CONTROL:
                out.pop()  # the descriptor of a redirection (2>/dev/null), not an argument
            break
        out.append(tok)
    return out


def _subcommand(program: str, args: list[str]) -> str:
    """The first operand, skipping options (and, for etcdctl/kubectl, the value after a long option)."""
    skip = False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg.startswith("-"):
            skip = program in ("etcdctl", "kubectl") and arg.startswith("--") and "=" not in arg
            continue
        return arg
    return ""


_SHELLS = {"sh", "bash", "dash"}
# Programs that run another program: that program and its arguments must be read-only too.
_WRAPPERS = {"env", "xargs", "timeout", "nice", "nohup"}
_AWK_WRITES = re.compile(r"system\s*\(|\|\s*getline|print[f]?[^;}]*(>|\|)")


def _verify_nested_shell(name: str, args: list[str]) -> None:
    """``sh -c SCRIPT`` is read-only when SCRIPT is (a literal in the template, checked the same way)."""
    if len(args) < 2 or args[0] != "-c":
        raise UnsafeCommand(f"'{name}' may only run an inline script (-c) in a read-only command")
    _verify_readonly_template(args[1].replace("{", "{{").replace("}", "}}"))


def _verify_wrapped(program: str, args: list[str]) -> None:
    rest = list(args)
    while rest and (rest[0].startswith("-") or (program == "env" and "=" in rest[0])):
        rest.pop(0)
    if program == "timeout" and rest:
        rest.pop(0)  # the duration
    if not rest:
        return
    name = rest[0].rsplit("/", 1)[-1]
    if name in _SHELLS:
        _verify_nested_shell(name, rest[1:])
        return
    if name not in _READ_PROGRAMS:
        raise UnsafeCommand(f"'{program} {name}': {name!r} is not a known read-only program")
    _verify_arguments(name, rest[1:])


def _verify_arguments(program: str, args: list[str]) -> None:
    if program in _WRAPPERS:
        _verify_wrapped(program, args)
        return
    if program == "awk" and any(_AWK_WRITES.search(a) for a in args):
        raise UnsafeCommand("an awk program that runs commands or writes files is not read-only")
    if program == "rpm" and any(a.startswith(("-e", "-i", "-U", "-F", "--erase", "--install", "--upgrade",
                                             "--freshen", "--import", "--rebuilddb", "--set")) for a in args):
        raise UnsafeCommand("rpm may only query in a read-only command")
    report = _REPORT_ONLY.get(program)
    if report is not None and not any(a in report for a in args):
        raise UnsafeCommand(f"'{program}' without one of {', '.join(sorted(report))} starts the daemon; "
                            "it cannot be part of a read-only command")
    allowed = _READ_PROGRAMS[program]
    if allowed is not None:
        sub = _subcommand(program, args)
        if sub not in allowed:
            raise UnsafeCommand(f"'{program} {sub}' is not a read-only use of {program}")
    writing = _WRITING_ARGS.get(program, set())
    for arg in args:
        if arg in writing or arg.split("=", 1)[0] in writing:
            raise UnsafeCommand(f"'{program} {arg}' writes; it cannot be part of a read-only command")
    if program in _OPTIONS_ONLY and any(not a.startswith("-") for a in args):
        raise UnsafeCommand(f"'{program}' with an operand changes the host")
    if program == "sysctl" and any("=" in a and not a.startswith("-") for a in args):
        raise UnsafeCommand("'sysctl key=value' writes")
    if program == "firewall-cmd" and any(not (a.startswith(("--state", "--list", "--query", "--get", "--zone"))
                                             or not a.startswith("-")) for a in args):
        raise UnsafeCommand("firewall-cmd may only query in a read-only command")

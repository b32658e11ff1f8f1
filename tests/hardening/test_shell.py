"""The command builder, run by real shells: values arrive verbatim, operators group as Python reads them,
and a command declared read-only cannot write."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubexm.hosts.shell import Cmd, UnsafeCommand, script, seq, sh, shell, user_shell

HOSTILE = [
    "plain", "with space", "semi;colon", "$(touch /tmp/kubexm-pwned)", "`id`", "back\\slash", "it's", 'dq"x',
    "new\nline", "tab\there", "-rf", "--", "../../etc/passwd", "*", "?", "~root", "a|b", "a&&b", "{a,b}",
    "héllo wörld", "\u202eevil", "", " ", "$HOME", "!!", "#comment", "%s%n",
]
SHELLS = ["bash", "dash"]


def run(cmd: Cmd, shell_name: str = "bash", cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell_name, "-c", cmd.text], capture_output=True, text=True, cwd=cwd, check=False)


@pytest.mark.parametrize("shell_name", SHELLS)
@pytest.mark.parametrize("value", HOSTILE)
def test_a_value_reaches_the_program_as_exactly_one_word(value: str, shell_name: str, tmp_path: Path) -> None:
    res = run(sh("printf", "[%s]", value, value), shell_name, tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"[{value}][{value}]"
    assert not list(tmp_path.iterdir()) and not Path("/tmp/kubexm-pwned").exists()


@pytest.mark.parametrize("value", HOSTILE)
def test_template_values_and_lists_are_quoted(value: str, tmp_path: Path) -> None:
    res = run(shell("printf '[%s]' {one} {many} && echo", one=value, many=[value, "x y"]), cwd=tmp_path)
    assert res.stdout == f"[{value}][{value}][x y]\n"
    assert not list(tmp_path.iterdir())


def test_operators_group_as_python_reads_them() -> None:
    t, f = sh("true"), sh("false")
    # Python: (f & t) | cat -> the pipe takes the whole and-list, not only its last command.
    assert run(((f & sh("echo", "no")) | sh("cat")).then(sh("echo", "end"))).stdout == "end\n"
    # t & (f orelse echo): the right operand is grouped, so the or-else belongs to f alone.
    assert run(t & f.orelse(sh("echo", "rescued"))).stdout == "rescued\n"
    assert run(f & f.orelse(sh("echo", "not reached"))).stdout == ""
    assert run(seq(sh("echo", "a"), f, sh("echo", "b"))).stdout == "a\nb\n"
    assert run(sh("echo", "x").negate()).returncode == 1
    assert run(shell("exit 3").subshell().then(sh("echo", "after"))).stdout == "after\n"
    assert run(sh("echo", "hidden").quiet()).stdout == ""


def test_redirection_targets_are_quoted(tmp_path: Path) -> None:
    target = tmp_path / "a file;$(id)"
    assert run(sh("echo", "x").to(target)).returncode == 0
    assert target.read_text() == "x\n"
    run(sh("echo", "y").append_to(target))
    assert target.read_text() == "x\ny\n"


@pytest.mark.parametrize("build", [
    lambda: sh("rm", "-rf", "/x", readonly=True),
    lambda: sh("systemctl", "restart", "etcd", readonly=True),
    lambda: sh("etcdctl", "--endpoints", "https://a:2379", "member", "remove", "1", readonly=True),
    lambda: sh("sed", "-i", "s/a/b/", "/etc/x", readonly=True),
    lambda: sh("hostname", "newname", readonly=True),
    lambda: sh("sysctl", "-w", "a.b=1", readonly=True),
    lambda: sh("kubectl", "--kubeconfig", "/etc/k", "delete", "node", "x", readonly=True),
    lambda: sh("find", "/tmp", "-delete", readonly=True),
    lambda: shell("cat {p} > /etc/passwd", p="/x", readonly=True),
    lambda: shell('echo "$(rm -rf /x)"', readonly=True),
    lambda: shell("echo `id`", readonly=True),
    lambda: shell("{c} && cat /x", c=sh("touch", "/x"), readonly=True),
    lambda: script("ls /; mkdir /x", readonly=True),
    # daemons start (and write) unless told only to report
    lambda: sh("etcd", "--data-dir", "/var/lib/etcd", readonly=True),
    lambda: sh("kubelet", readonly=True),
    lambda: sh("haproxy", "-f", "/etc/haproxy/haproxy.cfg", readonly=True),
    lambda: sh("keepalived", "-f", "/etc/keepalived/keepalived.conf", readonly=True),
    lambda: sh("crio", readonly=True),
    lambda: sh("runc", "run", "x", readonly=True),
    lambda: script("command -v cri-dockerd && cri-dockerd --network-plugin=cni", readonly=True),
])
def test_a_command_declared_read_only_that_could_write_is_refused(build: object) -> None:
    with pytest.raises(UnsafeCommand):
        build()  # type: ignore[operator]


def test_read_only_commands_that_only_read_are_accepted() -> None:
    for cmd in (sh("systemctl", "is-active", "-q", "--", "etcd;x", readonly=True),
                sh("etcdctl", "--endpoints", "https://a:2379", "endpoint", "health", readonly=True),
                shell("cat {p} 2>/dev/null || true", p="/etc/a b", readonly=True),
                sh("kubectl", "--kubeconfig", "/etc/k", "get", "nodes", "-o", "json", readonly=True),
                shell("if {c} >/dev/null 2>&1; then echo 1=0; fi", c=sh("test", "-e", "/x", readonly=True),
                      readonly=True),
                sh("etcd", "--version", readonly=True), sh("haproxy", "-c", "-q", "-f", "/tmp/x.cfg", readonly=True),
                sh("keepalived", "-t", "-f", "/tmp/k.conf", readonly=True), sh("crio", "version", readonly=True),
                sh("runc", "--version", readonly=True), sh("runc", "list", readonly=True)):
        assert cmd.readonly
    # Combining keeps read-only only when every part is.
    assert not (sh("cat", "/x", readonly=True) & sh("touch", "/x")).readonly
    assert (sh("cat", "/x", readonly=True) | sh("wc", "-l", readonly=True)).readonly


def test_templates_must_name_every_value_and_values_must_be_words() -> None:
    with pytest.raises(UnsafeCommand):
        shell("echo {a} {b}", a="x")
    with pytest.raises(UnsafeCommand):
        shell("echo {a}", a="x", b="unused")
    with pytest.raises(UnsafeCommand):
        shell("echo {a!r}", a="x")
    with pytest.raises(UnsafeCommand):
        sh("echo", True)  # type: ignore[arg-type]
    with pytest.raises(UnsafeCommand):
        sh("echo", "nul\x00byte")
    with pytest.raises(UnsafeCommand):
        sh("echo", "x") & "rm -rf /"  # type: ignore[operator]


def test_user_command_lines_stay_shell() -> None:
    assert run(user_shell("echo a | tr a b")).stdout == "b\n"


@pytest.mark.parametrize("build", [
    lambda: sh("env", "X=1", "etcdctl", "member", "remove", "1", readonly=True),
    lambda: shell("crictl ps -q | xargs -r rm -rf", readonly=True),
    lambda: sh("timeout", "3", "/bin/bash", "-c", "rm -rf /x", readonly=True),
    lambda: sh("rpm", "-e", "curl", readonly=True),
    lambda: shell("awk 'BEGIN {{system(\"touch /x\")}}'", readonly=True),
    lambda: shell("awk '{{print > \"/x\"}}' /etc/passwd", readonly=True),
    lambda: sh("bash", "/some/script.sh", readonly=True),
])
def test_wrapped_and_embedded_programs_are_checked_too(build: object) -> None:
    with pytest.raises(UnsafeCommand):
        build()  # type: ignore[operator]


def test_inline_scripts_that_only_read_are_read_only() -> None:
    assert sh("timeout", "3", "bash", "-c", ": </dev/tcp/10.0.0.1/22", readonly=True).readonly
    assert shell("rpm -q --quiet --whatprovides {p}", p="curl", readonly=True).readonly
    assert shell("awk '{{print $2}}' /proc/mounts", readonly=True).readonly


@pytest.mark.parametrize("text", [
    "timeout 3 bash -c '{ printf x >&0; head -n1; } <\"/dev/tcp/127.0.0.1/$1\"' p 6443",  # a socket written to
    "cat </dev/tcp/192.0.2.1/80",  # a socket opened for a program that could talk through it
    "echo x &>/tmp/written",  # bash's both-streams redirection
    "echo x >&3",  # a descriptor that may be a socket or a file opened elsewhere
])
def test_read_only_refuses_sockets_and_descriptor_tricks(text: str) -> None:
    with pytest.raises(UnsafeCommand):
        script(text, readonly=True)


def test_read_only_allows_a_connect_probe_and_standard_descriptors() -> None:
    for text in ("timeout 3 bash -c ': <\"/dev/tcp/$1/$2\"' probe 192.0.2.1 22", "cat /etc/hostname 2>&1",
                 "ls /etc >/dev/null 2>&1"):
        assert script(text, readonly=True).readonly


def test_a_script_ending_in_a_newline_groups_into_valid_shell() -> None:
    import subprocess

    from kubexm.hosts.shell import script, sh

    for cmd in (script("echo a\n") & sh("true"), sh("true") & script("cat <<EOF\nx\nEOF\n"),
                script("echo a\n").group(), script("echo b\n").to("/dev/null")):
        for shell_bin in ("bash", "dash"):
            assert subprocess.run([shell_bin, "-n", "-c", cmd.text]).returncode == 0, (shell_bin, cmd.text)
    out = subprocess.run(["bash", "-c", (sh("true") & script("cat <<EOF\nx\nEOF\n")).text], capture_output=True, text=True)
    assert out.stdout == "x\n"

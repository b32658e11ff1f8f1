"""The OS commands run by real shells (bash, and dash as sudo's ``sh -c`` is on Debian) against stand-in programs.

The stand-ins record the arguments they receive, one per line, so each test sees exactly the words a real
apt-get, dnf, yum, dpkg-query or rpm would get, and whether anything else ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kubexm.hosts.shell import Cmd
from kubexm.steps.os import (
    install_command,
    installed_from,
    installed_query,
    live_sysctl_probe,
    local_install_command,
    parse_live_sysctl,
    same_sysctl_value,
)

SHELLS = [s for s in ("bash", "dash") if shutil.which(s)]


@pytest.fixture()
def sandbox(tmp_path: Path) -> Path:
    (tmp_path / "bin").mkdir()
    return tmp_path


def stand_in(sandbox: Path, program: str, body: str = "exit 0") -> None:
    """A program that appends its name and arguments (one per line) to ``calls`` and then runs ``body``."""
    path = sandbox / "bin" / program
    path.write_text(f'#!/bin/sh\nfor a in "{program}" "$@"; do printf "%s\\n" "$a"; done >> "{sandbox}/calls"\n'
                    f'echo -- >> "{sandbox}/calls"\n{body}\n')
    path.chmod(0o755)


def calls(sandbox: Path) -> list[list[str]]:
    text = (sandbox / "calls").read_text() if (sandbox / "calls").exists() else ""
    return [c.strip("\n").split("\n") for c in text.split("--\n") if c.strip()]


def run(cmd: Cmd, sandbox: Path, shell: str) -> subprocess.CompletedProcess[str]:
    # Only the stand-ins and the shell's built-ins are on PATH: a real package manager cannot be reached.
    env = {"PATH": str(sandbox / "bin"), "HOME": str(sandbox)}
    return subprocess.run([shutil.which(shell) or shell, "-c", cmd.text], cwd=sandbox, env=env, capture_output=True,
                          text=True, check=False)


HOSTILE = ["curl;touch${IFS}x", "$(echo${IFS}pwned>y)", "`echo pwned >z`", "a'b\"c", "socat"]


@pytest.mark.parametrize("shell", SHELLS)
@pytest.mark.parametrize("have_dnf", [True, False], ids=["dnf", "yum"])
def test_rhel_install_uses_dnf_when_present_else_yum_with_each_name_one_word(sandbox: Path, shell: str,
                                                                           have_dnf: bool) -> None:
    if have_dnf:
        stand_in(sandbox, "dnf")
    stand_in(sandbox, "yum")
    res = run(install_command("rhel", HOSTILE), sandbox, shell)
    assert res.returncode == 0, res.stderr
    assert calls(sandbox) == [["dnf" if have_dnf else "yum", "install", "-y", *HOSTILE]]
    assert sorted(p.name for p in sandbox.iterdir()) == ["bin", "calls"]  # nothing else ran


@pytest.mark.parametrize("shell", SHELLS)
def test_rhel_install_fails_when_the_package_manager_fails(sandbox: Path, shell: str) -> None:
    stand_in(sandbox, "dnf", "exit 1")
    stand_in(sandbox, "yum")
    assert run(install_command("rhel", ["socat"]), sandbox, shell).returncode == 1
    assert [c[0] for c in calls(sandbox)] == ["dnf"]  # a failed dnf is not papered over by yum


@pytest.mark.parametrize("shell", SHELLS)
def test_debian_install_and_local_files_pass_each_name_as_one_word(sandbox: Path, shell: str) -> None:
    stand_in(sandbox, "apt-get", 'test "$DEBIAN_FRONTEND" = noninteractive')
    stand_in(sandbox, "dpkg", 'test "$DEBIAN_FRONTEND" = noninteractive')
    stand_in(sandbox, "rpm")
    files = ["/var/lib/kubexm/packages/a b.deb", "/var/lib/kubexm/packages/$(x).deb"]
    for cmd in (install_command("debian", HOSTILE), local_install_command("debian", files),
                local_install_command("rhel", files)):
        assert run(cmd, sandbox, shell).returncode == 0
    assert calls(sandbox) == [["apt-get", "install", "-y", *HOSTILE], ["dpkg", "--force-confold", "-i", *files],
                              ["rpm", "-Uvh", "--replacepkgs", *files]]
    assert sorted(p.name for p in sandbox.iterdir()) == ["bin", "calls"]


@pytest.mark.parametrize("shell", SHELLS)
def test_installed_queries_quote_every_name_and_only_read(sandbox: Path, shell: str) -> None:
    stand_in(sandbox, "dpkg-query")
    stand_in(sandbox, "rpm", 'exit 1')
    for family in ("debian", "rhel"):
        cmd = installed_query(family, HOSTILE)
        assert cmd.readonly  # declared, and verified by the shell module, so it may run while planning
        assert run(cmd, sandbox, shell).returncode == 0
    (dpkg, *rpms) = calls(sandbox)
    assert dpkg == ["dpkg-query", "-W", "--showformat=${Package}\\t${db:Status-Abbrev}\\n", *HOSTILE]
    assert rpms == [["rpm", "-q", "--quiet", "--whatprovides", name] for name in HOSTILE]
    assert sorted(p.name for p in sandbox.iterdir()) == ["bin", "calls"]


@pytest.mark.parametrize("shell", SHELLS)
def test_rpm_exit_status_decides_what_is_installed(sandbox: Path, shell: str) -> None:
    stand_in(sandbox, "rpm", 'for last in "$@"; do :; done; test "$last" = socat || test "$last" = chrony')
    res = run(installed_query("rhel", ["socat", "conntrack", "chrony", "ipset"]), sandbox, shell)
    assert installed_from("rhel", res.stdout) == {"socat", "chrony"}


def test_only_a_fully_installed_dpkg_package_counts() -> None:
    # db:Status-Abbrev as dpkg-query prints it: want, state, error flag (a blank when fine)
    out = ("socat\tii \nconntrack\tiH \nchrony\thi \nipset\tiU \nebtables\tiF \nipvsadm\tiiR\ncurl\trc \n"
           "jq\tun \n")
    assert installed_from("debian", out) == {"socat", "chrony"}


@pytest.mark.skipif(not shutil.which("dpkg-query") or not Path("/var/lib/dpkg/status").exists(),
                    reason="needs a Debian-family machine")
def test_the_debian_query_against_this_machines_dpkg() -> None:
    res = subprocess.run(["sh", "-c", installed_query("debian", ["bash", "kubexm-no-such-package"]).text],
                         capture_output=True, text=True, check=False)
    assert installed_from("debian", res.stdout) == {"bash"}


def test_multi_field_sysctl_reads_back_equal_from_this_kernel() -> None:
    key = "net.ipv4.ip_local_port_range"
    if not os.path.exists("/proc/sys/net/ipv4/ip_local_port_range"):
        pytest.skip("no /proc/sys/net/ipv4 here")
    raw = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
    assert "\t" in raw  # the kernel separates the fields with a tab
    wanted = " ".join(raw.split())  # as a cluster file spells it
    res = subprocess.run(["sh", "-c", live_sysctl_probe([key, "kubexm.no.such.key"]).text],
                         capture_output=True, text=True, check=False)
    live = parse_live_sysctl(res.stdout)
    assert same_sysctl_value(live[key] or "", wanted)
    assert live["kubexm.no.such.key"] is None
    assert not same_sysctl_value(live[key] or "", "1024 65535") or wanted == "1024 65535"


def test_sysctl_comparison_is_by_fields() -> None:
    assert same_sysctl_value("32768\t60999", "32768 60999")
    assert same_sysctl_value("4\t4\t1\t7", " 4 4  1 7 ")
    assert not same_sysctl_value("32768\t60999", "32768 6099")
    assert not same_sysctl_value("1", "")

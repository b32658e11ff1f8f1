"""The relay's shell commands without a network: each parses in bash and dash, values stay single words, and
a seed hop's command run for real keeps a verified copy of its input (no namespaces needed)."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

import pytest
from support.memory import assert_parses

from kubexm.hosts import relay

DIGEST = "ab" * 32


@pytest.mark.parametrize("ip, nxt", [("10.0.0.1", "10.0.0.2"), ("fd00::1", "fd00::2"), ("10.0.0.3", None)])
def test_hop_commands_parse_and_carry_addresses_as_words(ip: str, nxt: str | None) -> None:
    tmp = "/var/lib/kubexm/assets/.kubexm-relay-0123/da ta'$(x)"
    for cmd in (relay._receive_script(tmp, DIGEST, ip, nxt, relay.PORT, 600), relay._seed_script(tmp, DIGEST, nxt, 1)):
        assert_parses(cmd.text)
        assert "'/var/lib/kubexm/assets/.kubexm-relay-0123/da ta'\"'\"'$(x)'" in cmd.text
    receive = relay._receive_script(tmp, DIGEST, ip, nxt, relay.PORT, 600).text
    listen = f"TCP6-LISTEN:{relay.PORT},bind=[{ip}]" if ":" in ip else f"TCP-LISTEN:{relay.PORT},bind={ip}"
    assert listen in receive
    if nxt:
        assert (f"TCP:[{nxt}]:{relay.PORT}," if ":" in nxt else f"TCP:{nxt}:{relay.PORT},") in receive


def test_only_addresses_socat_reads_as_one_host_take_part() -> None:
    for ok in ("10.0.0.1", "fd00::1", "node-1.internal", "::ffff:10.0.0.1"):
        assert relay._SOCAT_HOST.fullmatch(ok)
    for bad in ("10.0.0.1,fork", "a b", "x!y", "10.0.0.1\n", "h:1,reuseaddr"):
        assert not relay._SOCAT_HOST.fullmatch(bad)


def test_the_listener_pattern_matches_only_its_own_listener() -> None:
    import re

    pattern = relay._listener_pattern("10.0.0.1", relay.PORT)
    assert re.search(pattern, f"socat -u TCP-LISTEN:{relay.PORT},bind=10.0.0.1,reuseaddr STDOUT")
    assert not re.search(pattern, f"socat -u TCP-LISTEN:{relay.PORT},bind=10x0x0x1,reuseaddr STDOUT")
    v6 = relay._listener_pattern("fd00::1", relay.PORT)
    assert re.search(v6, f"socat -u TCP6-LISTEN:{relay.PORT},bind=[fd00::1],reuseaddr STDOUT")


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_a_seed_keeps_a_verified_copy(tmp_path: Path, shell: str) -> None:
    data = b"release bytes\n" * 1000
    copy = tmp_path / "stage dir" / "da'ta"
    copy.parent.mkdir()
    good = relay._seed_script(str(copy), hashlib.sha256(data).hexdigest(), None, relay.PORT)
    res = subprocess.run([shell, "-c", good.text], input=data, capture_output=True, check=False)
    assert res.returncode == 0, res.stderr
    assert copy.read_bytes() == data and copy.stat().st_mode & 0o077 == 0  # umask 077: private until placed
    bad = relay._seed_script(str(copy), DIGEST, None, relay.PORT)
    assert subprocess.run([shell, "-c", bad.text], input=data, capture_output=True, check=False).returncode != 0

"""A real apt download in a private state: the closure a minimal Debian 12 node needs, checked against the
Packages index, without touching this machine's own apt state."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from kubexm.errors import KubexmError
from kubexm.offline.debs import collect

pytestmark = pytest.mark.skipif(subprocess.run(["which", "apt-get"], capture_output=True).returncode != 0,
                                reason="needs apt")


def test_socat_with_its_dependencies(tmp_path: Path) -> None:
    lists = Path("/var/lib/apt/lists")
    before = {p.name: p.stat().st_mtime for p in lists.iterdir()} if lists.is_dir() else {}
    debs = collect(tmp_path, "amd64", "debian12", {"base": ["socat"]})["base"]
    names = {d.package for d in debs}
    assert {"socat", "libwrap0"} <= names  # libwrap0: socat's dependency a minimal node lacks
    assert "libc6" not in names  # priority required: on every Debian system already
    for deb in debs:
        fields = subprocess.run(["dpkg-deb", "-f", str(deb.path), "Package"], capture_output=True, text=True).stdout
        assert fields.strip() == deb.package
    after = {p.name: p.stat().st_mtime for p in lists.iterdir()} if lists.is_dir() else {}
    assert before == after  # the machine's apt lists were not touched

    with pytest.raises(KubexmError, match="not-a-package-kubexm"):
        collect(tmp_path, "amd64", "debian12", {"base": ["not-a-package-kubexm"]})
    with pytest.raises(KubexmError, match="--os rhel9"):
        collect(tmp_path, "amd64", "rhel9", {"base": ["socat"]})

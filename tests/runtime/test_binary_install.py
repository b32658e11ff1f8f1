"""InstallBinaries' unpack-and-install command, run for real in a local shell (bash and dash): binaries land
with mode 0755, the private staging directory is never a fixed /tmp name and is gone afterwards, whatever
happened."""

from __future__ import annotations

import subprocess
import tarfile
from pathlib import Path

import pytest

from kubexm.steps import binaries


@pytest.fixture
def layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, Path]:
    assets, bindir = tmp_path / "assets dir", tmp_path / "bin"
    assets.mkdir()
    bindir.mkdir()
    monkeypatch.setattr(binaries, "ASSET_DIR", str(assets))
    monkeypatch.setattr(binaries, "BIN", str(bindir))
    archive = assets / "tool 'v1'.tar.gz"
    src = tmp_path / "src"
    src.mkdir()
    for name in ("tool-a", "tool-b"):
        (src / name).write_text(f"#!/bin/sh\necho {name}\n")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(src / "tool-a", arcname="release/bin/tool-a")
        tar.add(src / "tool-b", arcname="release/tool-b")
    return assets, bindir, archive


def run(command: str, shell: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shell, "-c", command], capture_output=True, text=True, check=False)


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_binaries_are_installed_from_a_private_directory_that_goes_away(
        layout: tuple[Path, Path, Path], shell: str) -> None:
    assets, bindir, archive = layout
    cmd = binaries._extract_and_install(str(archive), "tool", ("tool-a", "tool-b"))
    assert f"mkdir -m 0700 '{assets}/.extract-tool-" in cmd.text  # inside root's asset directory
    res = run(cmd.text, shell)
    assert res.returncode == 0, res.stderr
    for name in ("tool-a", "tool-b"):
        assert (bindir / name).stat().st_mode & 0o777 == 0o755
        assert (bindir / name).read_text().endswith(f"echo {name}\n")
    assert not list(assets.glob(".extract-*"))


@pytest.mark.parametrize("shell", ["bash", "dash"])
def test_a_binary_missing_from_the_archive_fails_and_still_cleans_up(layout: tuple[Path, Path, Path], shell: str) -> None:
    assets, _, archive = layout
    res = run(binaries._extract_and_install(str(archive), "tool", ("tool-a", "nope")).text, shell)
    assert res.returncode != 0 and "nope: missing from the archive" in res.stderr
    assert not list(assets.glob(".extract-*"))


def test_the_staging_name_cannot_be_guessed_or_taken_over(layout: tuple[Path, Path, Path]) -> None:
    assets, _, archive = layout
    first = binaries._extract_and_install(str(archive), "tool", ("tool-a",)).text
    second = binaries._extract_and_install(str(archive), "tool", ("tool-a",)).text
    assert first != second  # a fresh random name per run
    # Something already at that name (a planted directory or link) makes mkdir, and so the install, fail.
    staging = first.split("mkdir -m 0700 ", 1)[1].split(" && ", 1)[0].strip("'")
    Path(staging).symlink_to(assets)
    res = run(first, "sh")
    assert res.returncode != 0 and Path(staging).is_symlink()

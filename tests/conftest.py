from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # makes `support` importable


@pytest.fixture(autouse=True)
def kubexm_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own $KUBEXM_HOME so state, keys and known hosts never leak between tests."""
    home = tmp_path / "kubexm-home"
    monkeypatch.setenv("KUBEXM_HOME", str(home))
    return home

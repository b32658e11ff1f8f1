"""The parse cache: a file read before is not parsed again, and errors still point at lines."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_malformed import GOOD

from kubexm.errors import SpecError
from kubexm.paths import home
from kubexm.spec import loader
from kubexm.spec.loader import parse_cluster


def entries() -> list[Path]:
    return sorted((home() / "cache" / "spec").glob("*.json"))


def no_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(text: str, source: str) -> object:
        raise AssertionError("parsed again")

    monkeypatch.setattr(loader, "_parse_yaml", refuse)


def test_a_second_load_of_the_same_text_is_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    first = parse_cluster(GOOD, "c.yaml")
    [entry] = entries()
    assert stat.S_IMODE(os.stat(entry).st_mode) == 0o600  # it may hold the file's passwords
    no_parser(monkeypatch)
    again = parse_cluster(GOOD, "c.yaml", overrides=["spec.kubernetes.version=v1.30.1"])
    assert again.model_dump(exclude={"spec": {"kubernetes": {"version"}}}) == \
        first.model_dump(exclude={"spec": {"kubernetes": {"version"}}})
    assert again.spec.kubernetes.version == "v1.30.1"


def test_errors_from_a_cached_text_still_name_the_line(monkeypatch: pytest.MonkeyPatch) -> None:
    bad = ["spec.hosts[1].port=abc"]
    with pytest.raises(SpecError) as uncached:
        parse_cluster(GOOD, "c.yaml", overrides=bad)  # nothing cached yet: ruamel's data
    assert entries()  # the parse was kept although validation failed
    with pytest.raises(SpecError) as cached:
        parse_cluster(GOOD, "c.yaml", overrides=bad)
    assert str(cached.value) == str(uncached.value)
    assert "c.yaml:10:" in str(cached.value)  # hosts[1] starts there (it has no port line)


def test_a_corrupt_entry_is_a_miss(monkeypatch: pytest.MonkeyPatch) -> None:
    parse_cluster(GOOD, "c.yaml")
    [entry] = entries()
    with open(entry, "w") as fh:
        fh.write("{not json")
    assert parse_cluster(GOOD, "c.yaml").name == "prod"
    no_parser(monkeypatch)  # and the entry was written anew
    assert parse_cluster(GOOD, "c.yaml").name == "prod"


def test_a_changed_text_is_parsed_and_validated_anew() -> None:
    parse_cluster(GOOD, "c.yaml")
    with pytest.raises(SpecError) as err:
        parse_cluster(GOOD.replace("v1.31.2", "1.31"), "c.yaml")
    assert "c.yaml:" in str(err.value) and "version" in str(err.value)
    assert len(entries()) == 2

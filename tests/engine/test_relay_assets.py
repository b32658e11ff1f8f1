"""Which release files the relay step sends where: only what the selected install steps need, only to
nodes that neither have it installed nor hold it, and only when more nodes than the relay's seeds need it."""

from __future__ import annotations

import asyncio
import hashlib
import re
import shlex
from pathlib import Path

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.assets import LocalSource
from kubexm.engine import EventBus, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.pipelines.cluster import CREATE_CLUSTER
from kubexm.spec.loader import parse_cluster
from kubexm.steps.binaries import ASSET_DIR, RelayAssets

NODES = ["n1", "n2", "n3", "n4"]


def cluster_text(source: Path, relay: bool = True) -> str:
    hosts = "".join(f"    - {{name: {n}, address: 10.0.0.{i}}}\n" for i, n in enumerate(NODES, 1))
    return (f"apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata: {{name: relay}}\nspec:\n  hosts:\n{hosts}"
            "  roleGroups: {etcd: [n1, n2, n3], control-plane: [n1], worker: [n2, n3, n4]}\n"
            f"  etcd: {{version: v3.5.21}}\n  assets: {{localSource: {source}, relay: {str(relay).lower()}}}\n")


def probe(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    """The relay step's one command per node: install markers, then the sha256 of the release files."""
    command = m.string
    markers = re.findall(r"echo (\S+)=\"\$\(head -c 64 (\S+) 2>/dev/null\)\"", command)
    out = [f"{shlex.split(c)[0]}={h.files.get(shlex.split(path)[0], b'').decode()[:64]}" for c, path in markers]
    out.append("#sha256")
    for path in shlex.split(command.split("openssl dgst -sha256 -r ", 1)[1].split(";", 1)[0]):
        if path in h.files:
            out.append(f"{hashlib.sha256(h.files[path]).hexdigest()} *{path}")
    return 0, "\n".join(out) + "\n", ""


@pytest.fixture
def source(tmp_path: Path) -> tuple[Path, str, str]:
    archive = tmp_path / "etcd-v3.5.21-linux-amd64.tar.gz"
    archive.write_bytes(b"pretend etcd release\n" * 1000)
    asset = LocalSource(tmp_path / "src").add("etcd", "v3.5.21", "amd64", archive)
    return tmp_path / "src", asset.file, asset.sha256


def needed(fleet: MemoryFleet, text: str, **options: object) -> list[tuple[str, list[str]]]:
    cluster = parse_cluster(text)
    opts = RunOptions(**options)  # type: ignore[arg-type]
    run = RunContext(cluster, opts, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(cluster, opts.connect, factory=fleet.factory))
    run.plan = [t for _, t in CREATE_CLUSTER.plan(cluster, opts.tags, opts.skip_tags)]  # as the executor sets it
    step = RelayAssets()

    async def go() -> list[tuple[str, list[str]]]:
        try:
            return [(a.file, sorted(names)) for a, _, names in await step._needed(run)]
        finally:
            await run.close()

    return asyncio.run(go())


def fleet_for() -> MemoryFleet:
    fleet = MemoryFleet(NODES)
    for n in NODES:
        fleet[n].on(r"^echo \S+=\"\$\(head -c 64 ", probe)
    return fleet


def test_every_etcd_member_lacking_the_file_gets_it_by_relay(source: tuple[Path, str, str]) -> None:
    root, file, _ = source
    # Kubernetes' own files are not in this local source: the install steps report that, the relay skips them.
    assert needed(fleet_for(), cluster_text(root), tags={"etcd"}) == [(file, ["n1", "n2", "n3"])]


def test_nodes_with_it_installed_or_in_place_are_left_out_and_two_are_not_worth_a_relay(
        source: tuple[Path, str, str]) -> None:
    root, file, sha = source
    fleet = fleet_for()
    fleet["n1"].files[f"{ASSET_DIR}/etcd.installed"] = f"{sha}\n".encode()
    assert needed(fleet, cluster_text(root), tags={"etcd"}) == []  # n2, n3: the seeds alone
    fleet["n1"].files[f"{ASSET_DIR}/etcd.installed"] = b"0" * 64 + b"\n"  # an older version installed
    assert needed(fleet, cluster_text(root), tags={"etcd"}) == [(file, ["n1", "n2", "n3"])]
    fleet["n2"].files[f"{ASSET_DIR}/{file}"] = (root / file).read_bytes()  # already holds this one
    assert needed(fleet, cluster_text(root), tags={"etcd"}) == []


def test_only_the_selected_tasks_and_nodes_count(source: tuple[Path, str, str]) -> None:
    root, _, _ = source
    assert needed(fleet_for(), cluster_text(root), tags={"etcd"}, nodes=["n1", "n2"]) == []
    assert needed(fleet_for(), cluster_text(root), tags={"etcd"}, skip_tags={"etcd"}) == []


def test_the_relay_task_is_in_the_plan_only_when_asked_for(source: tuple[Path, str, str]) -> None:
    root, _, _ = source
    on = [t.name for _, t in CREATE_CLUSTER.plan(parse_cluster(cluster_text(root)), {"etcd"})]
    off = [t.name for _, t in CREATE_CLUSTER.plan(parse_cluster(cluster_text(root, relay=False)), {"etcd"})]
    assert "DistributeAssets" in on and on.index("DistributeAssets") < on.index("InstallEtcdCluster")
    assert "DistributeAssets" not in off


def test_an_unreachable_node_is_left_out_instead_of_failing_the_step(source: tuple[Path, str, str]) -> None:
    root, file, _ = source
    fleet = fleet_for()
    fleet["n3"].down = True  # its own install steps report it; the relay just does not count on it
    assert needed(fleet, cluster_text(root), tags={"etcd"}) == []
    fleet["n3"].down = False
    assert needed(fleet, cluster_text(root), tags={"etcd"}) == [(file, ["n1", "n2", "n3"])]

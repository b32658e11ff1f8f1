"""Role and host lookups at fleet size: per-host work asks `roles_of` and `host` for every host, so each answer
must come from an index, not a scan of every member list (which made per-node work quadratic, and `health` on
1,000 nodes cubic). Counted, not timed: the number of member-list reads must not grow with the fleet."""

from __future__ import annotations

import json

import pytest

from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster


def fleet(n: int) -> Cluster:
    hosts = [{"name": f"n{i}", "address": f"10.1.{i // 250}.{i % 250 + 1}"} for i in range(n)]
    doc = {"apiVersion": "kubexm.io/v1alpha1", "kind": "Cluster", "metadata": {"name": "big"},
           "spec": {"hosts": hosts, "controlPlaneEndpoint": {"loadBalancer": "internal"}, "roleGroups": {"etcd": ["n0", "n1", "n2"], "control-plane": ["n0", "n1", "n2"],
                                                   "worker": [h["name"] for h in hosts[3:]]}}}
    return parse_cluster(json.dumps(doc))


class CountingList(list[str]):
    """A member list that counts how often it is walked (a membership test or a copy walks it)."""

    walks = 0

    def __iter__(self):  # type: ignore[no-untyped-def]
        CountingList.walks += 1
        return super().__iter__()

    def __contains__(self, item: object) -> bool:
        CountingList.walks += 1
        return super().__contains__(item)


def test_roles_of_every_host_walks_each_member_list_once() -> None:
    c = fleet(600)
    groups = c.spec.role_groups
    for role in ("etcd", "control_plane", "worker", "loadbalancer", "registry"):
        setattr(groups, role, CountingList(getattr(groups, role)))
    CountingList.walks = 0
    roles = [c.roles_of(h.name) for h in c.spec.hosts]
    assert roles[0] == ["etcd", "control-plane"] and roles[599] == ["worker"]
    # One walk per list to build the index; a scan per lookup would be 600 x 5 walks of up to 600 names.
    assert CountingList.walks <= 5, CountingList.walks


def test_the_index_follows_changes_to_the_lists() -> None:
    c = fleet(10)
    assert c.roles_of("n9") == ["worker"] and c.roles_of("x") == []
    c.spec.role_groups.loadbalancer.append("n9")
    assert c.roles_of("n9") == ["worker", "loadbalancer"]
    c.spec.role_groups.worker = ["n3"]
    assert c.roles_of("n9") == ["loadbalancer"] and c.roles_of("n3") == ["worker"]


def test_host_lookup_follows_the_list_and_refuses_unknown_names() -> None:
    c = fleet(10)
    assert c.host("n7").address == "10.1.0.8"
    c.spec.hosts.append(c.spec.hosts[0].model_copy(update={"name": "extra"}))
    assert c.host("extra").address == "10.1.0.1"
    c.spec.hosts[1].name = "renamed"
    assert c.host("renamed").address == "10.1.0.2"
    with pytest.raises(KeyError):
        c.host("n1")
    with pytest.raises(KeyError):
        c.host("nope")

"""spec.hosts[].labels and taints reach the Node objects: at join (kubeadm's nodeRegistration) and by
`config sync` on a running cluster, where only what the spec names is changed."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
from typing import Any

from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.kube.kubeadm import node_registration
from kubexm.pipelines.config_sync import NodeLabels, NodeTaints
from kubexm.spec.loader import parse_cluster

SPEC = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: lt}
spec:
  hosts:
    - {name: cp1, address: 10.0.0.1}
    - name: w1
      address: 10.0.0.2
      labels: {example.com/pool: edge}
      taints: ["dedicated=edge:NoSchedule", "example.com/gpu:NoExecute"]
    - {name: w2, address: 10.0.0.3}
  roleGroups: {etcd: [cp1], control-plane: [cp1], worker: [w1, w2]}
"""


class FakeApi:
    """Node objects as `kubectl get nodes -o json` shows them; label and taint commands change them."""

    def __init__(self) -> None:
        cp_taint = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}
        self.nodes: dict[str, dict[str, Any]] = {
            "cp1": {"labels": {}, "taints": [cp_taint]},
            "w1": {"labels": {"kubernetes.io/hostname": "w1"}, "taints": [{"key": "dedicated", "value": "old",
                                                                          "effect": "NoSchedule"},
                                                                         {"key": "other", "effect": "NoSchedule"}]},
            "w2": {"labels": {}, "taints": []},
        }

    def get(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        items = [{"metadata": {"name": n, "labels": v["labels"]}, "spec": {"taints": v["taints"]}}
                 for n, v in self.nodes.items()]
        return 0, json.dumps({"items": items}), ""

    def change(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        words = shlex.split(m.string)
        verb = words[words.index("--overwrite") - 2]
        node, args = words[words.index("--") + 1], words[words.index("--") + 2:]
        for arg in args:
            if verb == "label":
                key, _, value = arg.partition("=")
                self.nodes[node]["labels"][key] = value
            else:
                head, _, effect = arg.rpartition(":")
                key, sep, value = head.partition("=")
                taints = [t for t in self.nodes[node]["taints"] if t["key"] != key]
                self.nodes[node]["taints"] = [*taints, {"key": key, **({"value": value} if sep else {}), "effect": effect}]
        return 0, "", ""


def run_step(step: Any, api: FakeApi) -> tuple[MemoryFleet, RunContext]:
    cluster = parse_cluster(SPEC)
    fleet = MemoryFleet(["cp1", "w1", "w2"])
    fleet["cp1"].on(r"kubectl .* get nodes -o json", api.get)
    fleet["cp1"].on(r"kubectl .* (label|taint) node --overwrite", api.change)
    run = RunContext(cluster, RunOptions(), pool=ConnectionPool(cluster, RunOptions().connect, factory=fleet.factory))
    host = run.host("cp1")

    async def go() -> None:
        if not await step.check(host):
            await step.run(host)
        assert await step.check(host)  # idempotent: done after one run

    asyncio.run(go())
    return fleet, run


def test_taints_the_spec_names_are_set_and_others_left_alone() -> None:
    api = FakeApi()
    fleet, _ = run_step(NodeTaints(), api)
    w1 = {(t["key"], t.get("value"), t["effect"]) for t in api.nodes["w1"]["taints"]}
    assert w1 == {("dedicated", "edge", "NoSchedule"), ("example.com/gpu", None, "NoExecute"), ("other", None, "NoSchedule")}
    assert api.nodes["cp1"]["taints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]
    assert api.nodes["w2"]["taints"] == []
    changes = [c for c in fleet["cp1"].commands if " taint node " in c]
    assert len(changes) == 1 and "w1" in changes[0]


def test_labels_the_spec_names_are_set() -> None:
    api = FakeApi()
    run_step(NodeLabels(), api)
    assert api.nodes["w1"]["labels"]["example.com/pool"] == "edge"
    assert api.nodes["w1"]["labels"]["kubernetes.io/hostname"] == "w1"  # not the spec's: kept
    assert api.nodes["w2"]["labels"] == {"node-role.kubernetes.io/worker": ""}


def test_kubeadm_sets_the_spec_taints_when_a_node_joins() -> None:
    cluster = parse_cluster(SPEC)
    reg = node_registration(cluster, cluster.host("w1"), control_plane=False)
    assert reg["taints"] == [{"key": "dedicated", "value": "edge", "effect": "NoSchedule"},
                             {"key": "example.com/gpu", "effect": "NoExecute"}]
    cp = node_registration(cluster, cluster.host("cp1"), control_plane=True)
    assert cp["taints"] == [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]

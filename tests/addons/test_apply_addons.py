"""Addons applied from the first control plane: kubectl for manifests, helm for charts (local .tgz when
air-gapped), once; user addons from files; uninstall."""

from __future__ import annotations

import asyncio
import re
import tarfile
from pathlib import Path
from typing import Any

from support.memory import MemoryFleet

from kubexm.assets import LocalSource
from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.addons import AddonsModule
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.addons import ADDON_DIR, RemoveAddon

NAMES = ["master1", "worker1", "worker2"]


def run(c: Cluster, fleet: MemoryFleet, tasks: list[Any]) -> Any:
    options = RunOptions()
    ctx = RunContext(c, options, bus=EventBus([lambda e: None]),
                     pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    return asyncio.run(Executor(ctx).run_tasks(tasks))


def fake_cluster(fleet: MemoryFleet) -> None:
    host = fleet["master1"]
    host.on(r"get --raw=/readyz", lambda h, m, s: (0, "ok", ""))
    host.on(r"get pods -n kube-system -l tier=control-plane -o json", lambda h, m, s: (0, '{"items": [' + ",".join(
        f'{{"metadata": {{"labels": {{"component": "{c}"}}}}, "spec": {{"nodeName": "master1"}}, '
        f'"status": {{"conditions": [{{"type": "Ready", "status": "True"}}]}}}}'
        for c in ("kube-apiserver", "kube-controller-manager", "kube-scheduler")) + "]}", ""))
    host.on(r"get nodes -o json", lambda h, m, s: (0, '{"items": [' + ",".join(
        f'{{"metadata": {{"name": "{n}"}}, "status": {{"conditions": [{{"type": "Ready", "status": "True"}}]}}}}'
        for n in NAMES) + "]}", ""))
    host.on(r"^cat -- " + re.escape(ADDON_DIR) + r"/(\S+)\.applied",
            lambda h, m, s: (0, h.files.get(f"{ADDON_DIR}/{m.group(1)}.applied", b"").decode(), ""))


def test_manifests_charts_and_user_addons(tmp_path: Path) -> None:
    chart = tmp_path / "tigera-operator-v3.29.2.tgz"
    with tarfile.open(chart, "w:gz") as tar:
        (tmp_path / "Chart.yaml").write_text("name: tigera-operator\nversion: v3.29.2\n")
        tar.add(tmp_path / "Chart.yaml", arcname="tigera-operator/Chart.yaml")
    helm = tmp_path / "helm-v3.15.4-linux-amd64.tar.gz"
    with tarfile.open(helm, "w:gz") as tar:
        (tmp_path / "helm").write_text("#!/bin/sh\n")
        tar.add(tmp_path / "helm", arcname="linux-amd64/helm")
    source = tmp_path / "source"
    LocalSource(source).add("chart", "v3.29.2", "all", chart, name="tigera-operator")
    LocalSource(source).add("helm", "v3.15.4", "amd64", helm)
    user_manifest = tmp_path / "hello.yaml"
    user_manifest.write_text("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hello}\ndata: {a: b}\n")
    text = sample_config("ad").replace("plugin: calico", "plugin: calico")
    text += (f"  assets: {{localSource: {source}}}\n"
             f"  addons:\n    - {{name: hello, manifests: ['{user_manifest}']}}\n")
    c = parse_cluster(text)
    fleet = MemoryFleet(NAMES)
    fake_cluster(fleet)
    tasks = [(AddonsModule, t) for t in AddonsModule.tasks_for(c, set(), set())]
    assert [t.name for _, t in tasks] == ["InstallCNI", "InstallStorage", "InstallAddons"]
    report = run(c, fleet, tasks)
    assert report.ok, [(f.host, f.step, f.message) for f in report.failures]
    cmds = fleet["master1"].commands
    helm_cmd = [x for x in cmds if x.startswith("helm upgrade --install calico")]
    assert helm_cmd == []  # release and chart come after "--", so a name starting with "-" stays a name
    helm_cmd = [x for x in cmds if x.startswith("helm upgrade --install")]
    assert helm_cmd == ["helm upgrade --install --namespace tigera-operator --create-namespace --kubeconfig "
                        f"/etc/kubernetes/admin.conf -f {ADDON_DIR}/calico-values.yaml --wait --timeout 10m -- "
                        f"calico {ADDON_DIR}/tigera-operator-v3.29.2.tgz"]
    assert f"{ADDON_DIR}/calico-values.yaml" in fleet["master1"].files
    applies = [x for x in cmds if " apply --server-side" in x]
    assert applies == [f"kubectl --kubeconfig /etc/kubernetes/admin.conf apply --server-side --force-conflicts -f "
                       f"{ADDON_DIR}/{n}.yaml" for n in ("local-path", "hello")]
    assert b"name: hello" in fleet["master1"].files[f"{ADDON_DIR}/hello.yaml"]
    assert not any("helm" in x or "apply" in x for n in ("worker1", "worker2") for x in fleet[n].commands)
    # Second run: everything still there and unchanged, nothing applied again.
    before = len(cmds)
    assert run(c, fleet, tasks).ok
    assert not [x for x in fleet["master1"].commands[before:] if "helm upgrade" in x or " apply " in x]


def test_uninstall_addon() -> None:
    c = parse_cluster(sample_config("ad"))
    fleet = MemoryFleet(NAMES)
    fleet["master1"].files[f"{ADDON_DIR}/hello.yaml"] = b"kind: ConfigMap\n"
    fleet["master1"].files[f"{ADDON_DIR}/hello.applied"] = b"x\n"
    fleet["master1"].on(r"^test -e (\S+)", lambda h, m, s: (0 if m.group(1) in h.files else 1, "", ""))
    from kubexm.engine import Module, Task, first, role

    task = Task("RemoveAddon", [RemoveAddon("hello")], hosts=first(role("control-plane")))
    assert run(c, fleet, [(Module("M", [task]), task)]).ok
    assert f"kubectl --kubeconfig /etc/kubernetes/admin.conf delete --ignore-not-found -f {ADDON_DIR}/hello.yaml" \
        in fleet["master1"].commands

"""Storage provisioners: local-path as a manifest kubexm renders; NFS, OpenEBS and Longhorn as charts.

Exactly one StorageClass is the cluster default (spec.storage.defaultClass), or none.
"""

from __future__ import annotations

import json
from typing import Any

from kubexm.addons.images import dump_manifest
from kubexm.addons.release import AddonRelease
from kubexm.spec.models import Cluster

DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"
NFS_CHART = ("https://kubernetes-sigs.github.io/nfs-subdir-external-provisioner/", "nfs-subdir-external-provisioner")
OPENEBS_CHART = ("https://openebs.github.io/openebs", "openebs", "4.1.2")
LONGHORN_CHART = ("https://charts.longhorn.io", "longhorn", "1.7.2")

_SETUP = """#!/bin/sh
set -eu
mkdir -m 0777 -p "$VOL_DIR"
"""
_TEARDOWN = """#!/bin/sh
set -eu
rm -rf "$VOL_DIR"
"""


def _default(cluster: Cluster, name: str) -> bool:
    return cluster.spec.storage.default_class == name


def local_path_manifest(cluster: Cluster) -> str:
    lp = cluster.spec.storage.local_path
    ns = "local-path-storage"
    sa = "local-path-provisioner-service-account"
    helper_pod = ("apiVersion: v1\nkind: Pod\nmetadata:\n  name: helper-pod\nspec:\n  priorityClassName: "
                  "system-node-critical\n  tolerations:\n    - key: node.kubernetes.io/disk-pressure\n"
                  "      operator: Exists\n      effect: NoSchedule\n  containers:\n    - name: helper-pod\n"
                  "      image: docker.io/library/busybox:1.36\n      imagePullPolicy: IfNotPresent\n")
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [lp.path]}]}
    rbac_rules = [
        {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumes"],
         "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
    ]
    sc: dict[str, Any] = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                          "metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path",
                          "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}
    if _default(cluster, "local-path"):
        sc["metadata"]["annotations"] = {DEFAULT_ANNOTATION: "true"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "local-path-provisioner-role", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "local-path-provisioner-role"}, "rules": rbac_rules},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
         "metadata": {"name": "local-path-provisioner-bind", "namespace": ns},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "local-path-provisioner-role"},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "local-path-provisioner-bind"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                     "name": "local-path-provisioner-role"},
         "subjects": [{"kind": "ServiceAccount", "name": sa, "namespace": ns}]},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "local-path-provisioner", "namespace": ns},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "local-path-provisioner"}},
                  "template": {"metadata": {"labels": {"app": "local-path-provisioner"}},
                               "spec": {"serviceAccountName": sa, "containers": [{
                                   "name": "local-path-provisioner",
                                   "image": f"docker.io/rancher/local-path-provisioner:{lp.version}",
                                   "imagePullPolicy": "IfNotPresent",
                                   "command": ["local-path-provisioner", "--debug", "start", "--config",
                                               "/etc/config/config.json"],
                                   "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
                                   "env": [{"name": "POD_NAMESPACE",
                                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                           {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"}]}],
                                   "volumes": [{"name": "config-volume",
                                                "configMap": {"name": "local-path-config"}}]}}}},
        sc,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": ns},
         "data": {"config.json": json.dumps(config, indent=2), "setup": _SETUP, "teardown": _TEARDOWN,
                  "helperPod.yaml": helper_pod}},
    ]
    return dump_manifest(docs, cluster)


def storage_releases(cluster: Cluster) -> list[AddonRelease]:
    st = cluster.spec.storage
    out = []
    if st.local_path.enabled:
        out.append(AddonRelease("local-path", "local-path-storage", manifest=local_path_manifest(cluster),
                                category="storage"))
    if st.nfs is not None:
        repo, chart = NFS_CHART
        values: dict[str, Any] = {
            "nfs": {"server": st.nfs.server, "path": st.nfs.path},
            "storageClass": {"name": "nfs-client", "defaultClass": _default(cluster, "nfs-client"),
                             "reclaimPolicy": "Delete", "archiveOnDelete": True},
        }
        if cluster.spec.registry.private_registry:
            values["image"] = {"repository": f"{cluster.spec.registry.private_registry}/sig-storage/"
                                             "nfs-subdir-external-provisioner"}
        out.append(AddonRelease("nfs-client", "nfs-provisioner", chart=chart, chart_repo=repo,
                                chart_version=st.nfs.version, values=values, category="storage"))
    if st.openebs:
        repo, chart, version = OPENEBS_CHART
        values = {
            "localpv-provisioner": {"hostpathClass": {"enabled": True, "name": "openebs-hostpath",
                                                      "isDefaultClass": _default(cluster, "openebs-hostpath")}},
            # Replicated engines need hugepages and NVMe-oF; the local hostpath engine is what kubexm offers.
            "engines": {"replicated": {"mayastor": {"enabled": False}},
                        "local": {"lvm": {"enabled": False}, "zfs": {"enabled": False}}},
        }
        if cluster.spec.registry.private_registry:
            values["global"] = {"imageRegistry": cluster.spec.registry.private_registry}
        out.append(AddonRelease("openebs", "openebs", chart=chart, chart_repo=repo, chart_version=version,
                                values=values, category="storage"))
    if st.longhorn:
        repo, chart, version = LONGHORN_CHART
        values = {"persistence": {"defaultClass": _default(cluster, "longhorn"), "defaultClassReplicaCount":
                                  min(3, max(1, len(cluster.hosts_with_role("worker"))))},
                  "defaultSettings": {"defaultDataPath": "/var/lib/longhorn/"}}
        if cluster.spec.registry.private_registry:
            values["global"] = {"imageRegistry": cluster.spec.registry.private_registry}
        out.append(AddonRelease("longhorn", "longhorn-system", chart=chart, chart_repo=repo, chart_version=version,
                                values=values, category="storage"))
    return out

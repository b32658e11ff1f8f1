"""Storage provisioners: local-path as a manifest kubexm renders; NFS, OpenEBS and Longhorn as charts.

Exactly one StorageClass is the cluster default (``spec.storage.defaultClass``), or none with ``none``: the
local-path class carries the is-default-class annotation, the charts get their own value for it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from kubexm.addons.images import dump_manifest, private_path, rewrite_image
from kubexm.addons.release import AddonRelease
from kubexm.spec.models import Cluster

DEFAULT_ANNOTATION = "storageclass.kubernetes.io/is-default-class"

LOCAL_PATH_NAMESPACE = "local-path-storage"
LOCAL_PATH_IMAGE = "docker.io/rancher/local-path-provisioner"
HELPER_POD_IMAGE = "docker.io/library/busybox:1.36"  # pinned: a bare "busybox" floats and is not mirrorable

# (repository URL, chart, version); NFS takes its version from spec.storage.nfs.version.
NFS_CHART = ("https://kubernetes-sigs.github.io/nfs-subdir-external-provisioner/", "nfs-subdir-external-provisioner")
OPENEBS_CHART = ("https://openebs.github.io/openebs", "openebs", "4.1.2")
LONGHORN_CHART = ("https://charts.longhorn.io", "longhorn", "1.7.2")

NFS_IMAGE = "registry.k8s.io/sig-storage/nfs-subdir-external-provisioner"
OPENEBS_IMAGES = {  # the images of openebs with only the hostpath engine (repositories on docker.io)
    "localpv": "openebs/provisioner-localpv",
    "helper": "openebs/linux-utils",
    "pre-upgrade-hook": "bitnami/kubectl",
}
# Longhorn chart keys (image.<group>.<name>.repository) -> repository on docker.io.
LONGHORN_IMAGES = {
    ("longhorn", "engine"): "longhornio/longhorn-engine",
    ("longhorn", "manager"): "longhornio/longhorn-manager",
    ("longhorn", "ui"): "longhornio/longhorn-ui",
    ("longhorn", "instanceManager"): "longhornio/longhorn-instance-manager",
    ("longhorn", "shareManager"): "longhornio/longhorn-share-manager",
    ("longhorn", "backingImageManager"): "longhornio/backing-image-manager",
    ("longhorn", "supportBundleKit"): "longhornio/support-bundle-kit",
    ("csi", "attacher"): "longhornio/csi-attacher",
    ("csi", "provisioner"): "longhornio/csi-provisioner",
    ("csi", "nodeDriverRegistrar"): "longhornio/csi-node-driver-registrar",
    ("csi", "resizer"): "longhornio/csi-resizer",
    ("csi", "snapshotter"): "longhornio/csi-snapshotter",
    ("csi", "livenessProbe"): "longhornio/livenessprobe",
}

# StorageClass name -> whether its provisioner is enabled.
_PROVIDERS: dict[str, Callable[[Cluster], bool]] = {
    "local-path": lambda c: c.spec.storage.local_path.enabled,
    "nfs-client": lambda c: c.spec.storage.nfs is not None,
    "openebs-hostpath": lambda c: c.spec.storage.openebs,
    "longhorn": lambda c: c.spec.storage.longhorn,
}

_SETUP = """#!/bin/sh
set -eu
mkdir -m 0777 -p "$VOL_DIR"
"""
_TEARDOWN = """#!/bin/sh
set -eu
rm -rf "$VOL_DIR"
"""


def is_default(cluster: Cluster, storage_class: str) -> bool:
    return cluster.spec.storage.default_class == storage_class


def default_class_problem(cluster: Cluster) -> str | None:
    """A defaultClass whose provisioner is not enabled leaves the cluster without a default; say so."""
    name = cluster.spec.storage.default_class
    if name == "none" or _PROVIDERS[name](cluster):
        return None
    return (f"spec.storage.defaultClass: '{name}' is not installed by this cluster file; enable its "
            "provisioner or choose another class (or none)")


def _helper_pod(cluster: Cluster) -> str:
    """The pod template local-path runs on a node to create or delete a volume directory."""
    from kubexm.kube.kubeadm import dump_go_yaml

    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "helper-pod"},
           "spec": {"priorityClassName": "system-node-critical",
                    "tolerations": [{"key": "node.kubernetes.io/disk-pressure", "operator": "Exists",
                                     "effect": "NoSchedule"}],
                    "containers": [{"name": "helper-pod", "image": rewrite_image(HELPER_POD_IMAGE, cluster),
                                    "imagePullPolicy": "IfNotPresent"}]}}
    return dump_go_yaml([pod])


def local_path_manifest(cluster: Cluster) -> str:
    """Rancher's local-path-provisioner with its StorageClass and config (volumes under local_path.path)."""
    lp = cluster.spec.storage.local_path
    ns = LOCAL_PATH_NAMESPACE
    sa = "local-path-provisioner-service-account"
    config = {"nodePathMap": [{"node": "DEFAULT_PATH_FOR_NON_LISTED_NODES", "paths": [lp.path]}]}
    cluster_rules = [
        {"apiGroups": [""], "resources": ["nodes", "persistentvolumeclaims", "configmaps", "pods", "pods/log"],
         "verbs": ["get", "list", "watch"]},
        {"apiGroups": [""], "resources": ["persistentvolumes"],
         "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create", "patch"]},
        {"apiGroups": ["storage.k8s.io"], "resources": ["storageclasses"], "verbs": ["get", "list", "watch"]},
    ]
    sc: dict[str, Any] = {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
                          "metadata": {"name": "local-path"}, "provisioner": "rancher.io/local-path",
                          # The volume lives on one node: wait for the pod so the scheduler picks the node.
                          "volumeBindingMode": "WaitForFirstConsumer", "reclaimPolicy": "Delete"}
    if is_default(cluster, "local-path"):
        sc["metadata"]["annotations"] = {DEFAULT_ANNOTATION: "true"}
    docs: list[dict[str, Any]] = [
        {"apiVersion": "v1", "kind": "Namespace",
         # The helper pods mount host paths.
         "metadata": {"name": ns, "labels": {"pod-security.kubernetes.io/enforce": "privileged"}}},
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa, "namespace": ns}},
        # Helper pods are created in the provisioner's own namespace only.
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
         "metadata": {"name": "local-path-provisioner-role", "namespace": ns},
         "rules": [{"apiGroups": [""], "resources": ["pods"],
                    "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
         "metadata": {"name": "local-path-provisioner-role"}, "rules": cluster_rules},
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
                                   "image": f"{LOCAL_PATH_IMAGE}:{lp.version}",
                                   "imagePullPolicy": "IfNotPresent",
                                   "command": ["local-path-provisioner", "--debug", "start", "--config",
                                               "/etc/config/config.json"],
                                   "volumeMounts": [{"name": "config-volume", "mountPath": "/etc/config/"}],
                                   "env": [{"name": "POD_NAMESPACE",
                                            "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                                           # Config changes are picked up without a restart.
                                           {"name": "CONFIG_MOUNT_PATH", "value": "/etc/config/"}]}],
                                   "volumes": [{"name": "config-volume",
                                                "configMap": {"name": "local-path-config"}}]}}}},
        sc,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "local-path-config", "namespace": ns},
         "data": {"config.json": json.dumps(config, indent=2) + "\n", "setup": _SETUP, "teardown": _TEARDOWN,
                  "helperPod.yaml": _helper_pod(cluster)}},
    ]
    return dump_manifest(docs, cluster)


def nfs_values(cluster: Cluster) -> dict[str, Any]:
    """Values of nfs-subdir-external-provisioner: one export, class nfs-client."""
    nfs = cluster.spec.storage.nfs
    if nfs is None:
        raise ValueError("spec.storage.nfs is not set")
    values: dict[str, Any] = {
        "nfs": {"server": nfs.server, "path": nfs.path},
        # archiveOnDelete: a deleted claim's directory is renamed, not erased (NFS data is often shared).
        "storageClass": {"name": "nfs-client", "defaultClass": is_default(cluster, "nfs-client"),
                         "reclaimPolicy": "Delete", "archiveOnDelete": True},
    }
    if cluster.spec.registry.private_registry:
        values["image"] = {"repository": rewrite_image(NFS_IMAGE, cluster)}
    return values


def openebs_values(cluster: Cluster) -> dict[str, Any]:
    """Values of the openebs umbrella chart with only the Local PV hostpath engine (class openebs-hostpath)."""
    values: dict[str, Any] = {
        "localpv-provisioner": {
            "hostpathClass": {"enabled": True, "name": "openebs-hostpath",
                              "isDefaultClass": is_default(cluster, "openebs-hostpath")},
            "analytics": {"enabled": False},  # no pings to Google Analytics from the cluster
        },
        # Mayastor needs hugepages and NVMe-oF, LVM and ZFS need prepared volume groups / pools: kubexm
        # offers the hostpath engine, which works on any node.
        "engines": {"replicated": {"mayastor": {"enabled": False}},
                    "local": {"lvm": {"enabled": False}, "zfs": {"enabled": False}}},
    }
    private = cluster.spec.registry.private_registry
    if private:
        registry = private.rstrip("/")
        lpv = values["localpv-provisioner"]
        # These registry values are concatenated with the repository: the trailing slash is required.
        lpv["localpv"] = {"image": {"registry": registry + "/",
                                    "repository": private_path(OPENEBS_IMAGES["localpv"], cluster)}}
        lpv["helperPod"] = {"image": {"registry": registry + "/",
                                      "repository": private_path(OPENEBS_IMAGES["helper"], cluster)}}
        values["preUpgradeHook"] = {"image": {"registry": registry,
                                              "repo": private_path(OPENEBS_IMAGES["pre-upgrade-hook"], cluster)}}
    return values


def longhorn_values(cluster: Cluster) -> dict[str, Any]:
    """Values of the longhorn chart: replicas over the workers (at most 3), class longhorn."""
    workers = len(cluster.hosts_with_role("worker"))
    values: dict[str, Any] = {
        # Longhorn's chart marks its class default unless told otherwise.
        "persistence": {"defaultClass": is_default(cluster, "longhorn"),
                        "defaultClassReplicaCount": min(3, max(1, workers))},
        "defaultSettings": {"defaultDataPath": "/var/lib/longhorn/"},
    }
    reg = cluster.spec.registry
    if reg.private_registry:
        values["privateRegistry"] = {"registryUrl": reg.private_registry.rstrip("/"), "createSecret": False}
        if reg.namespace_override:  # the chart's repositories carry longhornio/, which the override replaces
            images: dict[str, Any] = {}
            for (group, name), repository in LONGHORN_IMAGES.items():
                images.setdefault(group, {})[name] = {"repository": private_path(repository, cluster)}
            values["image"] = images
    return values


def storage_releases(cluster: Cluster) -> list[AddonRelease]:
    """The enabled provisioners: local-path, NFS, OpenEBS, Longhorn (in that order)."""
    st = cluster.spec.storage
    out: list[AddonRelease] = []
    if st.local_path.enabled:
        out.append(AddonRelease("local-path", LOCAL_PATH_NAMESPACE, manifest=local_path_manifest(cluster),
                                category="storage"))
    if st.nfs is not None:
        repo, chart = NFS_CHART
        out.append(AddonRelease("nfs-client", "nfs-provisioner", chart=chart, chart_repo=repo,
                                chart_version=st.nfs.version, values=nfs_values(cluster), category="storage"))
    if st.openebs:
        repo, chart, version = OPENEBS_CHART
        out.append(AddonRelease("openebs", "openebs", chart=chart, chart_repo=repo, chart_version=version,
                                values=openebs_values(cluster), category="storage"))
    if st.longhorn:
        repo, chart, version = LONGHORN_CHART
        out.append(AddonRelease("longhorn", "longhorn-system", chart=chart, chart_repo=repo, chart_version=version,
                                values=longhorn_values(cluster), category="storage"))
    return out

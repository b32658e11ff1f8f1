"""The Kubernetes side of `certs renew` and `certs rotate-ca`, pinned per node and in order, up to the first command
that needs a Kubernetes binary (kubectl for the API server's /readyz, kubelet for its restart): what this machine's
lab can run for real is the etcd side (tests/lab/test_certs_on_lab.py); this is what the same code sends to a
control plane and a worker before Kubernetes itself is needed."""

from __future__ import annotations

import re
import shlex
from typing import Any

from pki.test_cert_steps import NAMES, failures, run
from pki.test_rotation import setup  # noqa: F401  (the fixture)

PKI_DIR = "/etc/kubernetes/pki"
PENDING = "/var/lib/kubexm/restart-pending/"


def label(command: str) -> str | None:
    """What a command does, in a word and its target (None: an upload's own idempotency check)."""
    words = shlex.split(command.replace("\n", " ")) if not command.startswith("for ") else []
    if "etcdctl" in command and "endpoint health" in command:
        return "etcd-health"
    if "#kubexm-file" in command:
        return "read"
    if command.startswith("sha256sum "):
        return None
    if command.startswith("mkdir -p -- /var/lib/kubexm/restart-pending && touch -- "):
        return "mark " + " ".join(w.removeprefix(PENDING) for w in words[7:])
    if command.startswith(("mv -f -- ", "mv -fT -- ", "ln -sfn -- ")):
        parts = [shlex.split(p) for p in command.split(" && ")]
        return "place " + " ".join(p[4] for p in parts if p[0] == "mv")
    if command.startswith("sed -i -e "):
        return f"set-ca-data {words[-1]}"
    if command.startswith("test -e "):
        return f"exists {words[2]}"
    if command.startswith("command -v ss"):
        return "has-ss"
    if command.startswith("if test -e /etc/kubernetes/") and ".yaml.kubexm-parked" in command:
        return "restart-static-pod " + re.search(r"/etc/kubernetes/([a-z-]+)\.yaml\.kubexm-parked", command).group(1)  # type: ignore[union-attr]
    if "ss -ltn" in command:
        return "wait-listening " + re.search(r":(\d+)\[", command).group(1)  # type: ignore[union-attr]
    if command.startswith("rm -f -- "):
        return "unmark " + " ".join(w.removeprefix(PENDING) for w in words[3:])
    if "kubectl" in command:
        return "KUBECTL"
    if "systemctl" in command and "restart -- kubelet" in command:
        return "KUBELET"
    return f"? {command[:60]}"


def until_kubernetes(nodes: Any, name: str, start: int = 0) -> list[str]:
    """The labels of ``name``'s commands from its ``start``-th command up to the first that needs a Kubernetes
    binary (that one included, as KUBECTL or KUBELET)."""
    out: list[str] = []
    for command in nodes.sent(name)[start:]:
        what = label(command)
        if what is None:
            continue
        out.append(what)
        if what in ("KUBECTL", "KUBELET"):
            break
    return out


CP_TRUST = [
    "read",
    "mark kubexm-static-pod@kube-apiserver kubexm-static-pod@kube-controller-manager "
    "kubexm-static-pod@kube-scheduler kubelet",
    f"place {PKI_DIR}/ca.crt",
    "set-ca-data /etc/kubernetes/admin.conf",
    "set-ca-data /etc/kubernetes/super-admin.conf",
    "set-ca-data /etc/kubernetes/controller-manager.conf",
    "set-ca-data /etc/kubernetes/scheduler.conf",
    "set-ca-data /etc/kubernetes/kubelet.conf",
    "exists /etc/kubernetes/manifests/kube-apiserver.yaml",
    "has-ss",
    "restart-static-pod kube-apiserver",
    "wait-listening 6443",
    "KUBECTL",
]
WORKER_TRUST = [
    "read",
    "mark kubelet",
    f"place {PKI_DIR}/ca.crt",
    "set-ca-data /etc/kubernetes/kubelet.conf",
    "exists /var/lib/kubexm/restart-pending/kubelet",
    "mark kubelet",
    "KUBELET",
]


def test_rotate_ca_kubernetes_sequence_per_node_up_to_the_first_kubernetes_binary(setup: Any) -> None:  # noqa: F811
    c, nodes, _pki = setup
    report, _ = run(c, nodes, "RotateCAPipeline", ca_component="kubernetes")
    assert report.ok, failures(report)
    # The first control plane is where the cluster's health is asked (one etcdctl), then its phase-1 pass.
    assert until_kubernetes(nodes, "master1") == ["etcd-health", *CP_TRUST]
    for name in ("master2", "master3"):
        assert until_kubernetes(nodes, name) == CP_TRUST, name
    for name in ("worker1", "worker2"):
        assert until_kubernetes(nodes, name) == WORKER_TRUST, name
    # Phase 2 on a control plane: the CA key the controller-manager signs with and every leaf and kubeconfig
    # move in one command, kubeconfigs with an embedded identity are replaced whole, kubelet.conf (which names
    # the rotated kubelet-client-current.pem) gets the bundle in place.
    sent = nodes.sent("master2")
    second = [i for i, cmd in enumerate(sent) if label(cmd) == "read"][1]
    assert until_kubernetes(nodes, "master2", second) == [
        "read",
        "mark kubexm-static-pod@kube-apiserver kubexm-static-pod@kube-controller-manager "
        "kubexm-static-pod@kube-scheduler kubelet",
        f"place {PKI_DIR}/ca.crt /etc/kubernetes/admin.conf /etc/kubernetes/super-admin.conf "
        "/etc/kubernetes/controller-manager.conf /etc/kubernetes/scheduler.conf "
        f"{PKI_DIR}/apiserver.crt {PKI_DIR}/apiserver.key {PKI_DIR}/apiserver-kubelet-client.crt "
        f"{PKI_DIR}/apiserver-kubelet-client.key /var/lib/kubelet/pki/kubelet-client-current.pem "
        "/var/lib/kubelet/pki/kubelet.crt /var/lib/kubelet/pki/kubelet.key "
        f"{PKI_DIR}/ca.key",
        "set-ca-data /etc/kubernetes/kubelet.conf",
        "exists /etc/kubernetes/manifests/kube-apiserver.yaml",
        "has-ss",
        "restart-static-pod kube-apiserver",
        "wait-listening 6443",
        "KUBECTL",
    ]
    # Nodes one at a time: each control plane's phase-1 pass ends (/readyz, then every restart) before the next
    # control plane's begins, and the workers follow the last control plane.
    order = [h for h, cmd in nodes.log if label(cmd) == "read"]
    assert order[:len(NAMES)] == ["master1", "master2", "master3", "worker1", "worker2"]


def test_renew_control_plane_sequence_up_to_the_first_kubernetes_binary(setup: Any) -> None:  # noqa: F811
    c, nodes, _pki = setup
    report, _ = run(c, nodes, "RenewCertsPipeline", renew=["apiserver", "front-proxy-client", "scheduler.conf"])
    assert report.ok, failures(report)
    for name in ("master1", "master2", "master3"):
        assert until_kubernetes(nodes, name) == [
            "read",  # the plan's read of every node
            "read",  # the etcd members' pass asks and finds nothing selected for it
            "read",  # the control-plane pass: its check
            "read",  # and its run, which places and restarts
            "mark kubexm-static-pod@kube-apiserver kubexm-static-pod@kube-scheduler",
            f"place {PKI_DIR}/apiserver.crt {PKI_DIR}/apiserver.key {PKI_DIR}/front-proxy-client.crt "
            f"{PKI_DIR}/front-proxy-client.key /etc/kubernetes/scheduler.conf",
            "exists /etc/kubernetes/manifests/kube-apiserver.yaml",
            "has-ss",
            "restart-static-pod kube-apiserver",
            "wait-listening 6443",
            "KUBECTL",
        ], name
    assert not [label(cmd) for cmd in nodes.sent("worker1") if label(cmd) not in ("read", None)]

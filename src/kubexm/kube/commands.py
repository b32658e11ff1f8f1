"""The exact command lines kubexm runs for kubeadm and kubectl, in one place so tests can pin them.

Every function returns a ``Cmd`` built by ``kubexm.hosts.shell``: node names, label values, addon names and
paths are each one quoted word, whatever they hold. Read-only helpers are declared ``readonly=True`` so
checks and dry runs may use them.
"""

from __future__ import annotations

from kubexm.hosts.shell import Cmd, Word, sh, shell
from kubexm.kube.paths import ADMIN_CONF, INIT_CONFIG, JOIN_CONFIG, TOKEN_CONFIG

KUBECTL: tuple[str, ...] = ("kubectl", "--kubeconfig", ADMIN_CONF)


def kubectl(*args: Word, readonly: bool = False) -> Cmd:
    """kubectl with the admin kubeconfig; ``readonly`` for get/version (verified by the shell module)."""
    return sh(*KUBECTL, *args, readonly=readonly)


def kubectl_get(*args: Word) -> Cmd:
    return kubectl("get", *args, readonly=True)


def apiserver_readyz() -> Cmd:
    return sh("test", "-f", ADMIN_CONF, readonly=True) & kubectl_get("--raw=/readyz", "--request-timeout=5s")


def kubeadm_init() -> Cmd:
    # --skip-token-print: the bootstrap token is a secret; it must not land in kubexm's logs.
    return sh("kubeadm", "init", "--config", INIT_CONFIG, "--skip-token-print")


def kubeadm_join() -> Cmd:
    return sh("kubeadm", "join", "--config", JOIN_CONFIG)


def token_create() -> Cmd:
    # The token comes from the 0600 config file, not argv; kubeadm echoes it, so stdout is discarded.
    return sh("kubeadm", "token", "create", "--config", TOKEN_CONFIG).to("/dev/null")


def remove(*paths: str) -> Cmd:
    return sh("rm", "-f", "--", *paths)


def token_delete(token: str) -> Cmd:
    """Delete by the token's public id (the part before the dot), which is not secret."""
    return sh("kubeadm", "token", "delete", token.split(".", 1)[0])


def cordon(node: str) -> Cmd:
    return kubectl("cordon", "--", node)


def uncordon(node: str) -> Cmd:
    return kubectl("uncordon", "--", node)


def drain(node: str, grace_period: int = -1, timeout: int = 300, force: bool = False) -> Cmd:
    flags = ["--ignore-daemonsets", "--delete-emptydir-data", f"--grace-period={int(grace_period)}",
             f"--timeout={int(timeout)}s", *(["--force"] if force else [])]
    return kubectl("drain", *flags, "--", node)


def delete_node(node: str) -> Cmd:
    return kubectl("delete", "node", "--ignore-not-found", "--", node)


def get_node(node: str) -> Cmd:
    return kubectl_get("node", "-o", "json", "--ignore-not-found", "--", node)


def label_node(node: str, labels: dict[str, str]) -> Cmd:
    pairs = [f"{k}={v}" for k, v in sorted(labels.items())]
    return kubectl("label", "node", "--overwrite", "--", node, *pairs)


def taint_node(node: str, taints: list[str]) -> Cmd:
    """``key[=value]:effect`` taints on a node, replacing the value and effect of the same key."""
    return kubectl("taint", "node", "--overwrite", "--", node, *taints)


def upgrade_apply(version: str) -> Cmd:
    return sh("kubeadm", "upgrade", "apply", "--yes", "--certificate-renewal=false", "--", version)


def upgrade_node() -> Cmd:
    return sh("kubeadm", "upgrade", "node", "--certificate-renewal=false")


def restart_kubelet() -> Cmd:
    return sh("systemctl", "daemon-reload") & sh("systemctl", "restart", "kubelet")


def restart_unit(unit: str) -> Cmd:
    return sh("systemctl", "restart", "--", unit)


def unit_active(unit: str) -> Cmd:
    return sh("systemctl", "is-active", "-q", "--", unit, readonly=True)


def reset(cri_socket: str) -> Cmd:
    """kubeadm reset, then what it documents it leaves behind (CNI config, iptables/IPVS rules, kubeconfigs).
    A node where kubeadm never got installed only gets the cleanup."""
    return shell(
        "if command -v kubeadm >/dev/null; then kubeadm reset --force --cri-socket {socket}; fi && "
        "rm -rf /etc/cni/net.d /var/lib/kubelet /etc/kubernetes/manifests /etc/kubernetes/*.conf "
        "/etc/kubernetes/kubeadm-*.yaml \"$HOME/.kube/config\" && "
        "{{ command -v ipvsadm >/dev/null && ipvsadm --clear || true; }} && "
        "{{ iptables-save | grep -v -E 'KUBE-|CALI-|cali:|FLANNEL|CILIUM' | iptables-restore || true; }}",
        socket=cri_socket)


def restart_static_pod(component: str) -> Cmd:
    """Static pods restart when their manifest leaves and comes back; kubelet notices within its sync period."""
    return shell(
        "mv {manifest} {parked} && "
        "for i in $(seq 60); do crictl ps -q --name {pattern} | grep -q . || break; sleep 1; done && "
        "mv {parked} {manifest}",
        manifest=f"/etc/kubernetes/manifests/{component}.yaml", parked=f"/etc/kubernetes/{component}.yaml.kubexm",
        pattern=f"^{component}$")


def apply_manifest(path: str) -> Cmd:
    return kubectl("apply", "--server-side", "--force-conflicts", "-f", path)


def delete_manifest(path: str) -> Cmd:
    return kubectl("delete", "--ignore-not-found", "-f", path)


def manifest_present(path: str) -> Cmd:
    return kubectl_get("-f", path, "-o", "name")


def helm_upgrade(release: str, chart: str, namespace: str, values: str, version: str | None = None,
                 repo: str | None = None) -> Cmd:
    args: list[str] = ["--namespace", namespace, "--create-namespace", "--kubeconfig", ADMIN_CONF, "-f", values,
                       "--wait", "--timeout", "10m"]
    if repo:
        args += ["--repo", repo]
    if version:
        args += ["--version", version]
    # Release and chart after the options and "--": a name that starts with "-" stays a name.
    return sh("helm", "upgrade", "--install", *args, "--", release, chart)


def helm_status(release: str, namespace: str) -> Cmd:
    return sh("helm", "status", "-n", namespace, "--kubeconfig", ADMIN_CONF, "--", release, readonly=True)


def helm_uninstall(release: str, namespace: str) -> Cmd:
    return sh("helm", "uninstall", "--namespace", namespace, "--kubeconfig", ADMIN_CONF, "--wait",
              "--ignore-not-found", "--", release)

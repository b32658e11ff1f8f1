"""The exact command lines kubexm runs for kubeadm and kubectl, in one place so tests can pin them."""

from __future__ import annotations

import shlex

from kubexm.kube.kubeadm import ADMIN_CONF, INIT_CONFIG, JOIN_CONFIG, TOKEN_CONFIG

KUBECTL = f"kubectl --kubeconfig {ADMIN_CONF}"


def kubeadm_init() -> str:
    # --skip-token-print: the bootstrap token is a secret; it must not land in kubexm's logs.
    return f"kubeadm init --config {INIT_CONFIG} --skip-token-print"


def kubeadm_join() -> str:
    return f"kubeadm join --config {JOIN_CONFIG}"


def token_create() -> str:
    # The token comes from the 0600 config file, not argv; kubeadm echoes it, so stdout is discarded.
    return f"kubeadm token create --config {TOKEN_CONFIG} >/dev/null && rm -f {TOKEN_CONFIG}"


def token_delete(token: str) -> str:
    """Delete by the token's public id (the part before the dot), which is not secret."""
    return f"kubeadm token delete {shlex.quote(token.split('.', 1)[0])}"


def cordon(node: str) -> str:
    return f"{KUBECTL} cordon {shlex.quote(node)}"


def uncordon(node: str) -> str:
    return f"{KUBECTL} uncordon {shlex.quote(node)}"


def drain(node: str, grace_period: int = -1, timeout: int = 300, force: bool = False) -> str:
    cmd = (f"{KUBECTL} drain {shlex.quote(node)} --ignore-daemonsets --delete-emptydir-data "
           f"--grace-period={grace_period} --timeout={timeout}s")
    return cmd + (" --force" if force else "")


def delete_node(node: str) -> str:
    return f"{KUBECTL} delete node {shlex.quote(node)} --ignore-not-found"


def label_node(node: str, labels: dict[str, str]) -> str:
    pairs = " ".join(shlex.quote(f"{k}={v}") for k, v in sorted(labels.items()))
    return f"{KUBECTL} label node {shlex.quote(node)} {pairs} --overwrite"


def upgrade_apply(version: str) -> str:
    return f"kubeadm upgrade apply {shlex.quote(version)} --yes --certificate-renewal=false"


def upgrade_node() -> str:
    return "kubeadm upgrade node --certificate-renewal=false"


def restart_kubelet() -> str:
    return "systemctl daemon-reload && systemctl restart kubelet"


def reset(cri_socket: str) -> str:
    """kubeadm reset, then what it documents it leaves behind (CNI config, iptables/IPVS rules, kubeconfigs).
    A node where kubeadm never got installed only gets the cleanup."""
    return (f"if command -v kubeadm >/dev/null; then kubeadm reset --force --cri-socket {shlex.quote(cri_socket)}; "
            "fi && "
            "rm -rf /etc/cni/net.d /var/lib/kubelet /etc/kubernetes/manifests /etc/kubernetes/*.conf "
            "/etc/kubernetes/kubeadm-*.yaml $HOME/.kube/config && "
            "(command -v ipvsadm >/dev/null && ipvsadm --clear || true) && "
            "(iptables-save | grep -v -E 'KUBE-|CALI-|cali:|FLANNEL|CILIUM' | iptables-restore || true)")


def restart_static_pod(component: str) -> str:
    """Static pods restart when their manifest leaves and comes back; kubelet notices within its sync period."""
    manifest = f"/etc/kubernetes/manifests/{component}.yaml"
    return (f"mv {manifest} /etc/kubernetes/{component}.yaml.kubexm && "
            f"for i in $(seq 60); do crictl ps -q --name '^{component}$' | grep -q . || break; sleep 1; done && "
            f"mv /etc/kubernetes/{component}.yaml.kubexm {manifest}")


def apply_manifest(path: str) -> str:
    return f"{KUBECTL} apply --server-side --force-conflicts -f {shlex.quote(path)}"


def delete_manifest(path: str) -> str:
    return f"{KUBECTL} delete --ignore-not-found -f {shlex.quote(path)}"


def helm_upgrade(release: str, chart: str, namespace: str, values: str, version: str | None = None,
                 repo: str | None = None) -> str:
    cmd = (f"helm upgrade --install {shlex.quote(release)} {shlex.quote(chart)} --namespace {shlex.quote(namespace)} "
           f"--create-namespace --kubeconfig {ADMIN_CONF} -f {shlex.quote(values)} --wait --timeout 10m")
    if repo:
        cmd += f" --repo {shlex.quote(repo)}"
    if version:
        cmd += f" --version {shlex.quote(version)}"
    return cmd


def helm_uninstall(release: str, namespace: str) -> str:
    return (f"helm uninstall {shlex.quote(release)} --namespace {shlex.quote(namespace)} --kubeconfig {ADMIN_CONF} "
            "--wait --ignore-not-found")

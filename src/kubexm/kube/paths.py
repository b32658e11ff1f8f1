"""Where kubeadm's files live on a node. Constants only: the kubectl and kubeadm command builders (and through
them read-only commands such as health) use them without loading kubeadm's config writer, ruamel.yaml or the
cryptography package."""

PKI_DIR = "/etc/kubernetes/pki"
INIT_CONFIG = "/etc/kubernetes/kubeadm-config.yaml"
JOIN_CONFIG = "/etc/kubernetes/kubeadm-join.yaml"
TOKEN_CONFIG = "/etc/kubernetes/kubeadm-token.yaml"
ADMIN_CONF = "/etc/kubernetes/admin.conf"
KUBELET_CONF = "/etc/kubernetes/kubelet.conf"

"""A commented sample cluster file (`kubexm create config`) that loads as it is."""

from __future__ import annotations

from kubexm.spec.models import DEFAULT_ETCD_VERSION, DEFAULT_K8S_VERSION

_HEADER = """\
# kubexm cluster file. Edit the hosts (addresses, user, key) before use:
# the 192.168.0.x addresses below are examples; put your machines' addresses there.
# Reference: `kubexm generate schema`; check it with `kubexm create cluster -f FILE --dry-run --offline`.
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: {name}
spec:
  hosts:
"""

_HOST = """\
    - name: {host}
      address: {address}
      # internalAddress: 10.0.0.{n}     # when nodes talk to each other on another network
      user: root                        # a non-root user works too; set sudoPassword if sudo asks for one
      privateKeyPath: ~/.ssh/id_ed25519
"""


def sample_config(name: str = "mycluster", with_ha: bool = False) -> str:
    """YAML text of a single-master (or with_ha: 3 masters behind haproxy+keepalived) cluster."""
    masters = ["master1", "master2", "master3"] if with_ha else ["master1"]
    workers = ["worker1", "worker2"]
    text = _HEADER.format(name=name)
    for n, host in enumerate(masters + workers, start=11):
        text += _HOST.format(host=host, address=f"192.168.0.{n}", n=n)
    roles = ", ".join(masters)
    text += f"""\
  roleGroups:
    etcd: [{roles}]                  # 1, 3 or 5 members
    control-plane: [{roles}]
    worker: [{", ".join(workers)}]
"""
    if with_ha:
        text += """\
  controlPlaneEndpoint:
    domain: lb.kubexm.local
    address: 192.168.0.10              # a free address for the keepalived VIP
    port: 6443
    loadBalancer: haproxy-keepalived   # or kube-vip, internal (haproxy on each worker), external
"""
    text += f"""\
  kubernetes:
    version: {DEFAULT_K8S_VERSION}
    podCidr: 10.233.64.0/18
    serviceCidr: 10.233.0.0/18
    proxyMode: ipvs
  etcd:
    type: kubexm                       # kubexm (systemd units), kubeadm (stacked) or external
    version: {DEFAULT_ETCD_VERSION}
  containerRuntime:
    type: containerd
  network:
    plugin: calico
"""
    return text

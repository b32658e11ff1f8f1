"""The validated string types accept the real-world spellings of their values and refuse the rest."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr, TypeAdapter, ValidationError

from kubexm.errors import SpecError
from kubexm.spec import fields
from kubexm.spec.loader import parse_cluster

GOOD: dict[str, list[str]] = {
    "Address": ["192.168.0.11", "fd00::11", "node1", "node-1.example.com", "Node1.Example.COM", "localhost"],
    "IPAddress": ["10.0.0.1", "2001:db8::1"],
    "UserName": ["root", "ec2-user", "ubuntu", "_svc", "john.doe", "Admin"],
    "AbsPath": ["/var/lib/etcd", "/data/etcd data", "/srv/données", "/opt/a-b_c.d+e=f@g:h#i,j~k",
                "/var/lib/kubexm etcd/data;$(touch /tmp/x)", "/a`b`'\"c\\d%e*"],
    "PackageName": ["curl", "libc6-dev", "g++", "python3.11", "NetworkManager", "perl-Data-Dumper",
                    "containerd.io=1.7.27-1", "libssl3:amd64", "kernel-devel-5.14.0-427.el9"],
    "SysctlKey": ["net.ipv4.ip_forward", "net.bridge.bridge-nf-call-iptables", "vm.max_map_count",
                  "net.ipv4.conf.eth0/100.rp_filter", "kernel.pid_max"],
    "KernelModule": ["br_netfilter", "ip_vs_rr", "nf_conntrack", "overlay"],
    "DnsLabel": ["ingress-nginx", "a", "x1"],
    "DnsName": ["cluster.local", "lb.kubexm.local"],
    "RegistryHost": ["docker.io", "reg.internal:5000", "10.0.0.5:5000", "[fd00::5]:5000", "localhost:5000",
                     "fd00::5"],
    "RegistryPrefix": ["reg.internal:5000", "harbor.example.com/library"],
    "ImageRef": ["haproxy", "docker.io/library/haproxy:2.8", "registry.k8s.io/pause:3.10",
                 "reg.internal:5000/mirror/kube-vip/kube-vip:v0.8.9", "[fd00::5]:5000/a/b:c",
                 "quay.io/cilium/cilium:v1.16.5@sha256:" + "a" * 64, "ghcr.io/a__b/c-d.e:1_2-3.4"],
    "InterfaceName": ["eth0", "ens3", "enp0s31f6", "eth0.100", "br-1a2b3c4d5e6f", "wlp2s0", "bond0", "vlan_x-1"],
    "NtpServer": ["ntp.example.com", "10.0.0.1", "2.pool.ntp.org"],
    "LabelKey": ["role", "node-role.kubernetes.io/worker", "example.com/a_b.c"],
    "LabelValue": ["", "edge", "v1.2_3-x"],
    "Taint": ["dedicated=edge:NoSchedule", "gpu:NoExecute", "example.com/x=y:PreferNoSchedule"],
    "Url": ["https://mirror.example.com/kubexm", "http://10.0.0.5:5000", "https://[fd00::5]:8443/x?y=1"],
    "ChartRef": ["ingress-nginx", "bitnami/redis", "oci://registry.example.com/charts/app",
                 "https://example.com/app-1.2.3.tgz"],
    "FlagName": ["audit-log-path", "v", "feature-gates", "authorization-mode"],
    "FeatureGate": ["NFTablesProxyMode", "SidecarContainers"],
    "Version": ["v1.33.7", "1.7.27", "0.3.11", "v3.29.1", "1.2.3-rc.1", "4.11.3+build.5"],
    "Timezone": ["UTC", "Asia/Shanghai", "America/Argentina/Buenos_Aires", "Etc/GMT+8"],
    "CertSan": ["api.example.com", "*.example.com", "10.0.0.10"],
    "DnsUpstream": ["1.1.1.1", "8.8.8.8:53", "[2001:4860:4860::8888]:53", "tls://1.1.1.1", "/etc/resolv.conf",
                    "dns.example.com"],
    "Schedule": ["daily", "*-*-* 02:00:00", "Mon..Fri 02:00", "*:0/15"],
    "Cidr": ["10.233.64.0/18", "fd00:10::/64"],
}

BAD: dict[str, list[str]] = {
    "Address": ["10.0.0.300", "-oProxyCommand=x", "a b", "a_b.example", "-node", "node-", "é.example", ""],
    "IPAddress": ["node1", "10.0.0.1/24"],
    "UserName": ["-root", "root;id", "a b", "x" * 33, "1user", ""],
    "AbsPath": ["var/lib", "/var/../etc", "/var/lib/", "//x", "/", "/a/./b", "/..", "/a/..", "-rf", "~/x",
                "/a\nb", "/a\x00b"],
    "PackageName": ["-y", "curl;id", "curl id", "a$(id)", ""],
    "SysctlKey": ["net..ipv4", "../../etc/x", "net.ipv4.ip_forward;id", "-w", "Net.x"],
    "KernelModule": ["-r", "a b", "mod/x", "x" * 56],
    "DnsLabel": ["Ingress", "-a", "a-", "a.b", "a_b", "x" * 64],
    "DnsName": ["Cluster.local", "a..b", ".a"],
    "RegistryHost": ["https://docker.io", "docker.io/library", "reg:0", "reg:99999", "reg:x", "../../x", "[node]:5"],
    "RegistryPrefix": ["https://reg", "reg/../x", "reg/UPPER"],
    "ImageRef": ["Haproxy", "haproxy:", "haproxy:2.8 ", "-x", "a/../b", "a@sha256:xyz", "a:" + "t" * 129],
    "InterfaceName": ["", "x" * 16, "eth0:1", "a/b", "a b", ".", "..", "-x", "eth;0", "é",
                      # keepalived and kube-vip get only what steps/balancer.py accepts: no '@' or '+', no leading '_'/'.'
                      "vlan@x", "eth0+", "_eth0", ".eth0"],
    "NtpServer": ["ntp server", "-x"],
    "LabelKey": ["-a", "a/b/c", "/a", "Example.com/x", "x" * 64],
    "LabelValue": ["-a", "a b", "x" * 64],
    "Taint": ["a=b", "a=b:Never", ":NoSchedule", "a b:NoSchedule"],
    "Url": ["ftp://x", "file:///etc/passwd", "https://", "https://a b", "javascript:x", "https://x/$(id)",
            "//x", "https://x:99999"],
    "ChartRef": ["-x", "../x", "a/b/c", "file:///x", "Redis"],
    "FlagName": ["--audit-log-path", "-v", "a b", "a=b"],
    "FeatureGate": ["nftables", "A-B", "A=B"],
    "Version": ["latest", "1.2.3 ", "v1.2.3;id", "1.2.3.4.5", "-1"],
    "Timezone": ["../etc", "Asia/../x", "A B", "/UTC"],
    "CertSan": ["*", "a b", "*.*.x"],
    "DnsUpstream": ["1.1.1.1:0", "https://1.1.1.1", "a b", "/etc/../x"],
    "Schedule": ["-x", "daily;id", "$(id)", "../x"],
    "Cidr": ["10.0.0.1/24", "banana"],
}


def _adapter(name: str) -> TypeAdapter[Any]:
    return TypeAdapter(getattr(fields, name))


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in GOOD.items() for v in vs])
def test_accepts(name: str, value: str) -> None:
    assert _adapter(name).validate_python(value) == value


@pytest.mark.parametrize(("name", "value"), [(n, v) for n, vs in BAD.items() for v in vs])
def test_refuses(name: str, value: str) -> None:
    with pytest.raises(ValidationError) as err:
        _adapter(name).validate_python(value)
    (error,) = err.value.errors()
    assert "\n" not in error["msg"]


def test_normalised_registry_values() -> None:
    assert _adapter("RegistryPrefix").validate_python("reg.internal:5000/") == "reg.internal:5000"
    assert _adapter("RepositoryPath").validate_python("/mirror/k8s/") == "mirror/k8s"


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "a\x00b", "a\u2028b", "a\x85b", "a\u202eb", "a\u200fb", "a\tb", "a\x1bb"])
def test_text_stays_on_one_visible_line(value: str) -> None:
    with pytest.raises(ValidationError) as err:
        _adapter("Text").validate_python(value)
    assert "\n" not in str(err.value.errors()[0]["msg"])


def test_secrets_take_anything_but_line_breaks_and_never_echo() -> None:
    secret = _adapter("Secret")
    odd = "p\"w'$(x)`y`;\t é\u200f -"
    assert secret.validate_python(odd).get_secret_value() == odd
    for value in ("pw\nsecret-tail", "pw\rsecret-tail", "pw\x00secret-tail"):
        with pytest.raises(ValidationError) as err:
            secret.validate_python(value)
        assert "secret-tail" not in str(err.value.errors(include_input=False, include_url=False))
    assert isinstance(secret.validate_python("x"), SecretStr)


# --- the model-wide rule and error formatting --------------------------------------------------

BASE = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata:
  name: prod
spec:
  hosts:
    - name: node1
      address: 192.168.0.11
  roleGroups:
    etcd: [node1]
    control-plane: [node1]
    worker: [node1]
  system:
    sysctl:
      vm.max_map_count: "262144"
"""


def test_bad_map_key_names_the_map_on_one_line() -> None:
    for key, expected in (('"net.x\\nid"', "spec.system.sysctl['net.x\\nid']: key contains a newline"),
                          ("net.x;id", "spec.system.sysctl['net.x;id']: key 'net.x;id' is not a sysctl key")):
        text = BASE.replace("      vm.max_map_count", f'      {key}: "1"\n      vm.max_map_count')
        with pytest.raises(SpecError) as err:
            parse_cluster(text, "c.yaml")
        (problem,) = err.value.problems
        assert problem.startswith(f"c.yaml:15: {expected}"), problem
        assert "\n" not in problem


def test_control_character_in_a_value_is_escaped_in_the_message() -> None:
    text = BASE.replace('"262144"', '"1\\n2"')
    with pytest.raises(SpecError) as err:
        parse_cluster(text, "c.yaml")
    (problem,) = err.value.problems
    assert problem.startswith("c.yaml:15: spec.system.sysctl.vm.max_map_count: contains a newline")


def test_unknown_key_with_a_newline_stays_one_line() -> None:
    text = BASE.replace("  system:\n", '  "sys\\ntem": 1\n  system:\n')
    with pytest.raises(SpecError) as err:
        parse_cluster(text, "c.yaml")
    assert all("\n" not in p for p in err.value.problems)
    assert any("unknown field 'sys\\ntem'" in p for p in err.value.problems)

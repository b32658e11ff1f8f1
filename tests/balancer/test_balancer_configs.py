"""HA endpoint configs checked by the real daemons (haproxy -c, keepalived -t) and Kubernetes' schemas."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from kubexm.balancer.configs import (
    check_script,
    haproxy_cfg,
    internal_proxy_cfg,
    internal_proxy_manifest,
    keepalived_conf,
    kube_vip_manifest,
)
from kubexm.balancer.plan import control_plane_endpoint, endpoint_ip, endpoint_plan
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.spec.validate import validate_cluster

TOOLS = {t: shutil.which(t) or f"/usr/sbin/{t}" for t in ("haproxy", "keepalived")}


def cluster(lb: str = "haproxy-keepalived", extra: str = "") -> Cluster:
    text = sample_config("ha", with_ha=True).replace("loadBalancer: haproxy-keepalived", f"loadBalancer: {lb}")
    return parse_cluster(text + extra)


def check(tool: str, text: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / f"{tool}.conf"
    path.write_text(text)
    flag = ["-c", "-dW", "-f"] if tool == "haproxy" else ["-t", "-f"]
    assert os.path.exists(TOOLS[tool]), f"{tool} missing: `make test` installs it (scripts/setup.sh)"
    return subprocess.run([TOOLS[tool], *flag, str(path)], capture_output=True, text=True)


def test_haproxy_configs_pass_haproxy_check(tmp_path: Path) -> None:
    for cfg in (haproxy_cfg(cluster()), internal_proxy_cfg(cluster("internal"))):
        res = check("haproxy", cfg, tmp_path)
        assert res.returncode == 0 and "[WARNING]" not in res.stdout + res.stderr, res.stdout + res.stderr
        for i, ip in enumerate(("192.168.0.11", "192.168.0.12", "192.168.0.13"), start=1):
            assert f"server master{i} {ip}:6443 check check-ssl verify none" in cfg
    assert "bind 0.0.0.0:8443" in haproxy_cfg(cluster())  # co-located with apiservers: balancerPort
    assert "bind 127.0.0.1:6443" in internal_proxy_cfg(cluster("internal"))
    # The check is real: a broken directive fails it.
    broken = haproxy_cfg(cluster()).replace("balance roundrobin", "balance sideways")
    assert check("haproxy", broken, tmp_path).returncode != 0


def test_leaving_control_planes_are_not_backends() -> None:
    cfg = haproxy_cfg(cluster(), without=frozenset({"master1"}))
    assert "master1" not in cfg and "server master2" in cfg


def test_keepalived_configs_pass_keepalived_check(tmp_path: Path) -> None:
    c = cluster()
    # keepalived -t also checks the health script exists and is safe (root-owned, not world-writable dirs).
    script_dir = Path("/run/kubexm-test-keepalived")
    script_dir.mkdir(mode=0o755, exist_ok=True)
    script = script_dir / "check.sh"
    script.write_text(check_script())
    script.chmod(0o755)
    priorities = []
    for name in ("master1", "master2", "master3"):
        conf = keepalived_conf(c, name, "eth0", str(script))
        res = check("keepalived", conf, tmp_path)
        # keepalived exits 0 for keywords it ignores but prints them: only silence is a pass.
        assert res.returncode == 0 and not (res.stdout + res.stderr).strip(), res.stdout + res.stderr
        assert '192.168.0.10/32 dev "eth0"' in conf and '    interface "eth0"\n' in conf and "virtual_router_id 51" in conf
        me = c.host(name).internal_ip
        assert f"unicast_src_ip {me}" in conf and me not in conf.split("unicast_peer")[1].split("}")[0]
        priorities.append(int(re.search(r"^\s*priority (\d+)$", conf, re.M).group(1)))  # type: ignore[union-attr]
    assert priorities == sorted(priorities, reverse=True) and len(set(priorities)) == 3
    broken = keepalived_conf(c, "master1", "eth0", str(script)).replace("virtual_router_id 51", "virtual_router_id 300")
    assert check("keepalived", broken, tmp_path).returncode != 0
    res = subprocess.run(["bash", "-n"], input=check_script(), text=True, capture_output=True)
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("version", ["1.30.0", "1.33.0"])
def test_static_pods_validate_against_kubernetes_schemas(version: str) -> None:
    for text in (kube_vip_manifest(cluster("kube-vip"), "eth0"), kube_vip_manifest(cluster("kube-vip"), "eth0", True),
                 internal_proxy_manifest(cluster("internal"))):
        doc = YAML(typ="safe").load(text)
        kubernetes_validate.validate(doc, version, strict=True)
    first = YAML(typ="safe").load(kube_vip_manifest(cluster("kube-vip"), "eth0", first_node=True))
    assert first["spec"]["volumes"][0]["hostPath"]["path"] == "/etc/kubernetes/super-admin.conf"
    env = {e["name"]: e["value"] for e in first["spec"]["containers"][0]["env"]}
    assert env["address"] == "192.168.0.10" and env["vip_interface"] == "eth0" and env["cp_enable"] == "true"


def test_endpoint_per_load_balancer_type() -> None:
    assert control_plane_endpoint(cluster()) == "lb.kubexm.local:8443"
    assert endpoint_plan(cluster()).balancers == ("master1", "master2", "master3")
    dedicated = cluster(extra="").model_copy(deep=True)
    dedicated.spec.role_groups.loadbalancer = ["worker1", "worker2"]
    assert endpoint_plan(dedicated).balancers == ("worker1", "worker2")
    assert control_plane_endpoint(dedicated) == "lb.kubexm.local:6443"
    internal = cluster("internal")
    assert endpoint_plan(internal).balancers == ("worker1", "worker2")
    assert endpoint_ip(internal, "worker1") == "127.0.0.1" and endpoint_ip(internal, "master2") == "192.168.0.12"
    assert endpoint_ip(cluster(), "worker1") == "192.168.0.10"
    assert control_plane_endpoint(cluster("kube-vip")) == "lb.kubexm.local:6443"
    single = parse_cluster(sample_config("one"))
    assert endpoint_ip(single, "worker1") == "192.168.0.11"


def test_bad_endpoint_settings_are_refused() -> None:
    c = cluster()
    c.spec.control_plane_endpoint.balancer_port = 6443
    assert any("balancerPort" in p for p in validate_cluster(c))
    v = cluster("kube-vip")
    v.spec.control_plane_endpoint.address = "192.168.0.12"
    assert any("belongs to a host" in p for p in validate_cluster(v))

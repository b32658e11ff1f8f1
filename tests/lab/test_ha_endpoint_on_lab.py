"""The HA endpoint for real: haproxy + keepalived from uploaded .debs on two control-plane nodes, a VIP on
the lab bridge, a TLS client through it, and failover when the VIP holder dies."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .conftest import RunningLab, kubexm

pytestmark = pytest.mark.lab


def fetch(address: str, port: int, path: str, timeout: float = 3.0) -> str:
    """GET over TLS without verification (the stand-in apiservers use a throwaway certificate)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with socket.create_connection((address, port), timeout=timeout) as raw, \
            ctx.wrap_socket(raw, server_hostname="kubernetes") as tls:
        tls.sendall(f"GET /{path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while chunk := tls.recv(4096):
            data += chunk
    return data.decode(errors="replace")


def holder(lab: RunningLab, vip: str, nodes: list[str]) -> list[str]:
    return [n for n in nodes if f"inet {vip}/" in lab.ssh(n, "ip -o -4 addr show")]


@pytest.fixture
def ha_cleanup(lab: RunningLab) -> Iterator[None]:
    """The session lab is shared: stop the balancers and stand-ins afterwards, and drop the VIP."""
    yield
    lab.refresh()
    for node in ("node1", "node2"):
        if not lab.lab.node(lab.state, node).running:
            lab.lab.start(node)
        lab.ssh(node, "systemctl stop fake-apiserver 2>/dev/null; systemctl disable --now keepalived haproxy "
                      "2>/dev/null; ip -o -4 addr show dev eth0 | awk '$4 ~ /\\/32$/ {print $4}' | "
                      "xargs -r -n1 ip addr del dev eth0; true")


def test_vip_fails_over_between_control_plane_balancers(lab: RunningLab, tmp_path: Path, ha_cleanup: None) -> None:
    net = ipaddress.ip_network(lab.state.subnet)
    vip = str(net.network_address + 250)
    text = lab.cluster_file.read_text()
    head, _, _ = text.partition("  roleGroups:")
    spec = head + ("  roleGroups:\n    etcd: [node1]\n    control-plane: [node1, node2]\n    worker: [node3]\n"
                   f"  controlPlaneEndpoint:\n    address: {vip}\n    loadBalancer: haproxy-keepalived\n")
    spec += text[text.index("  etcd:\n"):]
    cluster_file = tmp_path / "ha.yaml"
    cluster_file.write_text(spec)

    # Stand-in apiservers: TLS on 6443 answering /healthz (what haproxy checks) and /whoami.
    for node in ("node1", "node2"):
        lab.ssh(node, "mkdir -p /srv/fake && cd /srv/fake && echo ok > healthz && hostname > whoami && "
                      "(test -f c || openssl req -x509 -newkey rsa:2048 -nodes -keyout k -out c -days 1 "
                      "-subj /CN=kubernetes >/dev/null 2>&1) && "
                      "(systemctl is-active -q fake-apiserver || systemd-run --unit fake-apiserver "
                      "--working-directory=/srv/fake openssl s_server -accept 6443 -WWW -cert c -key k -quiet)")

    # Preflight rightly flags 6443 as taken by a foreign process (the stand-ins), hence --skip-preflight.
    res = kubexm("create", "cluster", "-f", str(cluster_file), "-y", "--tags", "loadbalancer", "--skip-preflight")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    for node in ("node1", "node2"):
        assert lab.ssh(node, "systemctl is-active haproxy keepalived").split() == ["active", "active"]
    assert lab.ssh("node3", "systemctl is-active haproxy 2>/dev/null; true").strip() != "active"

    deadline = time.monotonic() + 30
    while not (owners := holder(lab, vip, ["node1", "node2"])) and time.monotonic() < deadline:
        time.sleep(1)
    assert len(owners) == 1, f"VIP {vip} held by {owners}"
    first = owners[0]
    answer = fetch(vip, 8443, "whoami")
    assert " 200 " in answer.splitlines()[0] and answer.rstrip().splitlines()[-1] in ("node1", "node2")

    # Idempotent: a second run changes nothing.
    again = kubexm("create", "cluster", "-f", str(cluster_file), "-y", "--tags", "loadbalancer", "--skip-preflight")
    assert again.returncode == 0 and "nothing to change" in again.stdout, again.stdout[-2000:]

    # The holder dies: the VIP moves to the other node within seconds and clients reconnect.
    survivor = "node2" if first == "node1" else "node1"
    killed_at = time.monotonic()
    lab.lab.kill(first)
    moved = None
    while time.monotonic() - killed_at < 20:
        if holder(lab, vip, [survivor]):
            moved = time.monotonic() - killed_at
            break
        time.sleep(0.5)
    assert moved is not None, f"the VIP did not move to {survivor} within 20s"
    reply = ""
    while time.monotonic() - killed_at < 40:
        try:
            reply = fetch(vip, 8443, "whoami")
            if reply.rstrip().splitlines()[-1] == survivor:
                break
        except OSError:
            time.sleep(0.5)
    assert reply.rstrip().splitlines()[-1] == survivor, reply
    print(f"VIP moved to {survivor} {moved:.1f}s after {first} died")

"""Fake nodes answering the health probe as real ones do: real `systemctl show` blocks, real `etcdctl -w json`
shapes (etcd 3.5), /proc files and df output. Each part is only answered when the probe asked for it, so a probe
that stops asking for something makes the tests that need it fail."""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from typing import Any

from support.memory import MemoryFleet, MemoryHost

from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster

CLUSTER_ID = 14841639068965178418
IDS = {"node1": 10276657743932975437, "node2": 9372538179322589801, "node3": 17138395498447386137}


def cluster(extra: str = "") -> Cluster:
    return parse_cluster(
        "apiVersion: kubexm.io/v1alpha1\nkind: Cluster\nmetadata:\n  name: hc\nspec:\n  hosts:\n"
        + "".join(f"    - name: node{i}\n      address: 10.0.0.{i}\n      password: pw\n" for i in (1, 2, 3))
        + "  roleGroups:\n    etcd: [node1, node2, node3]\n    control-plane: [node1]\n    worker: [node2, node3]\n"
        + extra)


@dataclass
class NodeState:
    """What one fake node reports; tests change a field to break it."""

    name: str
    units: dict[str, dict[str, str]] = field(default_factory=dict)
    df: dict[str, tuple[int, int, int, int, int, int, str]] = field(default_factory=dict)
    clock_offset: float = 0.0
    swap_kb: int = 0
    modules: list[str] = field(default_factory=lambda: ["overlay", "br_netfilter", "ip_vs", "ip_vs_rr", "ip_vs_wrr",
                                                         "ip_vs_sh", "nf_conntrack", "nf_nat", "xt_conntrack"])
    sysctl: dict[str, str] = field(default_factory=lambda: {"net.bridge.bridge-nf-call-iptables": "1",
                                                            "net.bridge.bridge-nf-call-ip6tables": "1",
                                                            "net.ipv4.ip_forward": "1"})
    sysctl_writable: bool = True
    virt: str = "none"  # systemd-detect-virt --container
    etcd_up: bool = True
    etcd_version: str = "3.5.16"
    raft_index: int = 4182
    db_size: int = 25 * 1024 * 1024
    leader: str = "node1"
    alarms: list[dict[str, Any]] = field(default_factory=list)
    took: str = "1.553943ms"
    certs: dict[str, str] = field(default_factory=dict)  # path -> PEM
    kube: str = "absent"  # absent | down | up
    kube_nodes: dict[str, Any] = field(default_factory=dict)
    kube_pods: dict[str, Any] = field(default_factory=dict)
    failed_other: list[str] = field(default_factory=list)


def unit(active: str = "active", sub: str = "running", restarts: int = 0, result: str = "success",
         load: str = "loaded") -> dict[str, str]:
    return {"LoadState": load, "ActiveState": active, "SubState": sub, "NRestarts": str(restarts), "Result": result}


def healthy(name: str) -> NodeState:
    root = (20511312, 4513492, 14934448, 1310720, 181234, 1129486, "/")
    return NodeState(name, units={"etcd": unit(), "containerd": unit(), "kubelet": unit(load="not-found",
                                                                                       active="inactive",
                                                                                       sub="dead")},
                     df={"/": root, "/var/lib/etcd": root, "/var/lib/containerd": root})


def systemctl_show(names: list[str], units: dict[str, dict[str, str]]) -> str:
    blocks = []
    for n in names:
        u = units.get(n) or unit(load="not-found", active="inactive", sub="dead")
        # systemctl prints the service's own properties before the unit's, whatever order -p named them in.
        unit_id = n if "." in n else f"{n}.service"
        blocks.append(f"Result={u['Result']}\nNRestarts={u['NRestarts']}\nId={unit_id}\nLoadState={u['LoadState']}\n"
                      f"ActiveState={u['ActiveState']}\nSubState={u['SubState']}\n")
    return "\n".join(blocks)


class Fleet:
    def __init__(self, c: Cluster) -> None:
        self.cluster = c
        self.names = [h.name for h in c.spec.hosts]
        self.fleet = MemoryFleet(self.names)
        self.state = {n: healthy(n) for n in self.names}
        for n in self.names:
            self.fleet[n].on(r"#kx-section time", self._answer)

    def __getitem__(self, name: str) -> NodeState:
        return self.state[name]

    def host(self, name: str) -> MemoryHost:
        return self.fleet[name]

    def _answer(self, host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        import time

        cmd = m.string
        st = self.state[host.name]
        # One grep -H '' over the files the probe names: a line "path:text" per line of each file it asked for.
        files = {"/proc/sys/kernel/osrelease": "6.1.0-28-amd64", "/proc/uptime": "350212.41 1380112.20",
                 "/proc/loadavg": "0.31 0.22 0.18 1/312 48121", "/sys/devices/system/cpu/online": "0-3",
                 "/proc/meminfo": "MemTotal:        8131204 kB\nMemFree:          912340 kB\n"
                                  f"MemAvailable:    6021336 kB\nSwapTotal:       {st.swap_kb} kB\n"
                                  f"SwapFree:        {st.swap_kb} kB",
                 "/usr/lib/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian',
                 "/etc/os-release": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian',
                 "/proc/modules": "\n".join(f"{m} 16384 0 - Live 0x0000000000000000" for m in st.modules)}
        if st.virt != "none":
            files["/run/systemd/container"] = st.virt
        for key, value in st.sysctl.items():
            files["/proc/sys/" + key.replace(".", "/")] = value
        grep = re.search(r"grep -H -s '' -- ([^\n]*)", cmd)
        asked_files = shlex.split(grep.group(1)) if grep else []
        out = [f"#kx-section time\n{time.time() + st.clock_offset:.9f}", "#kx-section files"]
        out += [f"{path}:{line}" for path in asked_files if path in files for line in files[path].split("\n")]
        out.append("#kx-section unreadable")
        if "test -r /proc/modules" in cmd and "/proc/modules" not in files:
            out.append("/proc/modules")
        # df is given every probed path that exists, and prints one line per path in that order.
        probed = re.search(r"for p in ([^;]*); do if test -e", cmd)
        asked = shlex.split(probed.group(1)) if probed else []
        present = [p for p in asked if p in st.df]
        out.append("#kx-section df-paths\n" + "\n".join(present))
        out.append("#kx-section df\nFilesystem     1K-blocks     Used    Avail  Inodes  IUsed   IFree Mounted on\n"
                   + "\n".join(f"/dev/vda1 {' '.join(str(v) for v in st.df[p][:6])} {st.df[p][6]}" for p in present))
        out.append("#kx-section sysctl-writable")
        for key in st.sysctl:
            if st.sysctl_writable and f"printf '%s\\n' {key}" in cmd:
                out.append(key)
        show = re.search(r"systemctl show --property=\S+ --state=failed -- ([^\n]*?) '\*' 2>&1", cmd)
        if show:  # the managed units by name, then every failed one the '*' pattern adds
            failed = [u for u, s in st.units.items() if s["ActiveState"] == "failed"] + st.failed_other
            shown = show.group(1).split()
            states = {**st.units, **{u: unit("failed", "failed", result="exit-code") for u in st.failed_other}}
            body = systemctl_show(shown + [u for u in failed if u not in shown], states)
        out.append("#kx-section units\n" + (body if show else ""))
        out.append("#kx-section certs")
        for path, pem in st.certs.items():
            if path in cmd:
                out.append(f"#kubexm-file {path}\n{pem.strip()}")
        out += self._etcd(cmd, st)
        out.append("#kx-section kube")
        if "get --raw=/readyz" in cmd:
            out.append(self._kube(st))
        return 0, "\n".join(out) + "\n", ""

    def _etcd(self, cmd: str, st: NodeState) -> list[str]:
        me = IDS[st.name]
        header = {"cluster_id": CLUSTER_ID, "member_id": me, "revision": 3120, "raft_term": 4}
        refused = ('{"level":"warn","ts":"2026-12-03T03:01:12.123Z","logger":"etcd-client","caller":'
                   '"v3@v3.5.16/retry_interceptor.go:62","msg":"retrying of unary invoker failed","target":'
                   '"etcd-endpoints://0xc000468000/127.0.0.1:2379","attempt":0,"error":"rpc error: code = '
                   'DeadlineExceeded desc = latest balancer error: last connection error: connection error: desc = '
                   '\\"transport: Error while dialing: dial tcp 127.0.0.1:2379: connect: connection refused\\""}')
        out = []
        if "endpoint status -w json" in cmd:
            if st.etcd_up:
                status = {"header": header, "version": st.etcd_version, "dbSize": st.db_size,
                          "leader": IDS[st.leader], "raftIndex": st.raft_index, "raftTerm": 4,
                          "raftAppliedIndex": st.raft_index, "dbSizeInUse": st.db_size // 2}
                out.append("#kx-section etcd-status\n" + json.dumps([{"Endpoint": "https://127.0.0.1:2379",
                                                                    "Status": status}]))
            else:
                out.append("#kx-section etcd-status\n" + refused + "\nFailed to get the status of endpoint "
                           "https://127.0.0.1:2379 (context deadline exceeded)\n[]")
        if "endpoint health -w json" in cmd:
            if st.etcd_up:
                out.append("#kx-section etcd-health\n" + json.dumps([{"endpoint": "https://127.0.0.1:2379",
                                                                    "health": True, "took": st.took}]))
            else:
                out.append("#kx-section etcd-health\n" + refused + "\n" + json.dumps(
                    [{"endpoint": "https://127.0.0.1:2379", "health": False, "took": "5.001s",
                      "error": "context deadline exceeded"}]) + "\nError: unhealthy cluster")
        if "member list -w json" in cmd:
            if st.etcd_up:
                members = [{"ID": IDS[n], "name": n, "peerURLs": [f"https://10.0.0.{n[-1]}:2380"],
                            "clientURLs": [f"https://10.0.0.{n[-1]}:2379"]} for n in ("node1", "node2", "node3")]
                out.append("#kx-section etcd-members\n" + json.dumps({"header": header, "members": members}))
            else:
                out.append("#kx-section etcd-members\n" + refused + "\nError: context deadline exceeded")
        if "alarm list -w json" in cmd:
            doc: dict[str, Any] = {"header": header}
            if st.alarms:
                doc["alarms"] = st.alarms
            out.append("#kx-section etcd-alarms\n" + (json.dumps(doc) if st.etcd_up else refused))
        return out

    def _kube(self, st: NodeState) -> str:
        if st.kube == "absent":
            return "absent"
        if st.kube == "down":
            return ("present\nThe connection to the server lb.kubexm.local:6443 was refused - did you specify the "
                    "right host or port?")
        return ("present\nok\n#kx-section kube-nodes\n" + json.dumps(st.kube_nodes, indent=4) +
                "\n#kx-section kube-pods\n" + json.dumps(st.kube_pods, indent=4))

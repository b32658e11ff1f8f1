"""spec.pki.autoRenew: the units pass systemd-analyze verify, the script renews (with real openssl certificates)
exactly what expires within the window, and the step installs or removes the timer."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
from pathlib import Path

from support.memory import MemoryFleet, MemoryHost

from kubexm.engine import EventBus, Executor, RunContext, RunOptions
from kubexm.engine.task import Module, Pipeline
from kubexm.hosts.pool import ConnectionPool
from kubexm.modules.kubernetes import CertAutoRenewal
from kubexm.spec.loader import parse_cluster
from kubexm.spec.models import Cluster
from kubexm.spec.sample import sample_config
from kubexm.steps.cert_timer import ENV_FILE, SCRIPT, SERVICE_FILE, TIMER_FILE, renew_files, script_text

ON = "  pki:\n    autoRenew: {enabled: true, beforeDays: 14, onCalendar: 'Mon *-*-* 03:00:00'}\n"


def cluster(extra: str = ON) -> Cluster:
    return parse_cluster(sample_config("ha", with_ha=True) + extra)


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for path, (text, mode) in renew_files(cluster()).items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(mode)
    (root / "usr/lib/systemd").mkdir(parents=True, exist_ok=True)
    (root / "usr/lib/systemd/system").symlink_to("/lib/systemd/system")  # timers.target, sysinit.target
    units = [SERVICE_FILE, TIMER_FILE]
    res = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    timer = (root / TIMER_FILE.lstrip("/")).read_text()
    assert "OnCalendar=Mon *-*-* 03:00:00\n" in timer
    assert (root / ENV_FILE.lstrip("/")).read_text().endswith("RENEW_BEFORE_DAYS=14\n")
    # The same check fails on a broken schedule: the verification above means something.
    (root / TIMER_FILE.lstrip("/")).write_text(timer.replace("Mon *-*-* 03:00:00", "Mon *-*-* 27:00:00"))
    res = subprocess.run(["systemd-analyze", "verify", f"--root={root}", *units], capture_output=True, text=True)
    assert res.returncode != 0 and "calendar" in res.stderr


def test_the_script_is_literal_and_parses() -> None:
    text = script_text()
    assert "{{" not in text and "RENEW_BEFORE_DAYS" in text
    assert subprocess.run(["bash", "-n"], input=text.encode()).returncode == 0


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_ca(d: Path, name: str) -> None:
    d.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.crt",
             "-days", "3650", "-subj", f"/CN={name}", cwd=d)


def make_leaf(d: Path, name: str, ca: str, days: int) -> None:
    """A leaf signed by ``ca`` (relative to ``d``) that ends in ``days`` days."""
    (d / name).parent.mkdir(parents=True, exist_ok=True)
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
             "-subj", f"/CN={Path(name).name}", cwd=d)
    _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", f"{name}.crt", "-days", str(days), cwd=d)


def fake(bin_dir: Path, name: str, log: Path) -> None:
    path = bin_dir / name
    path.write_text(f'#!/bin/sh\necho "{name} $*" >> {log}\n')
    path.chmod(0o755)


def test_the_script_renews_what_expires_and_reports_what_it_cannot(tmp_path: Path) -> None:
    root = tmp_path / "node"
    k8s = root / "etc/kubernetes"
    pki = k8s / "pki"
    make_ca(pki, "ca")
    make_ca(pki, "front-proxy-ca")
    make_ca(pki / "etcd", "ca")
    make_leaf(pki, "apiserver", "ca", 5)  # expires within 14 days
    make_leaf(pki, "front-proxy-client", "front-proxy-ca", 300)  # does not
    make_leaf(pki, "etcd/server", "etcd/ca", 3)
    (pki / "etcd/ca.key").unlink()  # kubexm's etcd: the CA key stays on the deploy machine
    make_leaf(pki, "admin-client", "ca", 2)
    pem = base64.b64encode((pki / "admin-client.crt").read_bytes()).decode()
    (k8s / "admin.conf").write_text(f"apiVersion: v1\nusers:\n- name: admin\n  user:\n"
                                    f"    client-certificate-data: {pem}\n    client-key-data: x\n")
    (k8s / "manifests").mkdir()
    for pod in ("kube-apiserver", "kube-scheduler", "etcd"):
        (k8s / "manifests" / f"{pod}.yaml").write_text(f"name: {pod}\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "calls"
    for name in ("kubeadm", "crictl", "curl"):
        fake(bin_dir, name, log)
    script = tmp_path / "kubexm-cert-renew"
    script.write_text(script_text())
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "KUBEXM_CERT_ROOT": str(root),
           "RENEW_BEFORE_DAYS": "14"}
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, timeout=120)
    calls = log.read_text().splitlines()
    assert [c for c in calls if c.startswith("kubeadm")] == ["kubeadm certs renew apiserver",
                                                             "kubeadm certs renew admin.conf"]
    # etcd's certificate cannot be renewed here: an error line at priority 3 names the fix, and the unit fails.
    assert res.returncode == 1
    errors = [ln for ln in res.stdout.splitlines() if ln.startswith("<3>")]
    assert len(errors) == 1 and "etcd/server.crt" in errors[0] and "`kubexm certs renew`" in errors[0]
    assert any(ln.startswith("<5>renewed apiserver") for ln in res.stdout.splitlines())
    # kube-apiserver restarted (its manifest moved out and back, then /readyz asked); etcd and the scheduler
    # were not restarted, since nothing of theirs was renewed.
    assert "crictl ps -q --name ^kube-apiserver$" in calls and not [c for c in calls if "scheduler" in c]
    assert any(c.startswith("curl ") and "127.0.0.1:6443/readyz" in c for c in calls)
    assert sorted(p.name for p in (k8s / "manifests").iterdir()) == ["etcd.yaml", "kube-apiserver.yaml",
                                                                      "kube-scheduler.yaml"]

    # Nothing expiring within 1 day and no unrenewable certificate: nothing runs, exit 0.
    log.unlink()
    (pki / "etcd/server.crt").unlink()
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={**env, "RENEW_BEFORE_DAYS": "1"})
    assert res.returncode == 0 and "no certificate expires within 1 days" in res.stdout
    assert not log.exists()
    res = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={**env, "RENEW_BEFORE_DAYS": "1;x"})
    assert res.returncode == 2 and res.stdout.startswith("<3>RENEW_BEFORE_DAYS")


def _run(c: Cluster, fleet: MemoryFleet) -> object:
    options = RunOptions()
    ctx = RunContext(c, options, bus=EventBus([]), pool=ConnectionPool(c, options.connect, factory=fleet.factory))
    pipeline = Pipeline("T", [Module("M", [CertAutoRenewal])])
    return asyncio.run(Executor(ctx).run_pipeline(pipeline))


def test_the_step_installs_the_timer_and_removes_it_when_disabled() -> None:
    names = ["master1", "master2", "master3", "worker1", "worker2"]
    fleet = MemoryFleet(names)
    enabled: dict[str, bool] = {}
    for name in names:
        host = fleet[name]
        host.on(r"systemctl restart -- kubexm-cert-renew.timer",
                lambda h, m, s: (enabled.__setitem__(h.name, True), (0, "", ""))[1])
        host.on(r"^systemctl is-enabled -q -- kubexm-cert-renew.timer",
                lambda h, m, s: (0 if enabled.get(h.name) else 1, "", ""))
        host.on(r"^test '!' -e /usr/local/sbin/kubexm-cert-renew",
                lambda h, m, s: (1 if SCRIPT in h.files else 0, "", ""))

        def rm(h: MemoryHost, m: re.Match[str], s: bytes | None) -> tuple[int, str, str]:
            for path in (SCRIPT, ENV_FILE, SERVICE_FILE, TIMER_FILE):
                h.files.pop(path, None)
            enabled.pop(h.name, None)
            return 0, "", ""
        host.on(r"rm -f -- /usr/local/sbin/kubexm-cert-renew", rm)

    report = _run(cluster(), fleet)
    assert report.ok, report.failures  # type: ignore[attr-defined]
    assert sorted(enabled) == ["master1", "master2", "master3"]  # control planes (etcd members too), no workers
    m1 = fleet["master1"]
    assert m1.modes[SCRIPT] == 0o755 and m1.files[SCRIPT].decode() == script_text()
    assert b"RENEW_BEFORE_DAYS=14" in m1.files[ENV_FILE]
    assert not fleet["worker1"].commands
    before = len(m1.commands)
    assert _run(cluster(), fleet).ok  # type: ignore[attr-defined]
    assert not [c for c in m1.commands[before:] if c.startswith(("<put", "systemctl restart", "systemctl daemon"))]

    report = _run(cluster(""), fleet)
    assert report.ok  # type: ignore[attr-defined]
    assert enabled == {} and SCRIPT not in m1.files
    assert any(c.startswith("systemctl disable --now -- kubexm-cert-renew.timer 2>/dev/null || true && rm -f") for c in m1.commands)

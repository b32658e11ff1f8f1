"""``kubexm logs``: redaction against hostile text, size caps, the manifest, bounded memory, following a unit."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import re
import shlex
import tarfile
import tracemalloc
from pathlib import Path

import pytest
from support.memory import MemoryFleet, MemoryHost

from kubexm.diagnostics import logs
from kubexm.diagnostics.logs import CollectOptions, ItemWriter, collect, follow_unit, parse_duration, parse_size
from kubexm.diagnostics.redact import Redactor
from kubexm.engine import RunOptions
from kubexm.errors import UsageError
from kubexm.hosts import shell as shell_mod
from kubexm.spec.loader import parse_cluster

SUDO_PW = "Sudo-pw-9931!x"
REG_PW = 'reg"pw\\77'
TOKEN = "k8slog.0123456789abcdef"
SPEC = """\
apiVersion: kubexm.io/v1alpha1
kind: Cluster
metadata: {name: diag}
spec:
  hosts:
    - {name: n1, address: 10.0.0.1, user: ops, sudoPassword: "Sudo-pw-9931!x"}
    - {name: n2, address: 10.0.0.2, user: ops, sudoPassword: "Sudo-pw-9931!x"}
  roleGroups: {etcd: [n1], control-plane: [n1], worker: [n2]}
  registry:
    privateRegistry: reg.internal:5000
    auths:
      - {registry: reg.internal:5000, username: puller, password: 'reg"pw\\77'}
"""
PRIVATE_KEY = ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw\n"
               "7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyeh\n"
               "-----END RSA PRIVATE KEY-----\n")


def cluster():  # type: ignore[no-untyped-def]
    return parse_cluster(SPEC)


# -- a node's journal and files, answered the way a shell would ------------------------------------------

def source_bytes(host: MemoryHost, source: str) -> bytes:
    journals: dict[str, bytes] = host.journals  # type: ignore[attr-defined]
    m = re.search(r"journalctl -u (\S+)", source)
    if m:
        return journals.get(shlex.split(m[1])[0], b"")
    if "journalctl -k" in source:
        return journals.get("kernel", b"")
    m = re.match(r"cat -- (\S+)$", source)
    if m:
        return host.files.get(shlex.split(m[1])[0], b"")
    return f"output of {source[:40]}\n".encode()


def answer(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    command = m.string
    for pattern, kind in ((r"^(.*) \| tail -c \+(\d+) \| head -c (\d+) \| base64$", "chunk"),
                          (r"^(.*) \| head -c (\d+) \| base64$", "first"), (r"^(.*) \| wc -c$", "size")):
        hit = re.match(pattern, command, re.S)
        if hit:
            data = source_bytes(host, hit[1])
            if kind == "size":
                return 0, f"{len(data)}\n", ""
            if kind == "first":
                return 0, base64.b64encode(data[: int(hit[2])]).decode(), ""
            start = int(hit[2]) - 1
            return 0, base64.b64encode(data[start:start + int(hit[3])]).decode(), ""
    raise AssertionError(f"unexpected command {command!r}")


def probe(host: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
    units = "".join(f"{u} enabled enabled\n" for u in host.journals if u != "kernel")  # type: ignore[attr-defined]
    files = "".join(f"{p}\n" for p in host.files if p.startswith("/etc/"))
    pods = "".join(f"{p}\n" for p in host.files if p.startswith("/var/log/pods/"))
    sep = "--kubexm-logs--\n"
    return 0, f"1764730000\n{sep}{units}{sep}{files}{sep}{pods}", ""


def node(fleet: MemoryFleet, name: str, journals: dict[str, bytes], files: dict[str, bytes] | None = None) -> MemoryHost:
    host = fleet[name]
    host.journals = journals  # type: ignore[attr-defined]
    host.files.update(files or {})
    host.on(r"^date \+%s; echo --kubexm-logs--", probe)
    host.on(r"\| (wc -c|base64)$", answer)
    return host


def hostile_files() -> dict[str, bytes]:
    kubeconfig = (f"apiVersion: v1\nusers:\n- name: admin\n  user:\n    client-certificate-data: LS0tQ0VSVA==\n"
                  f"    client-key-data: {base64.b64encode(PRIVATE_KEY.encode()).decode()}\n")
    return {
        "/etc/kubernetes/admin.conf": kubeconfig.encode(),
        "/etc/kubernetes/pki/ca.key": PRIVATE_KEY.encode(),
        "/etc/kubernetes/pki/etcd/server-key.pem": PRIVATE_KEY.encode(),
        "/etc/kubernetes/kubeadm-join.yaml": f"discovery:\n  bootstrapToken:\n    token: {TOKEN}\n".encode(),
        "/etc/containerd/certs.d/reg.internal:5000/hosts.toml":
            b'[host."https://reg.internal:5000".header]\n  authorization = ["Basic cHVsbGVyOnJlZyJwd1w3Nw=="]\n',
        "/etc/containerd/config.toml": b'[plugins."io.containerd.grpc.v1.cri".registry.configs."r".auth]\n'
                                       b'  username = "puller"\n  password = "reg\\"pw\\\\77"\n',
        "/etc/kubexm/registry/htpasswd": b"puller:$2y$05$abcdefghijklmnopqrstuv\n",
        "/etc/crio/auth.json": json.dumps({"auths": {"r": {"auth": "cHVsbGVyOnJlZyJwd1w3Nw=="}}}).encode(),
        "/etc/etcd.env": b"ETCD_NAME=n1\nETCD_KEY_FILE=/etc/kubernetes/pki/etcd/server.key\n",
    }


def etcd_journal(n: int, name: str = "n1") -> bytes:
    lines = [f"2026-12-03T02:00:{i % 60:02d}+0000 {name} etcd[42]: line {i} applied index {i * 7}" for i in range(n)]
    lines.insert(n // 2, f"2026-12-03T02:00:00+0000 {name} sudo[9]: ops : password {SUDO_PW} typed on a tty")
    lines.insert(n // 2, f"2026-12-03T02:00:00+0000 {name} kubelet[7]: exec kubeadm join --token {TOKEN}")
    return ("\n".join(lines) + "\n").encode()


def unpack(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def assert_only_reads(host: MemoryHost) -> None:
    """Every command a node received passes the read-only verifier again, and no file was written."""
    assert host.commands
    for command in host.commands:
        assert not command.startswith("<put")
        shell_mod._verify_readonly_template(command.replace("{", "{{").replace("}", "}}"))


# -- redaction -------------------------------------------------------------------------------------------

HOSTILE = [
    ("password: my secret value with spaces\n", "my secret value"),
    ('  "password": "p@ss, w:rd}"\n', "p@ss"),
    ('{"auths": {"reg:5000": {"auth": "dXNlcjpodW50ZXIy", "identitytoken": "idtok-123456"}}}\n', "dXNlcjpodW50ZXIy"),
    ('{"auths": {"reg:5000": {"auth": "dXNlcjpodW50ZXIy", "identitytoken": "idtok-123456"}}}\n', "idtok-123456"),
    ("export REGISTRY_PASSWORD='x y z'\n", "x y z"),
    ("ExecStart=/usr/bin/thing --token=abcdef.0123456789abcdef --v=2\n", "0123456789abcdef"),
    ("kubeadm join 10.0.0.1:6443 --token abcdef.0123456789abcdef\n", "abcdef.0123456789abcdef"),
    ("token:\n", None),
    ("secret: |\n  first-secret-line\n  second-secret-line\nnext: ok\n", "secret-line"),
    ("client-key-data: LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ==\n", "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBLRVktLS0tLQ=="),
    (PRIVATE_KEY, "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMx"),
    (PRIVATE_KEY.replace("\n", "\\n"), "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMx"),  # a key in one JSON string
    ("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmU=\n", "b3BlbnNzaC1rZXktdjEA"),  # never ended
    ("pull from https://puller:hunter2pw@reg.internal:5000/v2/\n", "hunter2pw"),
    ("Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJlLXNpZw\n", "c2lnbmF0dXJlLXNpZw"),
    ("curl -H 'X: y' --password=\"sp ace\" --user u\n", "sp ace"),
    ("admin:$apr1$r31.....$HqJZimcKQFAMYayBlzkrA/\n", "HqJZimcKQFAMYayBlzkrA"),
    ("sa token eyJhbGciOiJSUzI1NiIsImtpZCI6IiJ9.eyJpc3MiOiJrdWJlcm5ldGVzIn0.sig-part-abcdefgh in a log\n",
     "eyJpc3MiOiJrdWJlcm5ldGVzIn0"),
]


@pytest.mark.parametrize(("text", "secret"), HOSTILE)
def test_redaction_hides_secrets_in_hostile_text(text: str, secret: str | None) -> None:
    out = Redactor().redact(text)
    if secret is not None:
        assert secret not in out, out
        assert "<redacted>" in out
    else:
        assert out == text


def test_redaction_scrubs_spec_secrets_in_any_form_and_keeps_what_on_call_reads() -> None:
    r = Redactor([SUDO_PW, REG_PW, "ab"])
    text = (f"sudo: {SUDO_PW}\nfree text {SUDO_PW}{SUDO_PW} end\nescaped {json.dumps(REG_PW)} and "
            "Sudo-pw-9931%21x\nauthorization-mode: Node,RBAC\nETCD_KEY_FILE=/etc/kubernetes/pki/etcd/server.key\n"
            "anonymous-auth: false\nab is too short to scrub\n")
    out = r.redact(text)
    for form in (SUDO_PW, REG_PW, json.dumps(REG_PW)[1:-1], "Sudo-pw-9931%21x"):
        assert form not in out
    assert "authorization-mode: Node,RBAC" in out and "server.key" in out and "anonymous-auth: false" in out
    assert "ab is too short" in out


@pytest.mark.parametrize("size", [1, 3, 7, 64, 4096])
def test_streamed_in_any_chunking_equals_whole_text(size: int, tmp_path: Path) -> None:
    corpus = "".join(t for t, _ in HOSTILE) + "".join(f"plain line {i} ü\n" for i in range(50)) + "no newline at end"
    r = Redactor([SUDO_PW])
    data = corpus.encode()
    with open(tmp_path / "out", "wb") as fh:
        w = ItemWriter(r, fh)
        for i in range(0, len(data), size):
            w.write(data[i:i + size])
        w.close()
    assert (tmp_path / "out").read_text() == r.redact(corpus)
    assert w.digest.hexdigest() == hashlib.sha256((tmp_path / "out").read_bytes()).hexdigest()


def test_an_over_long_line_is_cut_without_leaking_a_secret_at_the_cut(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logs, "MAX_LINE", 4096)
    r = Redactor([SUDO_PW])
    # The secret straddles the cut: its head must not survive in the kept part.
    line = "x" * (4096 - 5) + SUDO_PW + "y" * 10000 + "\nnext line\n"
    with open(tmp_path / "out", "wb") as fh:
        w = ItemWriter(r, fh)
        for i in range(0, len(line), 1000):
            w.write(line[i:i + 1000].encode())
        w.close()
    out = (tmp_path / "out").read_text()
    assert SUDO_PW[:5] not in out and "line cut at" in out and out.endswith("next line\n") and w.cut_lines == 1


# -- the bundle ------------------------------------------------------------------------------------------

def test_bundle_holds_journals_redacted_files_and_a_true_manifest(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1", "n2"])
    n1 = node(fleet, "n1", {"etcd.service": etcd_journal(200), "containerd.service": b"containerd up\n",
                            "kernel": b"kernel: oom\n"}, hostile_files())
    n2 = node(fleet, "n2", {"etcd.service": etcd_journal(50, "n2"), "kubelet.service": b"kubelet ok\n"},
              {"/var/log/pods/kube-system_etcd-n2_1/etcd/0.log": b"pod says hi\n",
               "/var/log/pods/default_app_2/app/0.log": b"not collected\n"})
    out = tmp_path / "bundle.tar.gz"
    result = collect(cluster(), RunOptions(), out, CollectOptions(chunk=1000), factory=fleet.factory)
    members = unpack(out)
    manifest = json.loads(members["manifest.json"])

    assert "line 199 applied" in members["n1/journal/etcd.service.log"].decode()
    assert members["n1/journal/containerd.service.log"] == b"containerd up\n"
    assert members["n2/journal/kubelet.service.log"] == b"kubelet ok\n"
    assert members["n1/kernel.log"] == b"kernel: oom\n"
    assert members["n2/pods/kube-system_etcd-n2_1/etcd/0.log"] == b"pod says hi\n"
    assert not any("default_app" in m for m in members)
    assert "authorization" in members["n1/files/etc/containerd/certs.d/reg.internal:5000/hosts.toml"].decode()
    assert "ETCD_KEY_FILE=/etc/kubernetes/pki/etcd/server.key" in members["n1/files/etc/etcd.env"].decode()
    assert {"kubexm/cluster.yaml", "kubexm/runs.json", "kubexm/audit.jsonl"} <= set(members)
    # Private keys and password files are never copied, and the manifest says why.
    assert not any(m.endswith((".key", "-key.pem", "htpasswd")) for m in members)
    n1_items = {i["item"]: i for i in manifest["nodes"]["n1"]["items"]}
    assert n1_items["file /etc/kubernetes/pki/ca.key"]["path"] is None
    assert "never copied" in n1_items["file /etc/kubernetes/pki/etcd/server-key.pem"]["note"]
    assert "never copied" in n1_items["file /etc/kubexm/registry/htpasswd"]["note"]
    # Nothing secret anywhere in the bundle, whatever form it took on the node.
    blob = b"\n".join(members.values())
    for secret in (SUDO_PW, REG_PW, 'reg\\"pw\\\\77', TOKEN, "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMx",
                   base64.b64encode(PRIVATE_KEY.encode()).decode()[:40], "cHVsbGVyOnJlZyJwd1w3Nw", "$2y$05$abcdef"):
        assert secret.encode() not in blob, secret
    # The manifest's size and sha256 are those of the members, for every item of every node.
    for rep in manifest["nodes"].values():
        assert rep["reachable"] and rep["window"] == {"since": 1764730000 - 7200, "until": 1764730001}
        for item in rep["items"]:
            if item["path"]:
                data = members[item["path"].split("/", 1)[1]]
                assert (item["size"], item["sha256"]) == (len(data), hashlib.sha256(data).hexdigest()), item
                assert item["truncated"] is False and item["error"] is None
    assert "crio.service" in manifest["nodes"]["n2"]["absent_units"]
    assert result.complete and out.stat().st_mode & 0o077 == 0
    assert_only_reads(n1)
    assert_only_reads(n2)


def test_caps_keep_the_newest_log_lines_and_note_what_was_cut(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1", "n2"])
    journal = etcd_journal(40000)  # ~2.6 MB
    node(fleet, "n1", {"etcd.service": journal}, {"/etc/kubernetes/big.yaml": b"a: b\n" * 100000})
    node(fleet, "n2", {"etcd.service": journal})
    out = tmp_path / "b.tar.gz"
    opts = CollectOptions(max_item=300_000, max_size=2_000_000, chunk=64 << 10)
    collect(cluster(), RunOptions(nodes=["n1"]), out, opts, factory=fleet.factory)
    members = unpack(out)
    manifest = json.loads(members["manifest.json"])
    log = members["n1/journal/etcd.service.log"].decode()
    assert "line 39999 applied" in log and "line 0 applied" not in log
    assert len(log) <= 300_000 and log.startswith("2026-12-03T")  # whole lines only
    item = next(i for i in manifest["nodes"]["n1"]["items"] if i["item"] == "journal etcd.service")
    assert item["truncated"] and item["source_bytes"] == len(journal) and "--max-item-size" in item["note"]
    big = members["n1/files/etc/kubernetes/big.yaml"]
    assert len(big) == 300_000 and big.startswith(b"a: b\n")
    assert any("journal etcd.service" in c for c in manifest["cut"]) and "n2" not in manifest["nodes"]

    # The whole bundle's cap: items past it are left out and said so.
    small = tmp_path / "small.tar.gz"
    collect(cluster(), RunOptions(), small, CollectOptions(max_item=300_000, max_size=350_000, chunk=64 << 10),
            factory=fleet.factory)
    manifest = json.loads(unpack(small)["manifest.json"])
    assert manifest["source_bytes_read"] <= 350_000
    left_out = [i for rep in manifest["nodes"].values() for i in rep["items"] if i["note"] and "left out" in i["note"]]
    assert left_out and all(i["path"] is None for i in left_out)


def test_a_50mb_journal_is_streamed_to_disk_in_bounded_memory(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1"])
    line = b"2026-12-03T02:00:00+0000 n1 etcd[42]: " + b"applied index entry with some padding " * 12 + b"\n"
    journal = line * (50 * (1 << 20) // len(line))
    node(fleet, "n1", {"etcd.service": journal})
    out = tmp_path / "big.tar.gz"
    tracemalloc.start()
    try:
        collect(cluster(), RunOptions(nodes=["n1"]), out,
                CollectOptions(max_item=64 << 20, max_size=100 << 20, chunk=1 << 20),
                factory=fleet.factory)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 12 << 20, f"peak {peak >> 20} MiB for a {len(journal) >> 20} MiB journal"
    with tarfile.open(out) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("n1/journal/etcd.service.log"))
        digest = hashlib.sha256()
        fh = tar.extractfile(member)
        assert fh is not None
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    assert member.size == len(journal) and digest.hexdigest() == hashlib.sha256(journal).hexdigest()


def test_an_unreachable_node_is_named_and_the_others_are_collected(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1", "n2"])
    node(fleet, "n1", {"etcd.service": b"fine\n"})
    fleet["n2"].down = True
    result = collect(cluster(), RunOptions(), tmp_path / "b.tar.gz", factory=fleet.factory)
    manifest = json.loads(unpack(tmp_path / "b.tar.gz")["manifest.json"])
    assert manifest["nodes"]["n2"]["reachable"] is False and "connection refused" in manifest["nodes"]["n2"]["error"]
    assert manifest["nodes"]["n1"]["reachable"] and not result.complete


def test_nothing_is_left_behind_when_collection_fails(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1", "n2"])
    node(fleet, "n1", {"etcd.service": b"fine\n"})

    def broken(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        raise KeyboardInterrupt  # Ctrl-C half way through

    fleet["n1"].handlers.insert(0, (re.compile(r"journalctl -u etcd"), broken))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(KeyboardInterrupt):
        collect(cluster(), RunOptions(nodes=["n1"]), out_dir / "b.tar.gz", factory=fleet.factory)
    assert list(out_dir.iterdir()) == []


def test_units_are_those_the_steps_install() -> None:
    from kubexm.steps import cert_timer, etcd, kubernetes, registry, runtime

    wanted = {Path(etcd.UNIT_FILE).name, Path(kubernetes.KUBELET_UNIT).name, *kubernetes.RUNTIME_UNITS.values(),
              Path(runtime.CRI_DOCKER_SOCKET).name, f"{registry.UNIT}.service", Path(cert_timer.SERVICE_FILE).name,
              Path(cert_timer.TIMER_FILE).name, "haproxy.service", "keepalived.service", "docker.service",
              "containerd.service"}
    assert wanted <= set(logs.UNITS)
    for path in (etcd.ENV_FILE, runtime.CONFIG, runtime.CRICTL, runtime.CRIO_AUTH, cert_timer.ENV_FILE):
        assert any(path == p or path.startswith(p + "/") for p in logs.CONFIG_PATHS), path


def test_sizes_and_durations() -> None:
    assert parse_size("200M") == 200 << 20 and parse_size("1G") == 1 << 30 and parse_size("512k") == 512 << 10
    assert parse_duration("2h") == 7200 and parse_duration("1h30m") == 5400 and parse_duration("10m") == 600
    for bad in ("", "2 hours", "-1h", "h"):
        with pytest.raises(UsageError):
            parse_duration(bad)
    with pytest.raises(UsageError):
        parse_size("lots")


# -- following -------------------------------------------------------------------------------------------

def journal_host(host: MemoryHost, entries: list[str]) -> None:
    """A node whose etcd journal grows by one entry per poll; cursors are entry numbers."""

    def reply(h: MemoryHost, m: re.Match[str], stdin: bytes | None) -> tuple[int, str, str]:
        words = shlex.split(m.string.split("; ", 1)[1])
        after = next((w.split("=", 1)[1] for w in words if w.startswith("--after-cursor=")), None)
        if after is None:
            n = int(words[words.index("-n") + 1])
            shown = list(range(max(0, len(entries) - n), len(entries)))
        else:
            shown = list(range(int(after) + 1, len(entries)))
        entries.append(f"{h.name} etcd: entry {len(entries)} password={SUDO_PW}")
        body = "".join(f"{entries[i]}\n" for i in shown)
        return 0, f"1764730000\n{body}" + (f"-- cursor: {shown[-1]}\n" if shown else ""), ""

    host.on(r"^date \+%s; journalctl ", reply)


def test_follow_prefixes_each_node_reads_only_new_lines_and_redacts() -> None:
    fleet = MemoryFleet(["n1", "n2"])
    for name in ("n1", "n2"):
        journal_host(fleet[name], [f"{name} etcd: old {i}" for i in range(3)])
    seen: list[tuple[str, str]] = []

    async def go() -> None:
        task = asyncio.ensure_future(follow_unit(cluster(), RunOptions(), "etcd", lambda n, line: seen.append((n, line)),
                                                 lines=2, follow=True, interval=0.01, factory=fleet.factory))
        while sum(1 for n, _ in seen if n == "n2") < 6 or sum(1 for n, _ in seen if n == "n1") < 6:
            await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(go(), 30))
    for name in ("n1", "n2"):
        mine = [line for n, line in seen if n == name]
        assert mine[:2] == [f"{name} etcd: old 1", f"{name} etcd: old 2"]  # --lines 2
        numbers = [int(line.split("entry ")[1].split()[0]) for line in mine[2:]]
        assert numbers == list(range(3, 3 + len(numbers)))  # each new entry once, in order
        assert all(SUDO_PW not in line for line in mine) and "password=<redacted>" in mine[2]
        assert any("--after-cursor=" in c for c in fleet[name].commands)
        assert_only_reads(fleet[name])


def test_a_bad_unit_name_is_refused() -> None:
    with pytest.raises(UsageError):
        asyncio.run(follow_unit(cluster(), RunOptions(), "--output=x", lambda n, line: None))


def test_no_follow_prints_once_and_returns() -> None:
    fleet = MemoryFleet(["n1", "n2"])
    for name in ("n1", "n2"):
        journal_host(fleet[name], [f"{name} etcd: old {i}" for i in range(5)])
    out = io.StringIO()
    failed = asyncio.run(follow_unit(cluster(), RunOptions(nodes=["n2"]), "etcd", lambda n, line: out.write(f"{n}|{line}\n"),
                                     lines=3, factory=fleet.factory))
    assert failed == {} and out.getvalue().splitlines() == [f"n2|n2 etcd: old {i}" for i in (2, 3, 4)]
    assert not [c for c in fleet["n1"].commands if "journalctl" in c]


def test_every_secret_field_name_passes_the_redactors_cheap_gate() -> None:
    from kubexm.diagnostics.redact import _GATE_WORDS
    from kubexm.state.redact import secret_field_names

    for name in secret_field_names():
        out = Redactor().redact(f"{name}: hunter2-value\n")
        assert "hunter2-value" not in out, (name, _GATE_WORDS)


def test_a_key_without_its_end_hides_its_body_but_not_the_rest_of_a_journal() -> None:
    body = "".join(f"{'QUJD' * 16}\n" for _ in range(250))
    text = "-----BEGIN PRIVATE KEY-----\n" + body + "etcd: later line stays readable\n"
    out = Redactor().redact(text)
    assert "QUJD" not in out and "later line stays readable" in out


@pytest.mark.parametrize("value", ["123456", "/hunter2", "yes-really", "p: w"])
def test_values_that_only_look_harmless_are_still_hidden(value: str) -> None:
    out = Redactor().redact(f"password: {value}\n")
    assert out == "password: <redacted>\n"


def test_garbage_from_a_node_fails_that_item_only(tmp_path: Path) -> None:
    fleet = MemoryFleet(["n1", "n2"])
    host = node(fleet, "n1", {"etcd.service": b"etcd fine\n"}, {"/etc/etcd.env": b"ETCD_NAME=n1\n"})
    host.handlers.insert(0, (re.compile(r"cat -- /etc/etcd\.env"), lambda h, m, s: (1, "a!", "sudo: something odd")))
    out = tmp_path / "b.tar.gz"
    result = collect(cluster(), RunOptions(nodes=["n1"]), out, factory=fleet.factory)
    items = {i.item: i for i in result.nodes["n1"].items}
    assert items["file /etc/etcd.env"].error and "not base64" in items["file /etc/etcd.env"].error
    assert unpack(out)["n1/journal/etcd.service.log"] == b"etcd fine\n" and not result.complete

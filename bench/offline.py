"""Workload ``offline``: `kubexm offline sync` against `skopeo sync`, the same images into a real registry.

    python bench/run.py --workloads offline [--iterations 5] [--smoke]
    python bench/offline.py [--images 24] [--iterations 5] [--smoke]

Builds (without network) a kubexm bundle of IMAGES locally made OCI images: random gzip'd tar layers of a few
MB, several layers each, images of a group sharing a base layer, every fourth one an amd64 + arm64 index.
Starts Debian's docker-registry (the CNCF distribution registry) on loopback with kubexm's own registry config,
TLS from a throwaway CA made by kubexm's PKI and htpasswd auth, its storage on a tmpfs. Then, alternating the
tools, ITERATIONS times each: wipe the registry (stop it, delete its data, start it again), time the first push,
then time a re-run that has nothing to push. Each run is a fresh process timed from start to exit.

skopeo 1.9's `sync` reads only the `docker`, `dir` and `yaml` transports (OCI layouts came to `sync` later), so
the bundle's images are first converted (untimed) with `skopeo copy --all --preserve-digests oci-archive:X
dir:Y` into a `dir` tree, which `skopeo sync --all --preserve-digests --src dir --dest docker` then pushes: the
one command a skopeo user runs to fill an air-gapped registry. After every push each image's tag is checked to
name the bundle's digest, so both tools are measured doing the same, complete work.
"""

from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import io
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from kubexm.lab.registry import BINARY as REGISTRY_BINARY
from kubexm.lab.registry import LocalRegistry
from kubexm.offline import bundle as kbundle
from kubexm.offline import oci
from kubexm.offline.registry_client import RegistryClient
from kubexm.offline.sync import target_repository

PY = sys.executable
KUBEXM = str(Path(PY).with_name("kubexm"))
USER = "bench"
PASSWORD = "bench-pw-not-secret"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
TOOLS = ("kubexm", "skopeo")
NAMESPACE = "kxbench"  # every image's repository is NAMESPACE/app-NN: skopeo sync names a dir image by its base name
PHASES = ("first", "rerun")
LABELS = {"first": "first push into an empty registry", "rerun": "re-run, nothing to push"}
TARGETS = {"first": 1.2, "rerun": 1.1}


@dataclass(frozen=True)
class Sizes:
    images: int
    base_kib: int  # each shared base layer
    own_kib: int  # an image's own layers are 1-3 times this


FULL = Sizes(images=24, base_kib=6 * 1024, own_kib=1024)
SMOKE = Sizes(images=20, base_kib=64, own_kib=16)


# -- images ----------------------------------------------------------------------------------------------------

def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


class _Layout:
    """One OCI image layout directory, written by hand (the format is a few JSON documents and blobs)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))

    def blob(self, data: bytes, media: str) -> dict[str, object]:
        digest = _digest(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return {"mediaType": media, "digest": digest, "size": len(data)}

    def name(self, ref: str, top: dict[str, object]) -> None:
        entry = {**top, "annotations": {oci.CONTAINERD_NAME: ref, oci.REF_NAME: ref.rsplit(":", 1)[1]}}
        (self.root / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [entry]}))


def _layer(rng: random.Random, name: str, size: int) -> tuple[bytes, str]:
    """A gzip'd tar holding one file of ``size`` random bytes: (blob, diff id)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = size, 0, 0o755
        tar.addfile(info, io.BytesIO(rng.randbytes(size)))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0), _digest(raw.getvalue())


def build_images(src: Path, sizes: Sizes, seed: int = 7) -> dict[str, str]:
    """``sizes.images`` OCI layouts under ``src``; returns reference -> top digest (manifest or index)."""
    rng = random.Random(seed)
    bases: dict[tuple[int, str], tuple[bytes, str]] = {}
    refs: dict[str, str] = {}
    for i in range(sizes.images):
        ref = f"example.com/{NAMESPACE}/app-{i:02d}:1.{i}"
        layout = _Layout(src / f"app-{i:02d}")
        arches = ("amd64", "arm64") if i % 4 == 3 else ("amd64",)
        children = []
        for arch in arches:
            group = i % 3  # images of a group share their base layer, as images built FROM one base do
            if (group, arch) not in bases:
                bases[(group, arch)] = _layer(rng, f"base-{group}-{arch}", sizes.base_kib * 1024)
            layers = [bases[(group, arch)]]
            layers += [_layer(rng, f"app-{i}-{arch}-{n}", sizes.own_kib * 1024 * (1 + (i + n) % 3)) for n in range(2)]
            config = json.dumps({"architecture": arch, "os": "linux", "config": {"Cmd": [f"/app-{i}"]},
                                 "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]}}).encode()
            doc = {"schemaVersion": 2, "mediaType": MANIFEST, "config": layout.blob(config, CONFIG),
                   "layers": [layout.blob(blob, LAYER) for blob, _ in layers]}
            desc = layout.blob(json.dumps(doc).encode(), MANIFEST)
            children.append({**desc, "platform": {"os": "linux", "architecture": arch}})
        if len(children) == 1:
            top = {k: v for k, v in children[0].items() if k != "platform"}
        else:
            top = layout.blob(json.dumps({"schemaVersion": 2, "mediaType": INDEX, "manifests": children}).encode(), INDEX)
        layout.name(ref, top)
        refs[ref] = str(top["digest"])
    return refs


def build_bundle(src: Path, out: Path) -> kbundle.Manifest:
    """The bundle as `kubexm offline package --images-from SRC` writes its images: one OCI archive per image
    (kubexm.offline.oci.export), listed in manifest.yaml, written by kubexm.offline.bundle.write."""
    staging = out.parent / "bundle-images"
    staging.mkdir(parents=True, exist_ok=True)
    items = []
    for ref, source in sorted(oci.scan(src).items()):
        safe = ref.replace("/", "_").replace(":", "_").replace("@", "_")
        archive = staging / f"{safe}.tar"
        digest, platforms = oci.export(source, ref, archive)
        sha = hashlib.sha256(archive.read_bytes()).hexdigest()
        items.append(kbundle.Item("image", ref.rsplit(":", 1)[1], "all" if len(platforms) != 1 else platforms[0],
                                  f"images/{safe}.tar", sha, archive.stat().st_size, str(source.path), name=ref,
                                  platforms=tuple(platforms), digest=digest))
    manifest = kbundle.Manifest(items, {"metadata": {"name": "kxbench-offline"}})
    kbundle.write(out, manifest, lambda item: staging / Path(item.file).name)
    shutil.rmtree(staging)
    return manifest


def skopeo_tree(bundle_file: Path, manifest: kbundle.Manifest, work: Path) -> Path:
    """The bundle's images as skopeo's ``dir`` transport, the format `skopeo sync --src dir` reads: TREE/REPO:TAG
    (sync pushes SOURCE/NAME:TAG to DEST/NAME:TAG)."""
    unpacked = work / "unpacked"
    kbundle.extract(bundle_file, unpacked)
    tree = work / "skopeo-dir"
    for item in manifest.items:
        repo, tag = target_repository(item.name, None)
        dest = tree / f"{repo}:{tag}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["skopeo", "copy", "--quiet", "--all", "--preserve-digests", f"oci-archive:{unpacked / item.file}",
                        f"dir:{dest}"], check=True, capture_output=True)
    shutil.rmtree(unpacked)
    return tree


# -- the registry ----------------------------------------------------------------------------------------------

class Registry(LocalRegistry):
    """kubexm's local registry (kubexm.lab.registry, as the tests run it), plus what skopeo needs to push to it:
    the CA as a cert directory and the credentials in an auth file (kubexm's come on stdin)."""

    def __init__(self, base: Path, data: Path) -> None:
        super().__init__(base, USER, PASSWORD, data=data, name="kxbench")
        self.certs = base / "skopeo-certs"  # skopeo's --dest-cert-dir: the CA as *.crt
        self.certs.mkdir(exist_ok=True)
        shutil.copy(self.ca_file, self.certs / "ca.crt")
        self.authfile = base / "auth.json"
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.authfile.write_text(json.dumps({"auths": {self.address: {"auth": token}}}))

    def check(self, expected: dict[str, str]) -> None:
        """Every image's tag names the bundle's digest (asked with kubexm's client, a plain HEAD)."""
        client = RegistryClient(self.address, username=USER, password=PASSWORD, ca_file=str(self.ca_file))
        try:
            for ref, digest in expected.items():
                repo, tag = target_repository(ref, None)
                got = client.manifest_digest(repo, tag or digest)
                if got != digest:
                    raise RuntimeError(f"after the push {repo}:{tag} is {got}, not {digest}")
        finally:
            client.close()


# -- runs ------------------------------------------------------------------------------------------------------

def _timed(argv: list[str], stdin: bytes = b"") -> float:
    start = time.monotonic()
    proc = subprocess.run(argv, input=stdin, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    elapsed = time.monotonic() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} ... failed ({proc.returncode}): {proc.stdout.decode()[-1500:]}")
    return elapsed


def commands(reg: Registry, bundle_file: Path, tree: Path) -> dict[str, tuple[list[str], bytes]]:
    return {
        "kubexm": ([KUBEXM, "offline", "sync", str(bundle_file), "--registry", reg.address, "--username", USER,
                    "--password-stdin", "--ca-file", str(reg.ca_file)], f"{PASSWORD}\n".encode()),
        "skopeo": (["skopeo", "sync", "--all", "--preserve-digests", "--src", "dir", "--dest", "docker",
                    "--dest-authfile", str(reg.authfile), "--dest-cert-dir", str(reg.certs), str(tree / NAMESPACE),
                    f"{reg.address}/{NAMESPACE}"],
                   b""),
    }


def missing_tools() -> list[str]:
    return [t for t in ("skopeo", REGISTRY_BINARY, KUBEXM) if not shutil.which(t)]


def run(iterations: int, smoke: bool, out: Path | None = None, images: int | None = None) -> int:
    """The workload: build, measure, print the table; 0 on success, 2 when a tool is missing."""
    sizes = SMOKE if smoke else FULL
    if images:
        sizes = Sizes(images, sizes.base_kib, sizes.own_kib)
    missing = missing_tools()
    if missing:
        print(f"bench offline: {', '.join(missing)} not found (apt-get install skopeo docker-registry)",
              file=sys.stderr)
        return 2
    work = Path("/var/tmp/kxbench-offline")
    # The registry's storage on a tmpfs: both tools write the same bytes, and a shared virtual disk's
    # write-back would add its own noise to whichever tool happens to run when it flushes.
    data = Path("/dev/shm/kxbench-offline-data") if Path("/dev/shm").is_dir() else work / "data"
    shutil.rmtree(work, ignore_errors=True)
    shutil.rmtree(data, ignore_errors=True)
    work.mkdir(parents=True)
    results: dict[str, dict[str, list[float]]] = {p: {t: [] for t in TOOLS} for p in PHASES}
    reg: Registry | None = None
    try:
        t0 = time.monotonic()
        expected = build_images(work / "src", sizes)
        bundle_file = work / "bundle.tar"
        manifest = build_bundle(work / "src", bundle_file)
        shutil.rmtree(work / "src")
        tree = skopeo_tree(bundle_file, manifest, work)
        blobs = {p.name: p.stat().st_size for p in tree.rglob("*") if p.is_file() and len(p.name) == 64}
        total_mb = sum(blobs.values()) / 1e6
        arches = sum(1 for i in manifest.items if len(i.platforms) > 1)
        what = (f"{len(expected)} images ({arches} of them amd64 + arm64), {len(blobs)} distinct blobs, "
                f"{total_mb:.1f} MB; bundle {bundle_file.stat().st_size / 1e6:.1f} MB")
        print(f"bench offline: {what} (built in {time.monotonic() - t0:.1f} s)", flush=True)
        reg = Registry(work / "registry", data)
        reg.start()
        argv = commands(reg, bundle_file, tree)
        for it in range(iterations):
            # Alternate which tool goes first, so neither always meets a warmer page cache or a quieter machine.
            for tool in (TOOLS if it % 2 == 0 else TOOLS[::-1]):
                reg.wipe()
                for phase in PHASES:
                    seconds = _timed(*argv[tool])
                    reg.check(expected)
                    results[phase][tool].append(seconds)
                    print(f"  offline {tool:6s} {phase:5s} run {it + 1}: {seconds:6.2f}s", flush=True)
    finally:
        if reg is not None:
            reg.stop()
        shutil.rmtree(data, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
    if out:
        out.write_text(json.dumps({"workload": "offline", "what": what, "iterations": iterations,
                                   "results": results}, indent=2))
    report(results, what, iterations)
    if smoke:
        print("(smoke size: this keeps the harness working; its ratios say nothing about the targets)")
    return 0


def report(results: dict[str, dict[str, list[float]]], what: str, iterations: int) -> None:
    load = os.getloadavg()
    print()
    print(f"offline: {what}; {iterations} iteration(s), median seconds; machine: {platform.node()} "
          f"({os.cpu_count()} CPUs, Python {platform.python_version()}, load {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})")
    print("| offline sync | kubexm | skopeo sync | kubexm / skopeo | target | |")
    print("| --- | --- | --- | --- | --- | --- |")
    for phase in PHASES:
        med = {t: statistics.median(v) for t, v in results[phase].items() if v}
        if len(med) < 2:
            continue
        ratio = med["kubexm"] / med["skopeo"]
        verdict = "met" if ratio <= TARGETS[phase] else "not met"
        print(f"| {LABELS[phase]} | {med['kubexm']:.2f} | {med['skopeo']:.2f} | {ratio:.2f}x | "
              f"<= {TARGETS[phase]:.1f}x | {verdict} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5)
    ap.add_argument("--images", type=int, default=None, help=f"how many images (default {FULL.images})")
    ap.add_argument("--smoke", action="store_true", help="tiny layers, 1 iteration: keeps the harness working")
    ap.add_argument("--out", type=Path, help="write the results as JSON here too")
    args = ap.parse_args()
    return run(1 if args.smoke else args.iterations, args.smoke, args.out, args.images)


if __name__ == "__main__":
    sys.exit(main())

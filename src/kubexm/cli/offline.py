"""``kubexm offline images|package|inspect|verify``: air-gapped installs from one bundle file.

Each sub-command is one function below; a new one (``sync``) is one more ``@app.command``.
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from kubexm.cli.common import ContextOpt, FileOpt, SetOpt, console, split
from kubexm.cli.consoles import err_console
from kubexm.errors import KubexmError, UsageError

app = typer.Typer(help="Build, inspect and verify offline bundles for air-gapped installs.", no_args_is_help=True)


class ListOutput(StrEnum):
    text = "text"
    json = "json"


ListOutputOpt = Annotated[ListOutput, typer.Option("--output", "-o", help="text or json")]
BundleArg = Annotated[Path, typer.Argument(help="the bundle file (.tar)", show_default=False)]


def size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _cluster(file: Path | None, context: str | None, overrides: list[str] | None) -> Any:
    from kubexm import api

    return api.resolve_cluster(file, context, overrides or ())


@app.command("images")
def images(file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None,
           output: ListOutputOpt = ListOutput.text) -> None:
    """The container images the cluster file needs (upstream reference, the name nodes pull, digest)."""
    from kubexm.offline.images import required_images

    target = _cluster(file, cluster, set_)
    found = required_images(target)
    if output is ListOutput.json:
        doc = {"images": [i.as_dict() for i in found.images], "unresolved": found.unresolved}
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        for image in found.images:
            sys.stdout.write(image.ref + (f"@{image.digest}" if image.digest else "") + "\n")
    for line in found.unresolved:
        err_console.print(f"warning: {line}", soft_wrap=True)
    if any(not i.exact for i in found.images):
        err_console.print("note: kubeadm's etcd, CoreDNS and pause tags come from kubexm's table for this minor; "
                          "`offline package` asks the kubeadm binary for the exact ones", soft_wrap=True)


@app.command("package")
def package(
    output: Annotated[Path, typer.Option("--output", "-o", help="the bundle file to write (.tar)", show_default=False)],
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None,
    arch: Annotated[str, typer.Option("--arch", help="architectures, comma-separated")] = "amd64",
    os_names: Annotated[str, typer.Option("--os", help="node OS releases for packages, comma-separated")] = "debian12",
    images_from: Annotated[Path | None, typer.Option(
        "--images-from", help="directory of OCI layouts, OCI archives or docker archives", show_default=False)] = None,
    skip: Annotated[str | None, typer.Option(
        "--skip", help="leave out kinds: binaries, debs, images, charts, python", show_default=False)] = None,
) -> None:
    """Collect binaries, OS packages, images, charts and kubexm's wheels into one verified bundle.

    A work directory next to the output (<bundle>.work) keeps what was fetched: a re-run fetches only what
    is missing."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    from kubexm import __version__
    from kubexm.offline import bundle
    from kubexm.offline.fetch import KINDS, Collector, Options, WorkDir

    arches = sorted(split(arch))
    bad = [a for a in arches if a not in ("amd64", "arm64")]
    if bad or not arches:
        raise UsageError(f"--arch {arch}: kubexm builds bundles for amd64 and arm64", hint="e.g. --arch amd64,arm64")
    skipped = split(skip)
    unknown = skipped - set(KINDS)
    if unknown:
        raise UsageError(f"--skip {', '.join(sorted(unknown))}: not a kind of content", hint=f"kinds: {', '.join(KINDS)}")
    if output.suffix != ".tar":
        raise UsageError(f"--output {output}: the bundle is an uncompressed tar", hint="name it e.g. bundle.tar")
    target = _cluster(file, cluster, set_)
    work = WorkDir(output.with_name(output.name + ".work"))
    options = Options(arches, sorted(split(os_names)), images_from, skipped)
    rows: list[tuple[str, Any, bool]] = []

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  console=err_console, transient=False) as progress:
        task = progress.add_task("collecting", total=None)

        def report(kind: str, item: Any, fetched: bool) -> None:
            rows.append((kind, item, fetched))
            progress.update(task, advance=item.size, description=f"{'fetched' if fetched else 'have'} {item.label()}")

        collector = Collector(target, work, options, report)
        items = collector.run()
        total = sum(i.size for i in {i.file: i for i in items}.values())
        write = progress.add_task(f"writing {output.name}", total=total)
        meta = {"cluster": target.name, "kubexm": __version__, "kubernetes": target.spec.kubernetes.version,
                "arches": arches, "os": [] if "debs" in skipped else options.os_names,
                "images": sorted({i.name for i in items if i.component == "image"})}
        digest = bundle.write(output, bundle.Manifest(items, meta), lambda i: work.blob(i.sha256),
                              lambda n: progress.update(write, advance=n))
    _summary(rows)
    for line in collector.unresolved:
        err_console.print(f"warning: {line}", soft_wrap=True)
    console().print(f"wrote {output} ({size(output.stat().st_size)}), sha256 {digest} (also in "
                    f"{bundle.sidecar(output).name})")


def _summary(rows: list[tuple[str, Any, bool]]) -> None:
    table = Table("KIND", "ITEMS", "FETCHED NOW", "SIZE", box=None)
    kinds: dict[str, list[int]] = {}
    for kind, item, fetched in rows:
        entry = kinds.setdefault(kind, [0, 0, 0])
        entry[0] += 1
        entry[1] += int(fetched)
        entry[2] += item.size
    for kind, (n, new, total) in kinds.items():
        table.add_row(kind, str(n), str(new), size(total))
    console().print(table)


@app.command("inspect")
def inspect(bundle_file: BundleArg, output: ListOutputOpt = ListOutput.text) -> None:
    """What a bundle holds (read from its manifest; `offline verify` checks every file)."""
    from kubexm.offline import bundle

    manifest = bundle.read_manifest(bundle_file)
    if output is ListOutput.json:
        doc = {**manifest.meta, "files": [i.as_dict() for i in manifest.items]}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
        return
    meta = manifest.meta
    console().print(f"bundle for cluster {meta.get('cluster', '?')}, Kubernetes {meta.get('kubernetes', '?')}, "
                    f"arches {', '.join(meta.get('arches') or [])}, os {', '.join(meta.get('os') or []) or '-'}, "
                    f"{len(manifest.items)} files, {size(manifest.total_size())}")
    table = Table("COMPONENT", "NAME", "VERSION", "ARCH", "SIZE", "SHA256", box=None)
    for i in manifest.items:
        table.add_row(i.component, i.name or "-", i.version, ",".join(i.platforms) or i.arch, size(i.size), i.sha256[:12])
    console().print(table)


@app.command("verify")
def verify(bundle_file: BundleArg, file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None) -> None:
    """Check every file of the bundle against its manifest, and with -f/-c whether it covers that cluster."""
    from kubexm.offline import bundle
    from kubexm.offline.coverage import missing

    manifest = bundle.verify(bundle_file)
    console().print(f"{bundle_file.name}: {len(manifest.items)} files intact ({size(manifest.total_size())})")
    if file is None and cluster is None:
        return
    target = _cluster(file, cluster, set_)
    name = file.name if file else f"cluster {target.name}"
    gaps = missing(manifest, target)
    if gaps:
        for gap in gaps[1:]:
            err_console.print(f"missing: {gap}", soft_wrap=True)
        raise KubexmError(f"{bundle_file.name} does not cover {name}: missing {gaps[0]}"
                          + (f" and {len(gaps) - 1} more (listed above)" if len(gaps) > 1 else ""),
                          hint="rebuild it with `kubexm offline package -f` for this cluster file")
    console().print(f"{bundle_file.name} covers {name}")


from kubexm.cli.offline_sync import offline_sync  # noqa: E402  (its own module: the registry client is heavy)

app.command("sync")(offline_sync)

"""``kubexm offline sync``: the command function; the ``offline`` verb's module attaches it as ``sync``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from kubexm.cli.common import DocOutput, console, emit, exit_with


def offline_sync(
    bundle: Annotated[Path, typer.Argument(help="the bundle (.tar) or a directory of OCI image layouts")],
    registry: Annotated[str, typer.Option("--registry", help="HOST[:PORT], optionally with a path prefix "
                                                             "(HOST:PORT/PREFIX)")],
    namespace: Annotated[str | None, typer.Option("--namespace", help="put every image under this project "
                                                  "(Harbor-style; as spec.registry.namespaceOverride)")] = None,
    username: Annotated[str | None, typer.Option("--username", "-u", help="registry user")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="read the password from the first "
                                                 "line of stdin (never from the command line)")] = False,
    ca_file: Annotated[Path | None, typer.Option("--ca-file", help="the registry's CA certificate (PEM), e.g. "
                                                 "$KUBEXM_HOME/clusters/NAME/pki/registry/ca.crt")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="do not verify the registry's TLS certificate "
                                           "(or use plain HTTP)")] = False,
    parallel: Annotated[int, typer.Option("--parallel", min=1, max=64, help="requests at once")] = 8,
    output: Annotated[DocOutput | None, typer.Option("--output", "-o", help="json or yaml instead of the table")]
    = None,
) -> None:
    """Push every image of the bundle (every architecture) into a registry; skips what it already has by
    digest, verifies each pushed manifest's digest, and resumes where an interrupted run stopped."""
    from kubexm.errors import KubexmError, UsageError
    from kubexm.offline.sync import ImageResult, sync_bundle
    from kubexm.spec.fields import RegistryPrefix, RepositoryPath

    _check(RegistryPrefix, registry, "--registry", "e.g. --registry registry.example.com:5000")
    if namespace is not None:
        _check(RepositoryPath, namespace, "--namespace", "e.g. --namespace library")
    if ca_file and insecure:
        raise UsageError("--ca-file and --insecure contradict each other", hint="pass one of them")
    if password_stdin and not username:
        raise UsageError("--password-stdin needs --username", hint="add --username USER")
    if username and not password_stdin:
        raise UsageError("--username needs --password-stdin (a password on the command line would show in `ps`)",
                         hint="echo \"$PASSWORD\" | kubexm offline sync ... --username USER --password-stdin")
    password = None
    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: stdin held no password", hint="pipe the password into the command")
    if ca_file is not None and not ca_file.is_file():
        raise UsageError(f"--ca-file {ca_file}: no such file", hint="give the registry's CA certificate (PEM)")

    out = console()
    quiet = output is not None

    def progress(result: ImageResult) -> None:
        if not quiet:
            mark = {"pushed": "[green]+[/]", "present": "[dim]=[/]"}.get(result.status, "[red]![/]")
            out.print(f"{mark} {result.target} ({result.status}{': ' + result.error if result.error else ''})",
                      markup=True, highlight=False)

    report = sync_bundle(bundle, registry, namespace=namespace, username=username, password=password,
                         ca_file=str(ca_file) if ca_file else None, insecure=insecure, parallel=parallel,
                         progress=progress)
    if output is not None:
        emit(report.as_dict(), output)
    else:
        counts = {s: sum(1 for i in report.images if i.status == s) for s in ("pushed", "present", "failed")}
        out.print(f"{len(report.images)} images: {counts['pushed']} pushed, {counts['present']} already there, "
                  f"{counts['failed']} failed; blobs: {report.blobs_uploaded} uploaded "
                  f"({report.bytes_uploaded / 1e6:.1f} MB), {report.blobs_mounted} mounted, "
                  f"{report.blobs_present} already there", highlight=False)
    if report.failed:
        first = report.failed[0]
        more = f" (and {len(report.failed) - 1} more)" if len(report.failed) > 1 else ""
        err = KubexmError(f"{first.source}: {first.error}{more}",
                          hint="fix the cause and re-run: images already pushed are skipped")
        if output is not None:
            from kubexm.cli.consoles import err_console

            err_console.print(f"error: {err.message}", markup=False, soft_wrap=True)
            exit_with(1)
        raise err


def _check(kind: Any, value: str, flag: str, example: str) -> None:
    """A flag's value checked by the same rule as the cluster file's field of that kind."""
    from pydantic import TypeAdapter, ValidationError

    from kubexm.errors import UsageError

    try:
        TypeAdapter(kind).validate_python(value)
    except ValidationError as exc:
        raise UsageError(f"{flag} {value!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}",
                         hint=example) from None

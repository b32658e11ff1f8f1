"""``kubexm upgrade cluster`` and ``kubexm upgrade etcd``."""

from __future__ import annotations

from typing import Annotated

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    DryRunOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    YesOpt,
    confirm_and_run,
    run_options,
)
from kubexm.errors import UsageError

app = typer.Typer(help="Upgrade Kubernetes (one minor version at a time) or etcd.", no_args_is_help=True)


@app.command("cluster")
def upgrade_cluster(
    to_version: Annotated[str, typer.Option("--to-version", help="target Kubernetes version, e.g. v1.34.3")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    plan: Annotated[bool, typer.Option("--plan", help="print the ordered plan and change nothing")] = False,
    node_concurrency: Annotated[int, typer.Option("--node-concurrency", min=1, help="workers upgraded at once")] = 1,
    control_plane_only: Annotated[bool, typer.Option("--control-plane-only")] = False,
    workers_only: Annotated[bool, typer.Option("--workers-only")] = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Control planes first, one at a time (kubeadm upgrade apply, then node); then workers
    --node-concurrency at a time with cordon, drain, upgrade, kubelet restart and uncordon."""
    if control_plane_only and workers_only:
        raise UsageError("--control-plane-only and --workers-only exclude each other", hint="pick one")
    target = api.resolve_cluster(file, cluster)
    from kubexm.pki.rotation import refuse_during_rotation

    refuse_during_rotation(target, "upgrade")
    from pydantic import ValidationError

    from kubexm.spec.models import Kubernetes

    try:
        version = Kubernetes.model_validate({"version": to_version}).version
    except ValidationError:
        raise UsageError(f"--to-version {to_version} is not a version", hint="write it like v1.34.3") from None
    running = _running_version(target.name, target.spec.kubernetes.version, version)
    if running:
        from kubexm.steps.upgrade import skew_problem

        problem = skew_problem(running, version)
        if problem:  # refused before anything connects; a real run checks the API server's version again
            raise UsageError(f"cannot upgrade {target.name}: {problem}")
    upgraded = target.model_copy(deep=True)
    upgraded.spec.kubernetes.version = version
    tags = "plan" if plan else ("control-plane" if control_plane_only else "worker" if workers_only else None)
    options = run_options(dry_run=dry_run or plan, offline=plan, tags=tags, accept_keys=accept_new_host_key,
                          command_timeout=command_timeout)
    options.extra.update({"node_concurrency": node_concurrency, "control_plane_only": control_plane_only,
                          "workers_only": workers_only, "from_version": running})
    # The store keeps the new version once the control planes run it (the whole upgrade, or its
    # control-plane half), so the next upgrade's skew is judged from there.
    confirm_and_run(upgraded, "UpgradeClusterPipeline", f"upgrade {target.name} to {version}", options, yes=yes,
                    log_format=log_format, remember=not workers_only, source=file)


def _running_version(name: str, in_file: str, target: str) -> str | None:
    """The version the cluster runs, as far as this machine knows: the spec the state store recorded as last
    applied; without a record, the cluster file's, unless it already names the target (then unknown)."""
    stored = api.applied_version(name)
    if stored:
        return stored
    return in_file if in_file != target else None


@app.command("etcd")
def upgrade_etcd(
    to_version: Annotated[str, typer.Option("--to-version", help="target etcd version, e.g. v3.5.17")],
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """kubexm's etcd, one member at a time (new binaries from the asset source, restart, every member healthy
    before the next). Keeps a rollback point first: `kubexm rollback cluster` goes back to it."""
    from kubexm.cli.common import checked
    from kubexm.spec.fields import Version
    from kubexm.steps.upgrade import parse_version

    target = api.resolve_cluster(file, cluster)
    from kubexm.pki.rotation import refuse_during_rotation

    refuse_during_rotation(target, "upgrade etcd of")
    if target.spec.etcd.type != "kubexm":
        raise UsageError(f"cluster {target.name} has etcd type {target.spec.etcd.type}; kubexm upgrades only the "
                         "etcd it runs (type kubexm)")
    version = checked(to_version, Version, "--to-version")
    running = _applied_etcd_version(target.name) or target.spec.etcd.version
    try:
        parse_version(version)
    except ValueError:
        raise UsageError(f"--to-version {to_version} is not a version", hint="write it like v3.5.17") from None
    if parse_version(version) == parse_version(running):
        raise UsageError(f"etcd of {target.name} already runs {running}; nothing to upgrade")
    if parse_version(version) < parse_version(running):
        raise UsageError(f"{version} is older than the running {running}; go back with `kubexm rollback cluster`")
    upgraded = target.model_copy(deep=True)
    upgraded.spec.etcd.version = version
    options = run_options(dry_run=dry_run, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["from_version"] = running
    confirm_and_run(upgraded, "UpgradeEtcdPipeline", f"upgrade etcd of {target.name} from {running} to {version}, "
                    "one member at a time", options, yes=yes, log_format=log_format, remember=True, source=file)


def _applied_etcd_version(name: str) -> str | None:
    """The etcd version of the spec the state store last recorded as applied (None: no record)."""
    from kubexm.api import applied_field

    return applied_field(name, "spec", "etcd", "version")

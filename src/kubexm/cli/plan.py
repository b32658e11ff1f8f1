"""``kubexm plan cluster|add-nodes|delete-nodes|upgrade|config-sync``.

One sub-command per operation, named like the command it plans (``plan upgrade --to-version`` for ``upgrade
cluster --to-version``), each with that command's own flags: a flag that means nothing for an operation is
refused by the parser instead of ignored. Exit codes: 0 planned and within policy; 5 a policy violation at or
above --policy-fail-on; 1 the dry run failed on a node (the plan stops short; printed with it); 2 a usage,
cluster-file or rule-file error; 3 a host could not be reached or authenticated.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    SetOpt,
    SkipTagsOpt,
    TagsOpt,
    exit_with,
    match_nodes,
    run_options,
)

app = typer.Typer(help="The impact of a change before it is made: diffs, restarts, policy and cost.", no_args_is_help=True)


class PlanOutput(StrEnum):
    table = "table"
    json = "json"
    markdown = "markdown"


class FailOn(StrEnum):
    error = "error"
    warn = "warn"


OutputOpt = Annotated[PlanOutput, typer.Option("--output", "-o", help="format: table, json or markdown")]
PolicyDirOpt = Annotated[list[Path] | None, typer.Option(
    "--policy-dir", metavar="DIR", help="directory of *.yaml CEL rule files added to the built-in pack (repeatable)")]
FailOnOpt = Annotated[FailOn, typer.Option("--policy-fail-on", help="exit 5 on violations of this severity or worse")]
PricesOpt = Annotated[Path | None, typer.Option(
    "--prices", metavar="FILE", help="YAML price table (currency, defaultMonthly, instanceTypes); else spec.cost")]
MinCertDaysOpt = Annotated[int, typer.Option("--min-cert-days", min=0, help="policy: certificates valid this long")]
OfflineOpt = Annotated[bool, typer.Option("--offline", help="contact no node: policy, cost and the planned steps")]


def _plan(name: str, file: Path | None, cluster: str | None, set_: list[str] | None, output: PlanOutput,
          policy_dir: list[Path] | None, fail_on: FailOn, prices: Path | None, min_cert_days: int, offline: bool,
          tags: str | None, skip_tags: str | None, accept_keys: list[str] | None, command_timeout: float | None,
          *, nodes: str | None = None, role: str = "worker", to_version: str | None = None) -> None:
    from kubexm import api
    from kubexm.governance.operations import make_plan, operation
    from kubexm.governance.policy import POLICY_EXIT, fails
    from kubexm.governance.render import RENDERERS

    target = api.resolve_cluster(file, cluster, set_ or ())
    pipeline = {"cluster": "CreateClusterPipeline", "config-sync": "ConfigSyncPipeline",
                "upgrade": "UpgradeClusterPipeline"}.get(name)
    options = run_options(dry_run=True, offline=offline, tags=tags, skip_tags=skip_tags, accept_keys=accept_keys,
                          command_timeout=command_timeout, pipeline=pipeline)
    names = match_nodes(target, nodes) if nodes else None
    applied = api.applied_version(target.name)
    if to_version is not None:
        to_version = _version(to_version)
        if not applied and target.spec.kubernetes.version != to_version:
            applied = target.spec.kubernetes.version  # as `upgrade cluster` judges it without a stored record
    op = operation(name, target, options, nodes=names, role=role, to_version=to_version, applied_version=applied)
    result = make_plan(op, policy_dirs=policy_dir or [], prices=prices, min_cert_days=min_cert_days,
                       applied_version=applied)
    sys.stdout.write(RENDERERS[output.value](result))
    # A violation names its cause (the operation refusing a version skew fails the dry run too): it comes first.
    if fails(result.violations, fail_on.value):
        exit_with(POLICY_EXIT)
    if result.impact.failed:
        exit_with(1)


def _version(value: str) -> str:
    from pydantic import ValidationError

    from kubexm.errors import UsageError
    from kubexm.spec.models import Kubernetes

    try:
        return Kubernetes.model_validate({"version": value}).version
    except ValidationError:
        raise UsageError(f"--to-version {value} is not a version", hint="write it like v1.34.3") from None


@app.command("cluster")
def plan_cluster(
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None, output: OutputOpt = PlanOutput.table,
    policy_dir: PolicyDirOpt = None, policy_fail_on: FailOnOpt = FailOn.error, prices: PricesOpt = None,
    min_cert_days: MinCertDaysOpt = 30, offline: OfflineOpt = False, tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None, accept_new_host_key: AcceptKeyOpt = None, command_timeout: CommandTimeoutOpt = None,
) -> None:
    """What `create cluster` would change: per node the files (unified diffs, secrets masked), restarts, drains
    and etcd membership changes; the risks; policy violations; the monthly cost and its change."""
    _plan("cluster", file, cluster, set_, output, policy_dir, policy_fail_on, prices, min_cert_days, offline, tags,
          skip_tags, accept_new_host_key, command_timeout)


@app.command("add-nodes")
def plan_add_nodes(
    nodes: Annotated[str, typer.Option("--nodes", help="hosts of the cluster file to add, comma-separated")],
    role: Annotated[str, typer.Option("--role", help="worker, control-plane or etcd")] = "worker",
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None, output: OutputOpt = PlanOutput.table,
    policy_dir: PolicyDirOpt = None, policy_fail_on: FailOnOpt = FailOn.error, prices: PricesOpt = None,
    min_cert_days: MinCertDaysOpt = 30, offline: OfflineOpt = False, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """What `add nodes` would change (the new nodes, and the balancers and etcd members it updates)."""
    from kubexm.errors import UsageError

    if role not in ("worker", "control-plane", "etcd"):
        raise UsageError(f"--role {role}: not a role kubexm adds", hint="use worker, control-plane or etcd")
    _plan("add-nodes", file, cluster, set_, output, policy_dir, policy_fail_on, prices, min_cert_days, offline, None,
          None, accept_new_host_key, command_timeout, nodes=nodes, role=role)


@app.command("delete-nodes")
def plan_delete_nodes(
    nodes: Annotated[str, typer.Option("--nodes", help="hosts to remove, comma-separated")],
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None, output: OutputOpt = PlanOutput.table,
    policy_dir: PolicyDirOpt = None, policy_fail_on: FailOnOpt = FailOn.error, prices: PricesOpt = None,
    min_cert_days: MinCertDaysOpt = 30, offline: OfflineOpt = False, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """What `delete nodes` would do: drains, etcd members leaving, and the cost without those hosts."""
    _plan("delete-nodes", file, cluster, set_, output, policy_dir, policy_fail_on, prices, min_cert_days, offline,
          None, None, accept_new_host_key, command_timeout, nodes=nodes)


@app.command("upgrade")
def plan_upgrade(
    to_version: Annotated[str, typer.Option("--to-version", help="target Kubernetes version, e.g. v1.34.3")],
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None, output: OutputOpt = PlanOutput.table,
    policy_dir: PolicyDirOpt = None, policy_fail_on: FailOnOpt = FailOn.error, prices: PricesOpt = None,
    min_cert_days: MinCertDaysOpt = 30, offline: OfflineOpt = False, accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """What `upgrade cluster --to-version` would do: restarts and drains node by node; skew checked by policy."""
    _plan("upgrade", file, cluster, set_, output, policy_dir, policy_fail_on, prices, min_cert_days, offline, None,
          None, accept_new_host_key, command_timeout, to_version=to_version)


@app.command("config-sync")
def plan_config_sync(
    file: FileOpt = None, cluster: ContextOpt = None, set_: SetOpt = None, output: OutputOpt = PlanOutput.table,
    policy_dir: PolicyDirOpt = None, policy_fail_on: FailOnOpt = FailOn.error, prices: PricesOpt = None,
    min_cert_days: MinCertDaysOpt = 30, offline: OfflineOpt = False, tags: TagsOpt = None,
    skip_tags: SkipTagsOpt = None, accept_new_host_key: AcceptKeyOpt = None, command_timeout: CommandTimeoutOpt = None,
) -> None:
    """What `config sync` would apply to the running cluster, node by node."""
    _plan("config-sync", file, cluster, set_, output, policy_dir, policy_fail_on, prices, min_cert_days, offline,
          tags, skip_tags, accept_new_host_key, command_timeout)

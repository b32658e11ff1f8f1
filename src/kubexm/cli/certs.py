"""``kubexm certs check|renew|rotate-ca``."""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated

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
    command_line,
    confirm,
    exit_with,
    finish,
    run_options,
    views,
)
from kubexm.errors import UsageError

if TYPE_CHECKING:
    from kubexm.spec.models import Cluster

app = typer.Typer(help="Certificates: read back from every node, renewed without downtime.", no_args_is_help=True)


class CheckOutput(StrEnum):
    table = "table"
    json = "json"


CHECK_EXIT = {"expiring": 3, "expired": 4}


@app.command("check")
def certs_check(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    warn_days: Annotated[int, typer.Option("--warn-days", min=0, help="warn when fewer days are left")] = 30,
    output: Annotated[CheckOutput, typer.Option("--output", "-o", help="table, or json (stable keys)")] =
        CheckOutput.table,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Every certificate and kubeconfig kubexm placed, read from the nodes and compared with the local PKI.

    Per node and file: subject CN, issuer, the local CA it chains to (signature verified), SANs, expiry,
    days left, status, whether it differs from the local PKI's copy, and problems with their fix (SANs the
    spec now needs: `kubexm certs renew NAME`).

    -o json prints one document: {"cluster", "warn_days", "status": ok|expiring|expired,
    "hosts": {NAME: {"reachable", "error"}}, "certificates": [{"host", "name", "path", "kind", "subject_cn",
    "issuer", "chains_to", "sans", "not_after", "days_left", "status", "differs_from_local",
    "fingerprint_sha256", "problems"}]}; rows of host "deploy-machine" are the local PKI.

    Exit code: 0 all fine, 1 a host could not be read, 3 some expire within --warn-days, 4 some expired.
    """
    target = api.resolve_cluster(file, cluster)
    options = run_options(accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["warn_days"] = warn_days
    listeners, view = ([], None) if output is CheckOutput.json else views(log_format)
    outcome = api.run_pipeline(target, "CheckCertsPipeline", options, command_line=command_line(),
                               listeners=listeners)
    code = finish(outcome, view, log_format)
    doc = outcome.shared.get("certs_report")
    if output is CheckOutput.json and isinstance(doc, dict):
        import json

        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    unreachable = outcome.shared.get("certs_unreachable") or {}
    if unreachable:
        from kubexm.cli.consoles import err_console

        for name, why in sorted(dict(unreachable).items()):  # type: ignore[call-overload]
            err_console.print(f"error: {name} could not be read ({why})", markup=False, highlight=False)
        code = code or 1
    exit_with(code or CHECK_EXIT.get(str(outcome.shared.get("certs_worst")), 0))


@app.command("renew")
def certs_renew(
    names: Annotated[list[str] | None, typer.Argument(
        help="certificates to renew (default: all): etcd-server, etcd-peer, etcd-healthcheck-client, "
             "apiserver-etcd-client, apiserver, apiserver-kubelet-client, front-proxy-client, admin.conf, "
             "super-admin.conf, controller-manager.conf, scheduler.conf, kubelet.conf, kubelet-client, "
             "kubelet-serving, registry-server; or a group: etcd, control-plane, kubeconfigs, kubelet, registry",
        show_default=False)] = None,
    all_: Annotated[bool, typer.Option("--all", help="every leaf certificate and kubeconfig")] = False,
    plan: Annotated[bool, typer.Option("--plan", help="change nothing; print what would be renewed per node")] = False,
    file: FileOpt = None,
    cluster: ContextOpt = None,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Re-issue leaves and kubeconfigs from the same CAs (same keys, same SANs plus those the spec now adds),
    place them atomically, and restart what uses them one node at a time: etcd only while quorum holds,
    control-plane static pods with the node's API server /readyz checked before the next node.

    A node that cannot be reached is named and the others complete; run the same command again to finish it
    (nothing is re-issued twice, nodes already renewed are skipped).
    """
    from kubexm.pki.inventory import resolve_names

    if all_ and names:
        raise UsageError("give --all or certificate names, not both")
    selected = resolve_names(names or ["all"])
    target = api.resolve_cluster(file, cluster)
    _refuse_unusable_cas(target, selected)
    dry = dry_run or plan
    confirm(f"renew {'all certificates' if not names else ', '.join(selected)} of {target.name} and restart what "
            "uses them node by node", yes=yes, dry_run=dry)
    options = run_options(dry_run=dry, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["renew"] = selected
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, "RenewCertsPipeline", options, command_line=command_line(),
                               listeners=listeners)
    exit_with(finish(outcome, view, log_format))


class Component(StrEnum):
    kubernetes = "kubernetes"
    etcd = "etcd"
    front_proxy = "front-proxy"


@app.command("rotate-ca")
def certs_rotate_ca(
    component: Annotated[Component, typer.Option("--component", help="which CA: kubernetes (ca), etcd (etcd/ca) or "
                                                                     "front-proxy (front-proxy-ca)")] =
        Component.kubernetes,
    plan: Annotated[bool, typer.Option("--plan", help="change nothing, connect nowhere; print the phases and the nodes "
                                                      "of each, in order")] = False,
    file: FileOpt = None,
    cluster: ContextOpt = None,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """Rotate a CA in three phases, each one node at a time with the restarts and health checks of `certs renew`:

    1. every node trusts the old and the new CA; 2. every leaf and kubeconfig is re-issued from the new CA and
    placed; 3. every node trusts the new CA only, and the old CA is removed from this machine.

    Refused while an etcd member is unhealthy. Progress is kept in ca-rotation.json in the cluster's PKI
    directory: an interrupted rotation resumes at its phase and node when the same command runs again.
    """
    from kubexm.pki import rotation
    from kubexm.steps.etcd import cluster_pki

    target = api.resolve_cluster(file, cluster)
    record = rotation.load(cluster_pki(target))
    if record is not None and record.component != component.value:
        raise UsageError(f"a rotation of the {record.component} CA is in progress (phase {record.phase}); one CA "
                         "rotates at a time",
                         hint=f"finish it first: `kubexm certs rotate-ca --component {record.component}`")
    if not plan:
        what = "resume" if record is not None else "start"
        confirm(f"{what} the rotation of the {component.value} CA of {target.name}, restarting what trusts it one "
                "node at a time", yes=yes, dry_run=False)
    options = run_options(dry_run=plan, offline=plan, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    options.extra["ca_component"] = component.value
    listeners, view = views(log_format)
    outcome = api.run_pipeline(target, "RotateCAPipeline", options, command_line=command_line(), listeners=listeners)
    exit_with(finish(outcome, view, log_format))


def _refuse_unusable_cas(cluster: Cluster, names: list[str]) -> None:
    """Before connecting anywhere: an expired local CA, or one whose key is gone, cannot sign renewals."""
    from kubexm.pki.inventory import node_inventory
    from kubexm.pki.renewal import check_ca
    from kubexm.steps.etcd import cluster_pki

    pki = cluster_pki(cluster)
    cas = {p.ca for h in cluster.spec.hosts for p in node_inventory(cluster, h.name)
           if p.name in names and p.ca and p.spec is not None}
    for ca in sorted(c for c in cas if pki.crt(c).is_file() or pki.key(c).is_file()):
        check_ca(pki, ca)

"""``kubexm scan``."""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer

from kubexm import api
from kubexm.cli.common import (
    AcceptKeyOpt,
    CommandTimeoutOpt,
    ContextOpt,
    FileOpt,
    LogFormat,
    LogFormatOpt,
    NodesOpt,
    YesOpt,
    command_line,
    confirm,
    console,
    exit_with,
    finish,
    run_options,
    views,
)

if TYPE_CHECKING:
    from kubexm.engine import RunOptions
    from kubexm.spec.models import Cluster

app = typer.Typer(help="Security scans of the nodes (CIS Kubernetes Benchmark).", no_args_is_help=True)


class ScanOutput(StrEnum):
    table = "table"
    json = "json"
    junit = "junit"


@app.command("cis")
def scan_cis(
    file: FileOpt = None,
    cluster: ContextOpt = None,
    nodes: NodesOpt = None,
    output: Annotated[ScanOutput, typer.Option("--output", "-o", help="table, json (stable keys) or junit (XML)")] =
        ScanOutput.table,
    fix: Annotated[bool, typer.Option("--fix", help="tighten the modes and owners of the files that failed, then "
                                                    "scan again (settings are reported with their cluster-file fix)")]
        = False,
    yes: YesOpt = False,
    log_format: LogFormatOpt = LogFormat.text,
    accept_new_host_key: AcceptKeyOpt = None,
    command_timeout: CommandTimeoutOpt = None,
) -> None:
    """The CIS Kubernetes Benchmark (v1.12) items that can be read from the nodes, judged per node.

    Control planes: modes and owners of the static pod manifests, kubeconfigs and PKI (1.1), the API server,
    controller manager and scheduler flags as written in their manifests (1.2-1.4). etcd members: the data
    directory (1.1.11-12) and client/peer TLS (2.x) from kubexm's /etc/etcd.env or the stacked etcd manifest.
    Every kubelet node: its unit, kubeconfig, CA and config.yaml files (4.1) and config.yaml plus its flags (4.2).
    Each node is read with one read-only command; nothing is changed without --fix.

    --fix changes only what a scan flagged and kubexm may fix: it removes permission bits beyond what the item
    allows and sets the owner, on exactly the paths that failed (shown first; asks, or needs --yes without a
    terminal), then scans again. Settings that kubexm generates are never patched on the nodes: the report
    names the cluster-file field that fixes each. Files kubexm itself writes with a mode the benchmark refuses
    are left too (its next run would undo a chmod) and listed as "kubexm_defaults".

    -o json prints one document: {"benchmark", "cluster", "status": PASS|WARN|FAIL, "summary": {STATUS: count},
    "hosts": {NAME: {"reachable", "error"}}, "results": [{"node", "id", "title", "status": PASS|FAIL|WARN|INFO,
    "found", "remediation", "kind": file|setting, "fixable_paths", "kubexm_defaults"}]}. -o junit prints JUnit XML
    (a testsuite per node; FAIL is a failure, WARN and INFO are skipped with the reason).

    Exit code: 0 every item passes (INFO items are not judged), 1 a node could not be read (first), 3 warnings
    (Manual items of the benchmark), 4 failures.
    """
    target = api.resolve_cluster(file, cluster)
    options = run_options(nodes=nodes, accept_keys=accept_new_host_key, command_timeout=command_timeout)
    doc, code = _scan(target, options, output, log_format)
    if fix and _fix(target, doc, options, output, log_format, yes=yes):
        doc, code = _scan(target, options, output, log_format)
    _print(doc, output)
    from kubexm.diagnostics.cis import exit_code

    if _report_gaps(doc):
        code = code or 1
    exit_with(code or exit_code(doc))


def _scan(target: Cluster, options: RunOptions, output: ScanOutput, log_format: LogFormat) -> tuple[dict[str, Any], int]:
    from kubexm.diagnostics.cis import SHARED_REPORT, scan_task
    from kubexm.errors import KubexmError

    task = scan_task()
    listeners, view = views(log_format) if output is ScanOutput.table else ([], None)
    outcome = api.execute(target, [(None, task)], options, name="ScanCis", command_line=command_line(),
                          listeners=listeners)
    code = finish(outcome, view, log_format)
    doc = outcome.shared.get(SHARED_REPORT)
    if not isinstance(doc, dict):
        raise KubexmError("the scan did not finish: no node could be judged", hint="see the failures above")
    return doc, code


def _print(doc: dict[str, Any], output: ScanOutput) -> None:
    from kubexm.diagnostics.cis import junit, public

    if output is ScanOutput.json:
        sys.stdout.write(json.dumps(public(doc), indent=2) + "\n")
    elif output is ScanOutput.junit:
        sys.stdout.write(junit(doc))


def _report_gaps(doc: dict[str, Any]) -> bool:
    """Nodes that could not be read (errors) and what the scan could not establish (notes); True if any node
    is missing."""
    from kubexm.cli.consoles import err_console

    down = sorted(name for name, state in doc["hosts"].items() if not state["reachable"])
    for name in down:
        err_console.print(f"error: {name} could not be read ({doc['hosts'][name]['error']})", markup=False,
                          highlight=False)
    for note in doc.get("notes", []):  # what the scan could not establish (also in -o json)
        err_console.print(f"note: {note}", markup=False, highlight=False)
    return bool(down)


def _fix(target: Cluster, doc: dict[str, Any], options: RunOptions, output: ScanOutput, log_format: LogFormat, *,
         yes: bool) -> bool:
    """Show the plan, ask, fix the files; True when something was changed (and a re-scan is due)."""
    from kubexm.cli.consoles import err_console
    from kubexm.diagnostics.cis import fix_plan, fix_task, kubexm_defaults, unfixed_settings
    from kubexm.steps.cis_fix import symbolic_removal

    out = console() if output is ScanOutput.table else err_console
    plan = fix_plan(doc)
    settings = unfixed_settings(doc)
    if settings:
        by_id: dict[str, tuple[str, list[str]]] = {}
        for r in settings:
            by_id.setdefault(r.id, (r.remediation, []))[1].append(r.node)
        out.print("Settings kubexm generates are not patched on the nodes; fix them in the cluster file:",
                  markup=False, highlight=False)
        for item, (remedy, names) in by_id.items():
            out.print(f"  {item} ({', '.join(names)}): {remedy}", markup=False, highlight=False)
    defaults = kubexm_defaults(doc)
    if defaults:
        out.print("Files kubexm itself writes with a mode the benchmark refuses are left as they are (its next run "
                  "would undo a chmod; kubexm's default must change):", markup=False, highlight=False)
        for r in defaults:
            for note in r.defaults:
                out.print(f"  {r.id} {r.node}: {note}", markup=False, highlight=False)
    if not plan:
        out.print("--fix: no file mode or owner to fix", markup=False, highlight=False)
        return False
    out.print("--fix will change:", markup=False, highlight=False)
    for node, wants in plan.items():
        for path, mode, owner in wants:
            actions = ([f"chown {owner}"] if owner else []) + ([f"chmod {symbolic_removal(mode)}"] if mode else [])
            out.print(f"  {node}: {' and '.join(actions)} {path}", markup=False, highlight=False)
    count = sum(len(w) for w in plan.values())
    confirm(f"change the mode or owner of {count} path(s) on {', '.join(plan)}", yes=yes)
    task = fix_task(plan)
    listeners, view = views(log_format) if output is ScanOutput.table else ([], None)
    outcome = api.execute(target, [(None, task)], options, name="FixCis", command_line=command_line(),
                          listeners=listeners)
    code = finish(outcome, view, log_format)
    if code:
        exit_with(code)
    return True

"""A plan as text for a terminal (``table``), as ``json`` for machines, or as ``markdown`` for a review."""

from __future__ import annotations

import json

from kubexm.governance.cost import CostEstimate
from kubexm.governance.impact import NodeImpact
from kubexm.governance.operations import PlanResult


def _money(value: float) -> str:
    return f"{value:,.2f}"


def _cost_line(cost: CostEstimate) -> str:
    text = f"{_money(cost.monthly)} {cost.currency}/month"
    if cost.delta is not None and cost.before_monthly is not None:
        sign = "+" if cost.delta >= 0 else "-"
        text += f" ({cost.baseline}: {_money(cost.before_monthly)}, change: {sign}{_money(abs(cost.delta))})"
    else:
        text += " (no stored cluster to compare with)"
    if cost.unpriced:
        text += f"; no price for {', '.join(cost.unpriced)}"
    return text + f" [prices: {cost.source}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _columns(rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def _node_lines(node: NodeImpact) -> list[str]:
    roles = f" [{', '.join(node.roles)}]" if node.roles else ""
    out = [f"{node.name}{roles}"]
    for f in node.files:
        attrs = f" (mode/owner {f.old_attrs} -> {f.new_attrs})" if f.old_attrs not in (None, f.new_attrs) else ""
        out.append(f"  {'+' if f.change == 'create' else '~'} {f.path}{attrs}  <- {f.step}")
        if f.note:
            out.append(f"      {f.note}")
        out += ["      " + line for line in f.diff.splitlines()]
    out += [f"  restart: {u.unit} ({u.action}; {u.reason})" for u in node.units]
    if node.drained:
        out.append("  drain: the node's pods are evicted")
    out += [f"  etcd: member {change}" for change in node.etcd]
    out += [f"  change: {o}" for o in node.other]
    out += [f"  problem: {p}" for p in node.problems]
    return out


def as_table(plan: PlanResult) -> str:
    impact = plan.impact
    how = "connected dry run" if impact.connected else "offline: steps only, nodes not read"
    out = [f"Plan for {impact.operation} of cluster {impact.cluster} ({how})", ""]
    changed = impact.changed
    if not changed:
        out.append("No changes: every node is as the cluster file says.")
    else:
        rows = [["NODE", "FILES", "RESTARTS", "DRAIN", "ETCD", "OTHER"]]
        rows += [[n.name, str(len(n.files)), ", ".join(u.unit for u in n.units) or "-", "yes" if n.drained else "-",
                  ", ".join(n.etcd) or "-", str(len(n.other))] for n in changed]
        out += [*_columns(rows), ""]
        for node in changed:
            out += [*_node_lines(node), ""]
    if impact.risks:
        out.append("Risks:")
        out += ["  " + line for line in _columns([[r.severity, r.rule, r.message] for r in impact.risks])]
        out.append("")
    if plan.violations:
        out.append(f"Policy: {len(plan.violations)} violation(s)")
        out += ["  " + line for line in _columns([["SEVERITY", "RULE", "MESSAGE"],
                                                  *[[v.severity, v.rule, v.message] for v in plan.violations]])]
    else:
        out.append("Policy: no violations")
    if plan.cost:
        out += ["", "Cost: " + _cost_line(plan.cost)]
    return "\n".join(out).rstrip() + "\n"


def as_json(plan: PlanResult) -> str:
    return json.dumps(plan.to_dict(), indent=2) + "\n"


def as_markdown(plan: PlanResult) -> str:
    impact = plan.impact
    out = [f"# Plan: {impact.operation} of cluster `{impact.cluster}`", ""]
    if not impact.connected:
        out += ["_Offline: steps only, nodes not read._", ""]
    changed = impact.changed
    if not changed:
        out += ["No changes: every node is as the cluster file says.", ""]
    else:
        out += ["| node | files | restarts | drain | etcd |", "| --- | --- | --- | --- | --- |"]
        out += [f"| {n.name} | {len(n.files)} | {', '.join(u.unit for u in n.units) or '-'} | "
                f"{'yes' if n.drained else '-'} | {', '.join(n.etcd) or '-'} |" for n in changed]
        out.append("")
        for node in changed:
            out += [f"## {node.name}", ""]
            for f in node.files:
                attrs = f" (mode/owner {f.old_attrs} → {f.new_attrs})" if f.old_attrs not in (None, f.new_attrs) else ""
                out.append(f"- `{f.path}` {f.change}{attrs}, by {f.step}")
                if f.note:
                    out.append(f"  {f.note}")
                if f.diff:
                    out += ["", "```diff", *f.diff.splitlines(), "```", ""]
            out += [f"- restart `{u.unit}` ({u.action}; {u.reason})" for u in node.units]
            out += ["- drained"] if node.drained else []
            out += [f"- etcd member {c}" for c in node.etcd]
            out += [f"- {o}" for o in node.other]
            out += [f"- **problem**: {p}" for p in node.problems]
            out.append("")
    if impact.risks:
        out += ["## Risks", "", "| severity | rule | message |", "| --- | --- | --- |"]
        out += [f"| {r.severity} | {r.rule} | {_cell(r.message)} |" for r in impact.risks]
        out.append("")
    out += ["## Policy", ""]
    if plan.violations:
        out += ["| severity | rule | message |", "| --- | --- | --- |"]
        out += [f"| {v.severity} | {v.rule} | {_cell(v.message)} |" for v in plan.violations]
    else:
        out.append("No violations.")
    if plan.cost:
        out += ["", "## Cost", "", _cost_line(plan.cost)]
    return "\n".join(out).rstrip() + "\n"


RENDERERS = {"table": as_table, "json": as_json, "markdown": as_markdown}

"""Text renderings: graphs (text, dot, mermaid) and run status tables."""
from __future__ import annotations

import datetime as dt
from typing import Any

from .dag import Graph


def graph_text(graph: Graph) -> str:
    parents: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for p, c in sorted(graph.edges):
        parents[c].append(p)
    lines = [f"workflow {graph.workflow} ({len(graph.nodes)} tasks)"]
    for node in graph.order():
        after = f"  <- {', '.join(parents[node])}" if parents[node] else ""
        rule = graph.nodes[node].trigger_rule
        extra = f"  [{rule}]" if rule != "all_success" else ""
        lines.append(f"  {node}{after}{extra}")
    return "\n".join(lines)


def _quoted(node: str) -> str:
    return '"' + node.replace('"', '\\"') + '"'


def graph_dot(graph: Graph) -> str:
    lines = [f"digraph {_quoted(graph.workflow)} {{", "  rankdir=LR;"]
    lines += [f"  {_quoted(n)};" for n in graph.nodes]
    lines += [f"  {_quoted(p)} -> {_quoted(c)};" for p, c in sorted(graph.edges)]
    lines.append("}")
    return "\n".join(lines)


def graph_mermaid(graph: Graph) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    lines += [f'  {ids[n]}["{n}"]' for n in graph.nodes]
    lines += [f"  {ids[p]} --> {ids[c]}" for p, c in sorted(graph.edges)]
    return "\n".join(lines)


GRAPH_FORMATS = {"text": graph_text, "dot": graph_dot, "mermaid": graph_mermaid}


def _seconds(start: str | None, end: str | None) -> str:
    if not start or not end:
        return ""
    delta = dt.datetime.fromisoformat(end) - dt.datetime.fromisoformat(start)
    return f"{delta.total_seconds():.2f}s"


def status_text(run: dict[str, Any]) -> str:
    lines = [f"run {run['run_id']}  workflow {run['workflow']}  {run['state']}",
             f"  params   {run['params']}",
             f"  created  {run['created_at']}",
             f"  duration {_seconds(run['started_at'], run['finished_at']) or '-'}"]
    if run.get("logical_time"):
        lines.append(f"  logical  {run['logical_time']}")
    rows = [("NODE", "STATE", "TRIES", "TIME", "WORKER", "ERROR")]
    for t in run.get("tasks", []):
        rows.append((t["node"], t["state"], str(t["attempts"]),
                     _seconds(t["started_at"], t["finished_at"]), t["worker"] or "",
                     (t["error"] or "")[:80]))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    lines.append("")
    for r in rows:
        lines.append("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths)) + "  " + r[5])
    return "\n".join(line.rstrip() for line in lines)


def runs_text(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = [("RUN", "WORKFLOW", "STATE", "TASKS", "CREATED", "DURATION")]
    for r in runs:
        rows.append((r["run_id"], r["workflow"], r["state"],
                     f"{r['tasks_done']}/{r['tasks_total']}", r["created_at"][:19],
                     _seconds(r["started_at"], r["finished_at"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)

"""Text renderings: graphs (text, dot, mermaid), optionally coloured by task state, and
run status tables."""
from __future__ import annotations

import datetime as dt
from typing import Any, Callable

import click

from qflow.cli import timing
from qflow.core.dag import Graph

# Per task state: the terminal colour and the fill of a dot/mermaid node.
STATE_COLORS: dict[str, tuple[str, str]] = {
    "pending": ("white", "#eeeeee"), "queued": ("blue", "#bbdefb"),
    "running": ("cyan", "#81d4fa"), "retrying": ("yellow", "#ffe082"),
    "succeeded": ("green", "#a5d6a7"), "failed": ("red", "#ef9a9a"),
    "upstream_failed": ("magenta", "#ffcc80"), "skipped": ("bright_black", "#f5f5f5"),
    "canceled": ("bright_black", "#bdbdbd"),
}


def paint(text: str, state: str, color: bool) -> str:
    """``text`` in the colour of ``state`` when ``color`` is on."""
    if not color or state not in STATE_COLORS:
        return text
    return click.style(text, fg=STATE_COLORS[state][0], bold=state == "failed")


def graph_text(graph: Graph, states: dict[str, str] | None = None, color: bool = False) -> str:
    parents: dict[str, list[str]] = {n: [] for n in graph.nodes}
    for p, c in sorted(graph.edges):
        parents[c].append(p)
    title = f"workflow {graph.workflow} ({len(graph.nodes)} tasks)"
    lines = [title if states is None else f"run of {title}"]
    width = max((len(s) for s in (states or {}).values()), default=0)
    for node in graph.order():
        after = f"  <- {', '.join(parents[node])}" if parents[node] else ""
        rule = graph.nodes[node].trigger_rule
        extra = f"  [{rule}]" if rule != "all_success" else ""
        state = ""
        if states is not None:
            state = paint(states.get(node, "?").ljust(width), states.get(node, ""), color) + "  "
        lines.append(f"  {state}{node}{after}{extra}")
    return "\n".join(lines)


def _quoted(node: str) -> str:
    return '"' + node.replace('"', '\\"') + '"'


def graph_dot(graph: Graph, states: dict[str, str] | None = None, color: bool = False) -> str:
    lines = [f"digraph {_quoted(graph.workflow)} {{", "  rankdir=LR;"]
    if states is not None:
        lines.append("  node [style=filled];")
    for n in graph.nodes:
        state = (states or {}).get(n)
        attrs = ""
        if state is not None:
            fill = STATE_COLORS.get(state, ("", "#ffffff"))[1]
            label = _quoted(n + "\\n" + state)           # dot's line break
            attrs = f' [label={label}, fillcolor="{fill}", tooltip="{state}"]'
        lines.append(f"  {_quoted(n)}{attrs};")
    lines += [f"  {_quoted(p)} -> {_quoted(c)};" for p, c in sorted(graph.edges)]
    lines.append("}")
    return "\n".join(lines)


def graph_mermaid(graph: Graph, states: dict[str, str] | None = None,
                  color: bool = False) -> str:
    ids = {n: f"n{i}" for i, n in enumerate(graph.nodes)}
    lines = ["flowchart LR"]
    for n in graph.nodes:
        state = (states or {}).get(n)
        label = n if state is None else f"{n}<br/>{state}"
        lines.append(f'  {ids[n]}["{label}"]')
    lines += [f"  {ids[p]} --> {ids[c]}" for p, c in sorted(graph.edges)]
    for state in sorted(set((states or {}).values())):
        fill = STATE_COLORS.get(state, ("", "#ffffff"))[1]
        members = ",".join(ids[n] for n, s in states.items() if s == state and n in ids)
        lines += [f"  classDef {state} fill:{fill},stroke:#555;", f"  class {members} {state};"]
    return "\n".join(lines)


GRAPH_FORMATS: dict[str, Callable[..., str]] = {
    "text": graph_text, "dot": graph_dot, "mermaid": graph_mermaid}


def _seconds(start: str | None, end: str | None) -> str:
    took = timing.seconds(start, end)
    return "" if took is None else f"{took:.2f}s"


def _table(rows: list[tuple[str, ...]], painted: dict[int, Callable[[str, str], str]]
           | None = None) -> list[str]:
    """Rows as left-aligned columns; ``painted[i]`` decorates column i after padding."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = []
    for k, r in enumerate(rows):
        cells = [c.ljust(w) for c, w in zip(r, widths, strict=False)]
        for i, fn in (painted or {}).items():
            if k:
                cells[i] = fn(cells[i], r[i])
        out.append("  ".join(cells).rstrip())
    return out


def _elapsed(task: dict[str, Any], now: dt.datetime | None) -> str:
    took = _seconds(task["started_at"], task["finished_at"])
    if took or now is None or task["state"] != "running" or not task["started_at"]:
        return took
    return _seconds(task["started_at"], now.isoformat()) + "…"


def status_text(run: dict[str, Any], summary: dict[str, Any] | None = None,
                color: bool = False, now: dt.datetime | None = None) -> str:
    """The run, a table of its tasks and, given ``summary``, where the time went.
    ``now`` shows running tasks' time so far."""
    lines = [f"run {run['run_id']}  workflow {run['workflow']}  "
             + paint(run["state"], run["state"], color),
             f"  params   {run['params']}",
             f"  created  {run['created_at']}",
             f"  duration {_seconds(run['started_at'], run['finished_at']) or '-'}"]
    if run.get("logical_time"):
        lines.append(f"  logical  {run['logical_time']}")
    rows = [("NODE", "STATE", "TRIES", "TIME", "WORKER", "CELERY ID", "ERROR")]
    for t in run.get("tasks", []):
        rows.append((t["node"], t["state"], str(t["attempts"]), _elapsed(t, now),
                     t["worker"] or "", t.get("celery_id") or "", (t["error"] or "")[:80]))
    lines.append("")
    lines += ["  " + line for line in _table(rows, {1: lambda c, s: paint(c, s, color)})]
    if summary and summary["critical_path"]:
        slowest = ", ".join(f"{s['node']} {s['seconds']:.2f}s" for s in summary["slowest"])
        lines += ["", f"  critical path  {' -> '.join(summary['critical_path'])}  "
                      f"({summary['critical_path_seconds']:.2f}s in its tasks, "
                      f"{summary['duration_seconds'] or 0:.2f}s in all)",
                  f"  slowest        {slowest}"]
    return "\n".join(line.rstrip() for line in lines)


def runs_text(runs: list[dict[str, Any]]) -> str:
    if not runs:
        return "no runs"
    rows = [("RUN", "WORKFLOW", "STATE", "TASKS", "CREATED", "DURATION")]
    for r in runs:
        rows.append((r["run_id"], r["workflow"], r["state"],
                     f"{r['tasks_done']}/{r['tasks_total']}", r["created_at"][:19],
                     _seconds(r["started_at"], r["finished_at"])))
    return "\n".join(_table(rows))

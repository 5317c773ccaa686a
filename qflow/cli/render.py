"""Text renderings: graphs (text, dot, mermaid), optionally coloured by task state, and
what makes text that users or their tasks wrote safe to print on a terminal."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING, Callable, TextIO

import click

from qflow.cli import timing

if TYPE_CHECKING:
    from qflow.core.dag import Graph

# Per task state: the terminal colour and the fill of a dot/mermaid node.
STATE_COLORS: dict[str, tuple[str, str]] = {
    "pending": ("white", "#eeeeee"), "queued": ("blue", "#bbdefb"),
    "running": ("cyan", "#81d4fa"), "retrying": ("yellow", "#ffe082"),
    "succeeded": ("green", "#a5d6a7"), "failed": ("red", "#ef9a9a"),
    "upstream_failed": ("magenta", "#ffcc80"), "skipped": ("bright_black", "#f5f5f5"),
    "canceled": ("bright_black", "#bdbdbd"), "sensing": ("yellow", "#fff59d"),
}


# C0 and C1 control characters but newline and tab, DEL, and the bidirectional overrides
# that reorder what a terminal shows.
_CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def visible(text: str) -> str:
    """``text`` with each terminal control character (an escape sequence's ESC, a bell,
    a carriage return...) written out as ``\\x1b`` instead of acted on; newlines and tabs
    stay. For everything a task or a user wrote (logs, errors, params) before printing."""
    return _CONTROL.sub(_escaped, text.replace("\r\n", "\n"))


def _escaped(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def oneline(text: str | None, limit: int = 200) -> str:
    """The first line of ``text``, made :func:`visible`, at most ``limit`` characters."""
    lines = visible(text or "").splitlines() or [""]
    first = lines[0]
    if len(first) > limit or len(lines) > 1:
        first = first[:limit].rstrip() + " …"
    return first


def isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def use_color(stream: TextIO) -> bool:
    """Colours on a terminal, unless the user set NO_COLOR."""
    return isatty(stream) and not os.environ.get("NO_COLOR")


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


def seconds_text(start: str | None, end: str | None) -> str:
    """The time between two ISO times as ``1.23s``; empty if either is missing."""
    took = timing.seconds(start, end)
    return "" if took is None else f"{took:.2f}s"


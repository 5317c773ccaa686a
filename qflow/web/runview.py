"""What the run page and the workflow grid show, computed from store rows (pure: no
Tornado, no SQL). Rows are :data:`qflow.store.observe.VIEW_COLUMNS` tuples."""
from __future__ import annotations

import datetime as dt
import re
from collections import defaultdict
from typing import Any, Iterable

from qflow.cli.timing import critical_path
from qflow.core.states import TASK_STATES
from qflow.store.read import iso

ELEMENT = re.compile(r"^(.*)\[(\d+)\]$")
# One letter per task state: a mapped node's elements travel as one string.
CODES = dict(zip(TASK_STATES, "PQRYSFUKCW", strict=True))
# How far back of the latest end a page looks again at its next poll: an end committed a
# little after the time it records must not be missed.
OVERLAP = dt.timedelta(seconds=2)
GANTT_ROWS = 500
EPOCH = dt.datetime(1970, 1, 1)


def element_of(node: str, nodes: set[str] | dict) -> tuple[str, int] | None:
    """(mapped node, index) if ``node`` is an element of a mapped node in ``nodes``."""
    match = ELEMENT.match(node)
    if match is None or match.group(1) not in nodes:
        return None
    return match.group(1), int(match.group(2))


def wire(row: tuple) -> list:
    """A task row as the page reads it: times as ISO 8601 strings."""
    out = list(row)
    out[3], out[4] = iso(row[3]), iso(row[4])
    return out


def cursor_after(rows: Iterable[tuple], since: dt.datetime | None = None) -> str:
    """The ``since`` of the next poll: just before the latest end seen so far."""
    latest = max((r[4] for r in rows if r[4] is not None), default=None)
    if latest is None:
        return iso(since or EPOCH)
    later = latest - OVERLAP
    return iso(max(later, since) if since else later)


def build_view(run: dict[str, Any], rows: list[tuple], edges: list[tuple[str, str]]
               ) -> dict[str, Any]:
    """The run page's first load: every node but mapped elements, which become one
    string of state letters per mapped node, and the edges between the nodes shown."""
    nodes = {r[0] for r in rows}
    shown, groups = [], defaultdict(dict)
    for row in rows:
        element = element_of(row[0], nodes)
        if element is None:
            shown.append(wire(row))
        else:
            groups[element[0]][element[1]] = CODES.get(row[1], "P")
    letters = {name: "".join(found.get(i, "P") for i in range(max(found) + 1))
               for name, found in groups.items()}
    kept = [[p, c] for p, c in edges if element_of(p, nodes) is None
            and element_of(c, nodes) is None]
    return {"run": run, "tasks": shown, "edges": kept, "groups": letters,
            "codes": {letter: state for state, letter in CODES.items()},
            "critical": [], "cursor": cursor_after(rows)}


def gantt(run: dict[str, Any], rows: list[tuple], spans: list[tuple],
          edges: list[tuple[str, str]], now: dt.datetime) -> dict[str, Any]:
    """Bars of every attempt, seconds from the first start: one row per node, a mapped
    node's elements in one row (their first start to last end). ``spans``:
    (node, number, state, started_at, finished_at)."""
    nodes = {r[0] for r in rows}
    sizes: dict[str, int] = defaultdict(int)
    by_row: dict[str, list] = defaultdict(list)
    for row in rows:
        element = element_of(row[0], nodes)
        if element is not None:
            sizes[element[0]] += 1
    for node, number, state, start, end in spans:
        if start is not None:
            element = element_of(node, nodes)
            by_row[element[0] if element else node].append((start, end or now, state, number))
    t0 = min((b[0] for bars in by_row.values() for b in bars), default=now)
    t1 = max((b[1] for bars in by_row.values() for b in bars), default=t0)
    shown = [r for r in rows if element_of(r[0], nodes) is None]
    shown.sort(key=lambda r: min((b[0] for b in by_row.get(r[0], ())), default=now))
    out = []
    for row in shown:
        bars = by_row.get(row[0])
        if not bars:
            continue
        count = sizes.get(row[0], 0)
        out.append({"node": row[0], "label": f"{row[0]} ×{count}" if count else row[0],
                    "bars": _group_bar(bars, row[1], t0) if count else
                    [[_sec(s, t0), _sec(e, t0), st, n] for s, e, st, n in sorted(bars)]})
    # A mapped node never runs itself: it "starts" with its first element.
    ended = [{"node": r[0], "started_at": min(b[0] for b in by_row[r[0]]),
              "finished_at": r[4]} for r in shown if by_row.get(r[0])]
    return {"span": _sec(t1, t0), "rows": out[:GANTT_ROWS],
            "more": max(0, len(out) - GANTT_ROWS),
            "critical": critical_path(ended, edges), "start": iso(t0)}


def _group_bar(bars: list, state: str, t0: dt.datetime) -> list:
    first, last = min(b[0] for b in bars), max(b[1] for b in bars)
    worst = "failed" if any(b[2] == "failed" for b in bars) else state
    return [[_sec(first, t0), _sec(last, t0), worst, f"{len(bars)} attempts"]]


def _sec(t: dt.datetime, t0: dt.datetime) -> float:
    return round((t - t0).total_seconds(), 3)


def grid(runs: list[dict[str, Any]], cells: list[tuple[str, str, str]]
         ) -> list[tuple[str, dict[str, str]]]:
    """The workflow grid's rows: (node, {run_id: state}), nodes in the order they first
    appear (creation order of the runs' tasks)."""
    rows: dict[str, dict[str, str]] = {}
    for run_id, node, state in cells:
        rows.setdefault(node, {})[run_id] = state
    return list(rows.items())

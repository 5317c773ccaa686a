"""What the run page and the workflow grid show, computed from store rows (pure: no
Tornado, no SQL). Rows are :data:`qflow.store.observe.VIEW_COLUMNS` tuples."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from qflow.cli.timing import critical_path
from qflow.core.states import TASK_STATES
from qflow.store.read import iso

# One letter per task state: a mapped node's elements travel as one string.
CODES = dict(zip(TASK_STATES, "PQRYSFUKCW", strict=True))
# How far back of the latest end a page looks again at its next poll: an end committed a
# little after the time it records must not be missed.
OVERLAP = dt.timedelta(seconds=2)
GANTT_ROWS = 500
EPOCH = dt.datetime(1970, 1, 1)


def element_of(node: str, nodes: set[str] | dict) -> tuple[str, int] | None:
    """(mapped node, index) if ``node`` is an element ``name[i]`` of a mapped node in
    ``nodes`` (string operations, not a regex: a page may ask this 100,000 times)."""
    base, bracket, index = node.rpartition("[")
    if not bracket or not index.endswith("]") or base not in nodes:
        return None
    index = index[:-1]
    return (base, int(index)) if index.isdigit() else None


def wire(row: tuple) -> list:
    """A task row as the page reads it: times as ISO 8601 strings."""
    out = list(row)
    out[3], out[4] = iso(row[3]), iso(row[4])
    return out


def cursor_after(latest: dt.datetime | None, since: dt.datetime) -> str:
    """The ``since`` of the next poll: just before the latest end or queueing seen so far
    (``latest``, None if the poll saw neither), never before ``since``."""
    return iso(max(latest - OVERLAP, since) if latest else since)


def build_view(run: dict[str, Any], shown: list[tuple], elements: list[tuple[str, str]],
               edges: list[tuple[str, str]], latest: dt.datetime | None,
               maps: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The run page's first load (see :func:`qflow.store.observe.view_shape`): the nodes,
    each mapped node's elements as one string of state letters (element i at i), and the
    edges between the nodes shown. A big run's big maps (``maps``, see
    :func:`qflow.store.mapview.big_view_shape`) come as ``maps``: their size, counts per
    state, when they were counted and the elements worth a look (``window``), instead
    of letters."""
    nodes = {r[0] for r in shown}
    rows, groups = [wire(r) for r in shown], defaultdict(dict)
    for node, state in elements:
        element = element_of(node, nodes)
        if element is None:                  # a node whose own name ends in "]"
            rows.append([node, state] + [None] * (len(shown[0]) - 2 if shown else 7))
        else:
            groups[element[0]][element[1]] = CODES.get(state, "P")
    letters = {name: "".join(found.get(i, "P") for i in range(max(found) + 1))
               for name, found in groups.items()}
    kept = [[p, c] for p, c in edges if c in nodes]
    big = {name: {"size": m["size"], "counts": m["counts"], "at": iso(m["at"]),
                  "window": [wire(r) for r in m["window"]]} for name, m in (maps or {}).items()}
    return {"run": run, "tasks": rows, "edges": kept, "groups": letters, "maps": big,
            "codes": {letter: state for state, letter in CODES.items()},
            "critical": [], "cursor": iso(latest - OVERLAP if latest else EPOCH)}


def gantt(shown: list[tuple], elements: list[tuple[str, str]], spans: list[tuple],
          edges: list[tuple[str, str]], now: dt.datetime) -> dict[str, Any]:
    """Bars of every attempt, seconds from the first start: one row per node, a mapped
    node's elements in one row (their first start to last end), with the critical path.
    ``shown``, ``elements`` and ``edges`` as :func:`build_view` takes them; ``spans``:
    (node, number, state, started_at, finished_at) of every attempt."""
    nodes = {r[0] for r in shown}
    sizes: dict[str, int] = defaultdict(int)
    for node, _ in elements:
        element = element_of(node, nodes)
        if element is not None:
            sizes[element[0]] += 1
    by_row: dict[str, list] = defaultdict(list)
    for node, number, state, start, end in spans:
        if start is not None:
            element = element_of(node, nodes)
            by_row[element[0] if element else node].append((start, end or now, state, number))
    t0 = min((b[0] for bars in by_row.values() for b in bars), default=now)
    t1 = max((b[1] for bars in by_row.values() for b in bars), default=t0)
    drawn = sorted((r for r in shown if by_row.get(r[0])),
                   key=lambda r: min(b[0] for b in by_row[r[0]]))
    out = []
    for row in drawn:
        bars, count = by_row[row[0]], sizes.get(row[0], 0)
        out.append({"node": row[0], "label": f"{row[0]} ×{count}" if count else row[0],
                    "bars": _group_bar(bars, row[1], t0) if count else
                    [[_sec(s, t0), _sec(e, t0), st, n] for s, e, st, n in sorted(bars)]})
    # A mapped node never runs itself: it "starts" with its first element.
    ended = [{"node": r[0], "started_at": min(b[0] for b in by_row[r[0]]),
              "finished_at": r[4]} for r in drawn]
    return {"span": _sec(t1, t0), "rows": out[:GANTT_ROWS],
            "more": max(0, len(out) - GANTT_ROWS),
            "critical": critical_path(ended, edges), "start": iso(t0)}


def _group_bar(bars: list, state: str, t0: dt.datetime) -> list:
    """One bar from a map's first start to its last end, in the mapped node's state (a
    map waiting on its elements is shown running)."""
    first, last = min(b[0] for b in bars), max(b[1] for b in bars)
    shown = "running" if state == "pending" else state
    return [[_sec(first, t0), _sec(last, t0), shown, f"{len(bars)} attempts"]]


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

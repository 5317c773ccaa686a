"""The run page of a big run (more than :data:`LETTERS_MAX` tasks): what it draws, read
without a row per task of the run's big maps.

A mapped node of more than LETTERS_MAX elements is drawn as counts of its elements per
state, the ones worth a look (running, retrying, failed: at most :data:`WINDOW`) and the
page of elements the user asks for (:func:`element_page`). Its counts come from its own
row, whose counters every element's end increments (its elements are its parents, see
:mod:`qflow.store.mapping`), and from its running elements, which are few in the whole
DB (ix_qflow_tasks_open): an element is queued, running, retrying or sensing until it
ends succeeded, failed or canceled (it has no parents, so it is never skipped or
upstream_failed), and one that has not ended nor is moving is queued (canceled, in a run
that ended: a cancel does not count what it ends in their children). A GROUP BY over a
million elements reads a million index entries (1.1 to 1.9 s on the bench machine at
load 9, the run page's budget being 3 s); these read a few rows per map.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, cast, null, select, union_all

from qflow.core import states as S
from qflow.store.bulk import in_chunks
from qflow.store.mapcount import MOVING, element_counts, other_parents
from qflow.store.mapping import element_id, element_ids
from qflow.store.models import OPEN_TASK, edges, one_of, runs, tasks
from qflow.store.observe import _VIEW, _view_row, latest_change, view_shape
from qflow.store.queries import NODE_NAMES
from qflow.store.transitions import utcnow

LETTERS_MAX = 10_000      # a map of more elements is drawn as counts (and a run of more
                          # tasks is read this way)
WINDOW = 200              # a big map's failed and moving elements sent with the page
PAGE_MAX = 1_000          # elements of one page of a big map (element_page)
_COUNTERS = (tasks.c.up_succeeded, tasks.c.up_failed, tasks.c.up_skipped, tasks.c.expanded)
_ELEMENT = tasks.c.node.like("%]")


def big_view_shape(conn: Connection, run_id: str, letters_max: int | None = None
                   ) -> tuple[list[tuple], list[tuple], list[tuple], dt.datetime | None,
                              dict[str, dict[str, Any]]]:
    """What :func:`qflow.store.observe.view_shape` returns, for a run whose big maps are
    not read element by element: the elements of maps of at most ``letters_max`` only,
    and a fifth item, ``{map: {"size", "counts", "window", "at"}}`` for the others
    (``window``: their failed, running and retrying elements as VIEW_COLUMNS tuples;
    ``at``: when they were counted; ``letters_max`` defaults to LETTERS_MAX). A node
    whose own name is ``x[…]`` without being an element of a map of the run is not shown
    on this path. A run of more than ``letters_max`` nodes besides its elements (a big
    grid) is read as view_shape reads it: all of it is drawn."""
    letters_max = LETTERS_MAX if letters_max is None else letters_max
    names = conn.execute(NODE_NAMES, {"run_id": run_id}).scalars().all()
    if len(names) > letters_max:         # a big run of nodes (a grid): every row is shown
        return (*view_shape(conn, run_id), {})
    rows = sorted((r for chunk in in_chunks(names) for r in conn.execute(
        select(tasks.c.id, tasks.c.expanded, *_VIEW)
        .where(tasks.c.run_id == run_id, tasks.c.node.in_(chunk)))), key=lambda r: r[0])
    shown = [_view_row(r[2:]) for r in rows]
    links = [tuple(r) for chunk in in_chunks(names) for r in conn.execute(
        select(edges.c.parent, edges.c.child)
        .where(edges.c.run_id == run_id, edges.c.parent.in_(chunk)))]
    big = [r[2] for r in rows if (r[1] or 0) > letters_max]
    small = [e for r in rows if r[2] not in big for e in element_ids(r[2], r[1])]
    elements = [tuple(r) for chunk in in_chunks(small) for r in conn.execute(
        select(tasks.c.node, tasks.c.state)
        .where(tasks.c.run_id == run_id, tasks.c.node.in_(chunk)))]
    states = {row[0]: row[1] for row in shown}
    maps = _counted(conn, run_id, big, links, states) if big else {}
    return shown, elements, links, latest_change(conn, run_id), maps


def _counted(conn: Connection, run_id: str, big: list[str], links: list[tuple[str, str]],
             states: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Each big map's counts and window, from one statement (one snapshot): the maps'
    counters, the run's moving tasks and its first failed elements."""
    pad = [cast(null(), c.type) for c in _COUNTERS]      # typed: PostgreSQL's UNION
    counters = select(*_VIEW[:2], *[cast(null(), c.type) for c in _VIEW[2:]],
                      *_COUNTERS).where(tasks.c.run_id == run_id, tasks.c.node.in_(big))
    moving = select(*_VIEW, *pad).where(OPEN_TASK, one_of(tasks.c.state, MOVING),
                                        tasks.c.run_id == run_id)
    failed = (select(tasks.c.id, *_VIEW).where(tasks.c.run_id == run_id, _ELEMENT,
                                               one_of(tasks.c.state, (S.FAILED,)))
              .order_by(tasks.c.id).limit(WINDOW * len(big)).subquery())
    failed = select(*[failed.c[c.name] for c in _VIEW], *pad)
    at = utcnow()
    # The moving rows first: a UNION's columns take the first SELECT's types (times).
    found = conn.execute(union_all(moving, failed, counters)).all()
    maps = {name: {"size": 0, "counts": {}, "window": [], "at": at} for name in big}
    tallies = {name: (0, 0, 0) for name in big}
    moved: dict[str, dict[str, int]] = {name: defaultdict(int) for name in big}
    for row in found:
        if row[0] in maps:                              # a map's own row: its counters
            tallies[row[0]] = tuple(row[-4:-1])
            maps[row[0]]["size"] = row[-1] or 0
            continue
        base = row[0].rpartition("[")[0]
        if base not in maps:
            continue
        if row[1] in MOVING:
            moved[base][row[1]] += 1
        if len(maps[base]["window"]) < WINDOW:
            maps[base]["window"].append(_view_row(row[:len(_VIEW)]))
    others = other_parents(links, states, maps)
    ended = conn.execute(select(runs.c.state).where(runs.c.id == run_id)).scalar() \
        in S.TERMINAL
    for name, entry in maps.items():
        entry["counts"] = element_counts(entry["size"], tallies[name], others[name],
                                         moved[name], ended)
    return maps


def element_page(conn: Connection, run_id: str, node: str, first: int, count: int
                 ) -> tuple[int, list[tuple[str, str]]] | None:
    """Elements ``first`` to ``first + count - 1`` of mapped node ``node`` as (node,
    state), and how many elements it has; None if the run has no such node."""
    size = conn.execute(select(tasks.c.expanded).where(tasks.c.run_id == run_id,
                                                       tasks.c.node == node)).first()
    if size is None:
        return None
    ids = [element_id(node, i) for i in range(first, min(first + count, size[0] or 0))]
    rows = conn.execute(select(tasks.c.node, tasks.c.state)
                        .where(tasks.c.run_id == run_id, tasks.c.node.in_(ids))) if ids else []
    return size[0] or 0, [tuple(r) for r in rows]

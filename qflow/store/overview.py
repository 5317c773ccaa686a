"""A run too big to list whole, as `qflow status` shows it, and why a run's waiting tasks
may never start; read on either kind of connection (see :mod:`qflow.store.status`).

A run of more than LIST_BOUND tasks is shown as counts of its tasks per state, for the
whole run and per node (counted by the DB: a map's elements under ``name[…]``), and the
tasks worth a look (failed, running and the like, not the bulk queued or succeeded),
at most LIST_BOUND of them; `qflow status RUN --all` (and ``--json``) lists every task.
Nothing here reads a row per task into Python.
"""
from __future__ import annotations

import json
from typing import Any

from qflow.core.states import QUEUED, RETRYING, SENSING, TASK_STATES
from qflow.store.mapcount import element_counts, element_id, other_parents
from qflow.store.status import rows, task_dict

# A run of more tasks than this is shown as counts and the tasks worth a look, at most
# this many of them.
LIST_BOUND = 1_000
# The per-node counts of such a run show this many nodes at most, in creation order.
NODE_ROWS = 50
SLOWEST = 5                   # tasks in a time summary's "slowest"
# A run of more tasks than this has no "slowest" in its summary: no index orders tasks by
# how long they ran, and sorting a million rows took 1.2 s at load 3, 7-10 s at load 10.
SLOWEST_BOUND = 100_000
SHOWN = 3                     # waiting tasks named in a warning
WAITING = (QUEUED, RETRYING, SENSING)     # each has a message (liveness.WAITING)


def big(run: dict[str, Any], bound: int | None = None) -> bool:
    """Whether ``run`` (a row of `runs --json`) has too many tasks to list whole."""
    return run["tasks_total"] > (LIST_BOUND if bound is None else bound)


def counts(conn: Any, run_id: str, ended: bool
           ) -> tuple[dict[str, int], list[dict[str, Any]], Waiting]:
    """The run's tasks per state, per node in creation order (``{"node": ...,
    "counts": {state: n}}``; a map's elements together under ``name[…]``), states in the
    order of TASK_STATES; and its waiting tasks per queue (see :func:`warnings`).
    ``ended``: whether the run has ended.

    Read without a row per element of a map of more than MAP_BOUND elements: those are
    counted from the map's counters and the run's moving tasks, as the run page counts
    them (:mod:`qflow.store.mapcount`). The other tasks are read row by row, but in a run
    of more than MAP_BOUND nodes besides its elements (a grid), counted by one GROUP BY."""
    names = [name for (name,) in rows(conn, "node_names", run_id=run_id)]
    if len(names) > MAP_BOUND:
        return _tallied(rows(conn, "node_counts", run_id=run_id))
    found = _named(conn, run_id, names)
    big = {row[1]: row for row in found if (row[4] or 0) > MAP_BOUND}
    small = _named(conn, run_id, [element_id(row[1], i) for row in found
                                  if row[1] not in big for i in range(row[4] or 0)])
    groups = [(row[1].partition("[")[0], "[" in row[1], row[2], row[3], 1, row[0])
              for row in found + small]
    if big:
        groups += _big_maps(conn, run_id, big, found, ended)
    return _tallied(groups)


# A map of more elements than this is counted from its counters (as mapview.LETTERS_MAX).
MAP_BOUND = 10_000


def _named(conn: Any, run_id: str, nodes: list[str]) -> list[tuple]:
    """The ``node_rows`` of ``nodes``, 10,000 a statement."""
    return [row for i in range(0, len(nodes), 10_000) for row in rows(
        conn, "node_rows", run_id=run_id, nodes=json.dumps(nodes[i:i + 10_000]))]


def _big_maps(conn: Any, run_id: str, big: dict[str, tuple], found: list[tuple],
              ended: bool) -> list[tuple]:
    """The groups of the ``big`` maps' elements (``big``: their rows by name, ``found``:
    the rows of every node but the elements): each moving element a group of its own
    (its queue), the others per state with the map's queue, their first id element 0's."""
    states = {row[1]: row[2] for row in found}
    others = other_parents(rows(conn, "edges_from", run_id=run_id,
                                nodes=json.dumps(list(states))), states, big)
    firsts = {row[1].partition("[")[0]: row[0]
              for row in _named(conn, run_id, [element_id(name, 0) for name in big])}
    groups: list[tuple] = []
    moved: dict[str, dict[str, int]] = {name: {} for name in big}
    for task_id, node, state, queue in rows(conn, "moving", run_id=run_id):
        base = node.partition("[")[0]
        if base in big and node != base:
            groups.append((base, True, state, queue, 1, task_id))
            moved[base][state] = moved[base].get(state, 0) + 1
    for name, row in big.items():
        counted = element_counts(row[4], row[5:8], others[name], moved[name], ended)
        groups += [(name, True, state, row[3], n - moved[name].get(state, 0),
                    firsts.get(name, row[0])) for state, n in counted.items()
                   if n > moved[name].get(state, 0)]
    return groups


def _tallied(groups: Any) -> tuple[dict[str, int], list[dict[str, Any]], Waiting]:
    """:func:`counts`'s answer from (node, element, state, queue, tasks, first id)."""
    nodes: dict[str, dict[str, Any]] = {}
    totals: dict[str, int] = {}
    waiting: Waiting = {}
    for name, element, state, queue, n, first in groups:
        node = f"{name}[…]" if element else name
        entry = nodes.setdefault(node, {"node": node, "first": first, "counts": {}})
        entry["first"] = min(entry["first"], first)
        entry["counts"][state] = entry["counts"].get(state, 0) + n
        totals[state] = totals.get(state, 0) + n
        if state in WAITING:
            _count(waiting, queue, n, first)
    ordered = sorted(nodes.values(), key=lambda entry: entry.pop("first"))
    for entry in ordered:
        entry["counts"] = _in_order(entry["counts"])
    return _in_order(totals), ordered, waiting


Waiting = dict[Any, list[int]]          # queue (None: the default): [tasks, first task's id]


def _count(waiting: Waiting, queue: str | None, n: int, first: int) -> None:
    entry = waiting.setdefault(queue, [0, first])
    entry[0] += n
    entry[1] = min(entry[1], first)


def _in_order(counts: dict[str, int]) -> dict[str, int]:
    known = {state: counts[state] for state in TASK_STATES if state in counts}
    return {**known, **{state: n for state, n in sorted(counts.items()) if state not in known}}


def look(conn: Any, run_id: str, limit: int = LIST_BOUND) -> list[dict[str, Any]]:
    """The first ``limit`` of the run's failed, upstream_failed, retrying, running and
    sensing tasks, in creation order, as `status --json` lists tasks."""
    from qflow.results import codec

    shown = codec.installed().shown
    return [task_dict(row, shown) for row in rows(conn, "look", run_id=run_id, limit=limit)]


def slowest(conn: Any, run_id: str, top: int = SLOWEST) -> list[dict[str, Any]]:
    """The ``top`` tasks that ran longest (seconds to the millisecond), ties in creation
    order: the DB sorts them, however many tasks the run has."""
    return [{"node": node, "seconds": round((end - start).total_seconds(), 3)}
            for node, start, end in rows(conn, "slowest", run_id=run_id, limit=top)]


def warnings(conn: Any, run_id: str, default_queue: str, lost_after: float, signs: bool,
             waiting: Waiting | None = None) -> list[str]:
    """Why the run's waiting tasks may never start, in words a user can act on: a queue
    no worker heard from in the last ``lost_after`` seconds serves, or (``signs``: this
    process requires signed messages) a creator that did not sign them. ``waiting``: the
    run's waiting tasks per queue, if :func:`counts` read them already."""
    if waiting is None:
        waiting = {}
        for queue, n, first in rows(conn, "waiting_queues", run_id=run_id):
            _count(waiting, queue, n, first)
    served = {q.strip() for (queues,) in rows(conn, "live_queues", timeout=lost_after)
              for q in queues.split(",")}
    by_name: Waiting = {}                        # NULL and the default's name together
    for queue, (n, first) in waiting.items():
        _count(by_name, queue or default_queue, n, first)
    out = []
    for queue, (n, first) in sorted(by_name.items(), key=lambda item: item[1][1]):
        if queue in served:
            continue
        nodes = [node for (node,) in rows(conn, "waiting_in", run_id=run_id, queue=queue,
                                          unnamed=queue == default_queue, first=first,
                                          limit=SHOWN)]
        more = f" and {n - len(nodes):,} more" if n > len(nodes) else ""
        out.append(f"no live worker serves queue {queue!r}, which {', '.join(nodes)}{more} "
                   f"wait{'s' if n == 1 else ''} on: start one with "
                   f"`qflow worker -Q {queue}`")
    unsigned = signs and rows(conn, "unsigned", run_id=run_id)
    if unsigned and unsigned[0][0]:
        out.append("this run was created by a process that does not sign its messages: "
                   "workers that require signed messages refuse its tasks, and do not "
                   "send them again")
    return out

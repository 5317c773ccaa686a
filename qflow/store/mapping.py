"""Dynamic mapping: a mapped node expands into one task per element when it is released,
then collects its elements' results (in order) once they have all ended.

A mapped node never runs on a worker. Its elements ``name[0]``, ``name[1]``, … become its
parents, so the counters that release any task also tell when the map is complete.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, delete, select, update

from qflow.core import states as S
from qflow.core.dag import substitute
from qflow.results import codec
from qflow.results.codec import Stored
from qflow.store.bulk import bulk_insert, in_chunks
from qflow.store.mapcount import element_id
from qflow.store.models import edges, runs, tasks
from qflow.store.transitions import set_task_state
from qflow.store.window import Room, priority_of

# The columns a new task row is written with (insert_run, a map's expansion), the
# counters of its parents' outcomes and its attempts (0 when it is new) last.
NEW_TASK = ("run_id", "node", "task", "state", "trigger_rule", "queue", "call", "options",
            "deadline_s", "pools", "n_parents", "queued_at", "children", "held_back",
            "priority", "up_succeeded", "up_failed", "up_skipped", "attempts", "plain_children")
NEW_COUNTS = (0, 0, 0, 0)
EDGE = ("run_id", "parent", "child")


def is_mapped(options: str | dict | None) -> bool:
    return "map" in _opts(options)


def is_expanded(row) -> bool:
    """Whether a mapped node's row has expanded into its elements."""
    return row.expanded is not None


def _opts(options: str | dict | None) -> dict:
    return json.loads(options) if isinstance(options, str) else (options or {})


def element_ids(node: str, expanded: int | None) -> list[str]:
    return [element_id(node, i) for i in range(expanded or 0)]


def unexpand(conn: Connection, run_id: str, node: str, expanded: int, n_parents: int) -> None:
    """Forget a mapped node's elements (their rows, attempts and edges) so that it expands
    again from its re-run input."""
    ids = element_ids(node, expanded)
    for chunk in in_chunks(ids):
        conn.execute(delete(edges).where(edges.c.run_id == run_id, edges.c.parent.in_(chunk)))
        conn.execute(delete(tasks).where(tasks.c.run_id == run_id, tasks.c.node.in_(chunk)))
    conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == node)
                 .values(n_parents=n_parents - len(ids), expanded=None))
    conn.execute(update(runs).where(runs.c.id == run_id)
                 .values(tasks_total=runs.c.tasks_total - len(ids)))


def expand(conn: Connection, run_id: str, node: str, now: dt.datetime,
           read_inputs, room: Room | None = None) -> tuple[list[str], str | None, str | None]:
    """Insert one queued task per element of the mapped node's input list; with the
    run's ``room``, those beyond the places free in its window are held back.

    Returns (element ids to publish, final state of the node if it ended at once, error):
    an empty list ends it ``succeeded`` with ``[]``; a non-list or an oversized map ends
    it ``failed``.
    """
    row = conn.execute(select(tasks.c.task, tasks.c.call, tasks.c.options, tasks.c.queue,
                              tasks.c.n_parents)
                       .where(tasks.c.run_id == run_id, tasks.c.node == node)).one()
    call, options = json.loads(row.call), json.loads(row.options)
    # The coordinator (a worker, or a command that resumes the run) reads the list back
    # to split it; each element's input is sealed again in its call when a key is set.
    results = codec.installed()
    items = substitute(call["args"][0], {node: results.load(stored, node) for node, stored
                                         in read_inputs(conn, run_id, call).items()})
    limit = options["map"].get("max")
    error = None
    if not isinstance(items, list):
        error = f"MapError: {node}.map() needs a list, got {type(items).__name__}"
    elif limit is not None and len(items) > limit:
        error = f"MapError: {node}.map() over {len(items)} items exceeds max_map_size ({limit})"
    if error:
        _end(conn, run_id, node, S.FAILED, now, error=error)
        return [], S.FAILED, error
    if not items:
        _end(conn, run_id, node, S.SUCCEEDED, now, result="[]")
        return [], S.SUCCEEDED, None
    ids = [element_id(node, i) for i in range(len(items))]
    element_options = {k: v for k, v in options.items() if k != "map"}
    room = room or Room(None)
    placed = room.take(len(ids))
    options_text = json.dumps(element_options) if element_options else None
    priority, children = priority_of(element_options), json.dumps([node])
    # Each element's call is {"args": [item, *rest], "kwargs": kwargs}: the text after its
    # item is the same for all, written once (half the cost of a json.dumps per element).
    after = "".join(", " + json.dumps(a) for a in call["args"][1:]) + \
        '], "kwargs": ' + json.dumps(call["kwargs"]) + "}"
    bulk_insert(conn, tasks, NEW_TASK, (
        (run_id, eid, row.task, S.QUEUED, "all_success", row.queue,
         '{"args": [' + json.dumps(results.seal_item(item)) + after,
         options_text, None, None, 0, now, children, i >= placed, priority, *NEW_COUNTS,
         False)
        for i, (eid, item) in enumerate(zip(ids, items, strict=True))))
    bulk_insert(conn, edges, EDGE, ((run_id, eid, node) for eid in ids))
    conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == node)
                 .values(n_parents=row.n_parents + len(ids), expanded=len(ids)))
    conn.execute(update(runs).where(runs.c.id == run_id)
                 .values(tasks_total=runs.c.tasks_total + len(ids),
                         tasks_left=runs.c.tasks_left + len(ids),
                         **room.counters(placed, len(ids) - placed)))
    return ids[:placed], None, None


def collect(conn: Connection, run_id: str, node: str, expanded: int,
            options: str | dict | None, now: dt.datetime) -> str:
    """End an expanded mapped node with the list of its elements' results, in order;
    return its state. The list is a value like any task's: larger than the node's
    ``result_max_bytes`` it fails the node, as it would a task returning it."""
    ids = element_ids(node, expanded)
    found = {r.node: Stored.of(r.result, r.result_ref) for chunk in in_chunks(ids)
             for r in conn.execute(select(tasks.c.node, tasks.c.result, tasks.c.result_ref)
                                   .where(tasks.c.run_id == run_id, tasks.c.node.in_(chunk)))}
    if not all(s.plain for s in found.values()):
        # Stored or sealed values are referenced, never opened here: the list is read
        # back by whoever reads the node's result.
        items = [{"text": found[eid].text, "ref": found[eid].ref} if eid in found else None
                 for eid in ids]
        _end(conn, run_id, node, S.SUCCEEDED, now,
             result_ref=Stored(ref={"serializer": "map", "items": items}).ref_text())
        return S.SUCCEEDED
    values = [json.loads(found[eid].text) if found.get(eid) and found[eid].text else None
              for eid in ids]
    text = json.dumps(values)
    opts = _opts(options)
    limit = opts.get("result_max_bytes") or opts["map"].get("result_max")
    if limit and len(text.encode()) > limit:
        _end(conn, run_id, node, S.FAILED, now,
             error=f"TaskOutputError: the {len(ids)} results of {node}.map() are "
                   f"{len(text.encode())} bytes together, larger than result_max_bytes "
                   f"({limit})")
        return S.FAILED
    _end(conn, run_id, node, S.SUCCEEDED, now, result=text)
    return S.SUCCEEDED


def failed_elements(conn: Connection, run_id: str, node: str, expanded: int) -> str:
    """The error of a mapped node whose elements did not all succeed."""
    ids = element_ids(node, expanded)
    n = len(ids)
    bad = [r.node for r in sorted(
        (r for chunk in in_chunks(ids) for r in conn.execute(
            select(tasks.c.id, tasks.c.node).where(
                tasks.c.run_id == run_id, tasks.c.node.in_(chunk),
                tasks.c.state.in_((S.FAILED, S.UPSTREAM_FAILED))))),
        key=lambda r: r.id)]
    shown = ", ".join(bad[:5]) + (", …" if len(bad) > 5 else "")
    return f"MapError: {len(bad)} of {n} elements failed ({shown})"


def _end(conn: Connection, run_id: str, node: str, state: str, now: dt.datetime,
         **values: Any) -> None:
    set_task_state(conn, run_id, node, state, expect=(S.PENDING,), finished_at=now, **values)

"""Read-only queries behind `logs`, `graph RUN_ID`, the progress display, run timings and
the web console's pages."""
from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import CompoundSelect, Connection, func, literal_column, null, select, union_all

from qflow.core.dag import Graph, Node
from qflow.results import logs
from qflow.results.codec import installed
from qflow.store import livelog
from qflow.store.models import OPEN_TASK, attempts, edges, runs, tasks
from qflow.store.read import iso
from qflow.store.status import timed_edges  # noqa: F401 - read here by tests too


def attempt_logs(conn: Connection, run_id: str, node: str | None = None,
                 number: int | None = None) -> list[dict[str, Any]]:
    """Every attempt of the run (or of ``node``, or just attempt ``number``) with what it
    printed and logged, in the order they started; an attempt still running is there
    with its live log if it writes one (see :mod:`qflow.store.livelog`). With
    ``log_store = "results"`` the logs are read from the result store."""
    stmt = (select(tasks.c.node, attempts.c.number, attempts.c.state, attempts.c.worker,
                   attempts.c.celery_id, attempts.c.started_at, attempts.c.finished_at,
                   attempts.c.error, attempts.c.traceback, attempts.c.log)
            .join(tasks, tasks.c.id == attempts.c.task_id)
            .where(tasks.c.run_id == run_id)
            .order_by(attempts.c.started_at, attempts.c.id))
    if node is not None:
        stmt = stmt.where(tasks.c.node == node)
    if number is not None:
        stmt = stmt.where(attempts.c.number == number)
    results = installed()            # sealed text opens here for a process with the key
    shown = results.shown
    return [{"node": r.node, "attempt": r.number, "state": r.state, "worker": r.worker,
             "celery_id": r.celery_id, "started_at": iso(r.started_at),
             "finished_at": iso(r.finished_at), "error": shown(r.error),
             "traceback": shown(r.traceback),
             "log": logs.shown(results, r.log, run_id, r.node, r.number)}
            for r in conn.execute(stmt)] + livelog.running_logs(conn, run_id, node, number)


def ended_attempts(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """Every ended attempt of the run, without its log: what the progress display turns
    into lines (see :mod:`qflow.cli.events`)."""
    rows = conn.execute(select(tasks.c.node, attempts.c.number, attempts.c.state,
                               attempts.c.worker, attempts.c.started_at,
                               attempts.c.finished_at, attempts.c.error)
                        .join(tasks, tasks.c.id == attempts.c.task_id)
                        .where(tasks.c.run_id == run_id))
    shown = installed().shown
    return [{"node": r.node, "attempt": r.number, "state": r.state, "worker": r.worker,
             "started_at": iso(r.started_at), "finished_at": iso(r.finished_at),
             "error": shown(r.error)} for r in rows]


def has_node(conn: Connection, run_id: str, node: str) -> bool:
    return conn.execute(select(tasks.c.id).where(tasks.c.run_id == run_id,
                                                 tasks.c.node == node)).first() is not None


def run_edges(conn: Connection, run_id: str) -> list[tuple[str, str]]:
    """The run's (parent, child) edges."""
    rows = conn.execute(select(edges.c.parent, edges.c.child).where(edges.c.run_id == run_id)
                        .order_by(edges.c.parent, edges.c.child))
    return [tuple(r) for r in rows.all()]


def run_graph(conn: Connection, run_id: str) -> tuple[Graph, dict[str, str]] | None:
    """The DAG a run was expanded into, with each task's state; None for an unknown run."""
    workflow = conn.execute(select(runs.c.workflow).where(runs.c.id == run_id)).scalar()
    if workflow is None:
        return None
    rows = conn.execute(select(tasks.c.node, tasks.c.task, tasks.c.trigger_rule,
                               tasks.c.state).where(tasks.c.run_id == run_id)
                        .order_by(tasks.c.id)).all()
    nodes = {r.node: Node(r.node, r.task, trigger_rule=r.trigger_rule) for r in rows}
    graph = Graph(workflow, nodes, frozenset(run_edges(conn, run_id)))
    return graph, {r.node: r.state for r in rows}


def task_page(conn: Connection, run_id: str, after: str | None, limit: int
              ) -> list[dict[str, Any]]:
    """At most ``limit`` of the run's tasks as `status --json` lists them (with their
    tracebacks), those after node id ``after`` (None: from the first) in node-id order:
    the order of the run's unique (run_id, node) index, so a page reads its own rows
    only, however deep it is and however many tasks the run has."""
    from qflow.store.queries import TASK_COLUMNS
    from qflow.store.status import task_dict

    stmt = (select(tasks.c.id, *TASK_COLUMNS).where(tasks.c.run_id == run_id)
            .order_by(tasks.c.node).limit(limit))
    if after is not None:
        stmt = stmt.where(tasks.c.node > after)
    rows = conn.execute(stmt).all()
    latest = (attempts.c.task_id == tasks.c.id) & (attempts.c.number == tasks.c.attempts)
    traces = dict(conn.execute(
        select(tasks.c.id, attempts.c.traceback).join(attempts, latest)
        .where(tasks.c.id.in_([r[0] for r in rows]), attempts.c.traceback.is_not(None))
    ).all()) if rows else {}
    shown = installed().shown
    return [{**task_dict(tuple(r[1:]), shown),
             "traceback": shown(traces[r[0]]) if r[0] in traces else None} for r in rows]


def run_counters(conn: Connection, run_id: str) -> dict[str, int]:
    """The counters the run's row keeps (no task row read): its tasks, those ended,
    those not ended yet, failed (failed or upstream_failed) and canceled."""
    row = conn.execute(select(runs.c.tasks_total, runs.c.tasks_left, runs.c.tasks_failed,
                              runs.c.tasks_canceled).where(runs.c.id == run_id)).one()
    return {"total": row.tasks_total, "done": row.tasks_total - row.tasks_left,
            "left": row.tasks_left, "failed": row.tasks_failed,
            "canceled": row.tasks_canceled}


def state_counts(conn: Connection, run_id: str) -> dict[str, int]:
    """How many of the run's tasks are in each state."""
    rows = conn.execute(select(tasks.c.state, func.count()).where(tasks.c.run_id == run_id)
                        .group_by(tasks.c.state))
    return {state: n for state, n in rows}


def running(conn: Connection, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The run's running tasks, longest-running first (for large runs' progress)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.worker, tasks.c.started_at,
                               tasks.c.attempts)
                        .where(tasks.c.run_id == run_id, tasks.c.state == "running")
                        .order_by(tasks.c.started_at).limit(limit))
    return [{"node": r.node, "worker": r.worker, "started_at": iso(r.started_at),
             "attempts": r.attempts, "state": "running"} for r in rows]


# -- the web console ------------------------------------------------------------------
# Rows as tuples in this order: the run page ships them as they are (no per-row dict).
VIEW_COLUMNS = ("node", "state", "attempts", "started_at", "finished_at", "worker", "queue",
                "error", "celery_id")
_VIEW = tuple(tasks.c[name] for name in VIEW_COLUMNS)
# States a task holds for a while without its finished_at changing. Few rows hold them at
# once in the whole DB (running: bounded by the workers' slots), so their index finds a
# run's share at once.
_MOVING = ("running", "retrying")
# Written into the SQL, not bound: a prepared statement's generic plan matches the partial
# index ix_qflow_tasks_queued (WHERE state = 'queued') only against a literal.
_QUEUED = literal_column("'queued'")


def view_shape(conn: Connection, run_id: str
               ) -> tuple[list[tuple], list[tuple], list[tuple], dt.datetime | None]:
    """What the run page draws first: the tasks whose id does not end in ``]`` as
    :data:`VIEW_COLUMNS` tuples (creation order), the (node, state) of those that do
    (mapped elements, ``name[i]``: only their state is drawn), the edges between the
    former, and the latest time one of the run's tasks ended or was queued so far (its
    live updates start there)."""
    element = tasks.c.node.like("%]")
    shown = conn.execute(select(*_VIEW).where(tasks.c.run_id == run_id, ~element)
                         .order_by(tasks.c.id))
    elements = conn.execute(select(tasks.c.node, tasks.c.state)
                            .where(tasks.c.run_id == run_id, element))
    links = conn.execute(select(edges.c.parent, edges.c.child)
                         .where(edges.c.run_id == run_id, edges.c.parent.not_like("%]")))
    # .all(): every row in one fetch, not one driver call per row (a map of 100,000)
    return ([_view_row(r) for r in shown.all()], [tuple(r) for r in elements.all()],
            [tuple(r) for r in links.all()], latest_change(conn, run_id))


def latest_change(conn: Connection, run_id: str) -> dt.datetime | None:
    """The latest time one of the run's tasks ended or was queued so far (where a run
    page's live updates start)."""
    ended = conn.execute(select(func.max(tasks.c.finished_at))
                         .where(tasks.c.run_id == run_id)).scalar()
    queued = conn.execute(select(func.max(tasks.c.queued_at))
                          .where(tasks.c.run_id == run_id, tasks.c.state == _QUEUED)).scalar()
    return max((t for t in (ended, queued) if t is not None), default=None)


def changes_query(run_id: str, since: dt.datetime, queued_max: int | None = None
                  ) -> CompoundSelect:
    """The statement behind :func:`changed_since`: each row is a :data:`VIEW_COLUMNS`
    tuple and then the time that put it there (its end or when it was queued; None for
    a running or retrying task). ``queued_max``: only the latest that many queueings (a
    map's expansion queues all its elements at once, a million of them in a big run)."""
    ended = select(*_VIEW, tasks.c.finished_at.label("mark")).where(
        tasks.c.run_id == run_id, tasks.c.finished_at >= since)
    waiting = select(*_VIEW, tasks.c.queued_at.label("mark")).where(
        tasks.c.run_id == run_id, tasks.c.state == _QUEUED, tasks.c.queued_at >= since)
    if queued_max is not None:
        latest = waiting.order_by(tasks.c.queued_at.desc()).limit(queued_max).subquery()
        waiting = select(*latest.c)
    moving = select(*_VIEW, null().label("mark")).where(
        OPEN_TASK, tasks.c.state.in_(_MOVING), tasks.c.run_id == run_id)
    return union_all(ended, waiting, moving)


def changed_since(conn: Connection, run_id: str, since: dt.datetime,
                  queued_max: int | None = None) -> tuple[list[tuple], dt.datetime | None]:
    """The run's tasks that ended or were queued at or after ``since`` (naive UTC), or
    are running or waiting to retry, as :data:`VIEW_COLUMNS` tuples: what a page that
    looked at ``since`` must redraw; and the latest of those ends and queueings (where
    its next look may start). One statement on three indexes (ix_qflow_tasks_finished,
    ix_qflow_tasks_queued, ix_qflow_tasks_open), never a scan of the run."""
    rows = conn.execute(changes_query(run_id, since, queued_max)).all()
    latest = max((r[-1] for r in rows if r[-1] is not None), default=None)
    return [_view_row(r[:-1]) for r in rows], latest


_ERROR = VIEW_COLUMNS.index("error")


def _view_row(row) -> tuple:
    """A :data:`VIEW_COLUMNS` row with its error opened (for a process with the key)."""
    if row[_ERROR] is None:
        return tuple(row)
    return (*row[:_ERROR], installed().shown(row[_ERROR]), *row[_ERROR + 1:])


def attempt_spans(conn: Connection, run_id: str) -> list[tuple]:
    """(node, number, state, started_at, finished_at) of every attempt of the run."""
    rows = conn.execute(select(tasks.c.node, attempts.c.number, attempts.c.state,
                               attempts.c.started_at, attempts.c.finished_at)
                        .join(tasks, tasks.c.id == attempts.c.task_id)
                        .where(tasks.c.run_id == run_id))
    return [tuple(r) for r in rows.all()]


def task_detail(conn: Connection, run_id: str, node: str) -> dict[str, Any] | None:
    """One task with its attempts (no logs or tracebacks: those load on demand)."""
    row = conn.execute(select(tasks.c.id, tasks.c.task, *_VIEW)
                       .where(tasks.c.run_id == run_id, tasks.c.node == node)).first()
    if row is None:
        return None
    out = dict(zip(VIEW_COLUMNS, _view_row(tuple(getattr(row, n) for n in VIEW_COLUMNS)),
                   strict=True))
    out.update(task=row.task, started_at=iso(row.started_at), finished_at=iso(row.finished_at))
    tries = conn.execute(select(attempts.c.number, attempts.c.state, attempts.c.worker,
                                attempts.c.started_at, attempts.c.finished_at,
                                attempts.c.error_type, attempts.c.error,
                                attempts.c.traceback.is_not(None).label("has_traceback"))
                         .where(attempts.c.task_id == row.id).order_by(attempts.c.number))
    return {"task": out, "attempts": [
        {"number": a.number, "state": a.state, "worker": a.worker,
         "started_at": iso(a.started_at), "finished_at": iso(a.finished_at),
         "error_type": a.error_type, "error": installed().shown(a.error),
         "has_traceback": bool(a.has_traceback)}
        for a in tries]}


def attempt_traceback(conn: Connection, run_id: str, node: str, number: int
                      ) -> dict[str, Any] | None:
    """The error and traceback of one ended attempt, or None if there is no such
    attempt (its log: :func:`attempt_logs`)."""
    row = conn.execute(select(attempts.c.traceback, attempts.c.error)
                       .join(tasks, tasks.c.id == attempts.c.task_id)
                       .where(tasks.c.run_id == run_id, tasks.c.node == node,
                              attempts.c.number == number)).first()
    shown = installed().shown
    return None if row is None else {"traceback": shown(row.traceback),
                                     "error": shown(row.error)}


def grid_cells(conn: Connection, run_ids: list[str]) -> list[tuple[str, str, str]]:
    """(run_id, node, state) of the runs' tasks, mapped elements (``name[i]``) left out,
    in creation order."""
    if not run_ids:
        return []
    rows = conn.execute(select(tasks.c.run_id, tasks.c.node, tasks.c.state)
                        .where(tasks.c.run_id.in_(run_ids), tasks.c.node.not_like("%]"))
                        .order_by(tasks.c.id))
    return [tuple(r) for r in rows]


def runs_page(conn: Connection, workflow: str | None = None, state: str | None = None,
              since: dt.datetime | None = None, until: dt.datetime | None = None,
              before: tuple[dt.datetime, str] | None = None, limit: int = 50) -> list[dict]:
    """A page of runs, newest first: those after the (created_at, run_id) ``before`` key
    in that order (keyset paging, indexed however deep the page)."""
    stmt = (select(runs.c.id, runs.c.workflow, runs.c.state, runs.c.created_at,
                   runs.c.started_at, runs.c.finished_at, runs.c.tasks_total, runs.c.tasks_left)
            .order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit))
    for column, value in ((runs.c.workflow, workflow), (runs.c.state, state)):
        if value:
            stmt = stmt.where(column == value)
    if since is not None:
        stmt = stmt.where(runs.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(runs.c.created_at < until)
    if before is not None:
        # (created_at, id) < before, spelt so that the created_at indexes bound the range.
        at, run_id = before
        stmt = stmt.where(runs.c.created_at <= at,
                          (runs.c.created_at < at) | (runs.c.id < run_id))
    return [{"run_id": r.id, "workflow": r.workflow, "state": r.state,
             "created_at": r.created_at, "started_at": r.started_at,
             "finished_at": r.finished_at, "tasks_total": r.tasks_total,
             "tasks_done": r.tasks_total - r.tasks_left} for r in conn.execute(stmt)]


def recent_states(conn: Connection, workflow: str, limit: int) -> list[tuple[str, str]]:
    """(run_id, state) of the workflow's last ``limit`` runs, oldest first."""
    rows = conn.execute(select(runs.c.id, runs.c.state).where(runs.c.workflow == workflow)
                        .order_by(runs.c.created_at.desc(), runs.c.id.desc()).limit(limit))
    return [tuple(r) for r in rows][::-1]

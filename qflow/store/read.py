"""Read-only queries behind `status`, `runs` and `run --wait`."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, select

from qflow.core.params import masked
from qflow.results import codec
from qflow.results.codec import Stored
from qflow.store.models import asset_consumed, asset_events, attempts, edges, runs, tasks

_RUN_COLUMNS = (runs.c.id, runs.c.workflow, runs.c.state, runs.c.params, runs.c.created_at,
                runs.c.started_at, runs.c.finished_at, runs.c.logical_time,
                runs.c.tasks_total, runs.c.tasks_left, runs.c.late)


def iso(value: dt.datetime | None) -> str | None:
    """Stored naive-UTC time as ISO 8601 with its offset."""
    if not value:
        return None
    # The offset appended, not set by replace(): a run of 100,000 tasks has 200,000 times.
    return value.isoformat() + "+00:00" if value.tzinfo is None else \
        value.replace(tzinfo=dt.timezone.utc).isoformat()


def _run_dict(row) -> dict[str, Any]:
    out = {"run_id": row.id, "workflow": row.workflow, "state": row.state,
           "params": masked(json.loads(row.params)), "created_at": iso(row.created_at),
           "started_at": iso(row.started_at), "finished_at": iso(row.finished_at)}
    if row.logical_time is not None:
        out["logical_time"] = iso(row.logical_time)
    if row.late:                       # past its @workflow(deadline=...)
        out["late"] = True
    out["tasks_total"] = row.tasks_total
    out["tasks_done"] = row.tasks_total - row.tasks_left
    return out


def get_run(conn: Connection, run_id: str, with_tasks: bool = True,
            took: dict[str, float] | None = None) -> dict[str, Any] | None:
    """The run as `status --json` prints it, or None (``took``: see :func:`task_rows`)."""
    row = conn.execute(select(*_RUN_COLUMNS).where(runs.c.id == run_id)).first()
    if row is None:
        return None
    out = _run_dict(row)
    if with_tasks:
        out["tasks"] = task_rows(conn, run_id, took)
        found = tracebacks(conn, run_id)
        for task in out["tasks"]:
            task["traceback"] = found.get(task["node"])
        out["triggered_by"] = triggered_by(conn, run_id)
    return out


def triggered_by(conn: Connection, run_id: str) -> list[dict[str, Any]]:
    """The asset updates that started the run, oldest first (none: not started so)."""
    rows = conn.execute(
        select(asset_events.c.asset, asset_events.c.run_id, asset_events.c.node,
               asset_events.c.created_at)
        .join(asset_consumed, asset_consumed.c.event_id == asset_events.c.id)
        .where(asset_consumed.c.run_id == run_id).order_by(asset_events.c.id))
    return [{"asset": r.asset, "run_id": r.run_id, "node": r.node,
             "at": iso(r.created_at)} for r in rows]


def tracebacks(conn: Connection, run_id: str) -> dict[str, str]:
    """The traceback of each task's latest attempt, for the tasks whose has one."""
    rows = conn.execute(
        select(tasks.c.node, attempts.c.traceback)
        .join(attempts, (attempts.c.task_id == tasks.c.id)
              & (attempts.c.number == tasks.c.attempts))
        .where(tasks.c.run_id == run_id, attempts.c.traceback.is_not(None)))
    shown = codec.installed().shown
    return {r.node: shown(r.traceback) for r in rows}


def task_rows(conn: Connection, run_id: str, took: dict[str, float] | None = None
              ) -> list[dict[str, Any]]:
    """The run's tasks as `status --json` lists them, in creation order. ``took``, if
    given, receives the seconds each task that started and ended ran (rounded to the
    millisecond, as :func:`qflow.cli.timing.summary` rounds them), from the stored times
    rather than parsed back from the strings."""
    rows = conn.execute(
        select(tasks.c.node, tasks.c.state, tasks.c.attempts, tasks.c.started_at,
               tasks.c.finished_at, tasks.c.error, tasks.c.worker, tasks.c.celery_id,
               tasks.c.queue, tasks.c.late)
        .where(tasks.c.run_id == run_id).order_by(tasks.c.id))
    shown = codec.installed().shown
    out = []
    # .all() and plain tuples: one driver fetch and no per-row attribute lookups (a map
    # of 10,000 elements is read in tens of milliseconds, not hundreds).
    for node, state, tries, start, end, error, worker, celery_id, queue, late in rows.all():
        row = {"node": node, "state": state, "attempts": tries, "started_at": iso(start),
               "finished_at": iso(end), "error": None if error is None else shown(error),
               "worker": worker, "celery_id": celery_id, "queue": queue}
        if late:
            row["late"] = True
        out.append(row)
        if took is not None and start and end:
            took[node] = round((end - start).total_seconds(), 3)
    return out


def results(conn: Connection, run_id: str, nodes: list[str]) -> dict[str, Any]:
    """Return values of ``nodes`` that succeeded, read back from the DB or the result
    store (decrypted with this process's key: ResultError without it)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.result, tasks.c.result_ref)
                        .where(tasks.c.run_id == run_id, tasks.c.node.in_(nodes),
                               tasks.c.state == "succeeded"))
    results = codec.installed()
    return {r.node: results.load(Stored.of(r.result, r.result_ref), r.node) for r in rows}


def list_runs(conn: Connection, workflow: str | None = None, state: str | None = None,
              limit: int = 20, since: dt.datetime | None = None,
              until: dt.datetime | None = None, before: str | None = None
              ) -> list[dict[str, Any]]:
    """Most recent runs first; ``since``/``until`` bound their creation time (naive UTC);
    ``before`` (a run id) asks for the runs that follow that one in this order (keyset
    paging: as fast on page 1000 as on page 1)."""
    stmt = (select(*_RUN_COLUMNS).order_by(runs.c.created_at.desc(), runs.c.id.desc())
            .limit(limit))
    if before is not None:
        # (created_at, id) < the cursor's, spelt so the created_at indexes bound the range.
        at = select(runs.c.created_at).where(runs.c.id == before).scalar_subquery()
        stmt = stmt.where(runs.c.created_at <= at,
                          (runs.c.created_at < at) | (runs.c.id < before))
    if workflow:
        stmt = stmt.where(runs.c.workflow == workflow)
    if state:
        stmt = stmt.where(runs.c.state == state)
    if since is not None:
        stmt = stmt.where(runs.c.created_at >= since)
    if until is not None:
        stmt = stmt.where(runs.c.created_at < until)
    return [_run_dict(r) for r in conn.execute(stmt)]


def leaves(conn: Connection, run_id: str) -> list[str]:
    """Nodes of the run that no other node waits on."""
    has_child = select(edges.c.parent).where(edges.c.run_id == run_id)
    rows = conn.execute(select(tasks.c.node).where(tasks.c.run_id == run_id,
                                                   tasks.c.node.not_in(has_child))
                        .order_by(tasks.c.id))
    return [r.node for r in rows]


def failed_tasks(conn: Connection, run_id: str, limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """The run's failed tasks (not upstream_failed), in creation order (the first
    ``limit`` of them, if given)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.error)
                        .where(tasks.c.run_id == run_id, tasks.c.state == "failed")
                        .order_by(tasks.c.id).limit(limit))
    return [{"node": r.node, "error": r.error} for r in rows]


def task_options(conn: Connection, run_id: str, node: str) -> dict[str, Any] | None:
    """The task key, options, first attempt (see qflow_tasks.first_attempt) and workflow
    of one task instance."""
    row = conn.execute(select(tasks.c.task, tasks.c.options, tasks.c.first_attempt,
                              runs.c.workflow)
                       .join(runs, runs.c.id == tasks.c.run_id)
                       .where(tasks.c.run_id == run_id, tasks.c.node == node)).first()
    if row is None:
        return None
    return {"task": row.task, "options": json.loads(row.options or "{}"),
            "first_attempt": row.first_attempt or 1, "workflow": row.workflow}

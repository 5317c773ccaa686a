"""Retention: deleting ended runs older than a cutoff, with everything that belongs to
them, a small batch per transaction so that running work is not held up."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, case, delete, exists, func, select

from qflow.core import states as S
from qflow.store.db import query
from qflow.store.models import (
    alerts,
    asset_consumed,
    asset_events,
    attempts,
    edges,
    live_logs,
    pool_waits,
    runs,
    sensing,
    tasks,
)

_ENDED = (S.SUCCEEDED, S.FAILED, S.CANCELED)


def _prunable(cutoff: dt.datetime):
    """Ended before ``cutoff``, and no unfinished run consumed an asset update of it."""
    active = select(runs.c.id).where(runs.c.state.in_((S.QUEUED, S.RUNNING))).subquery()
    referenced = exists().where(
        asset_events.c.run_id == runs.c.id, asset_consumed.c.event_id == asset_events.c.id,
        asset_consumed.c.run_id.in_(select(active.c.id)))
    return (runs.c.state.in_(_ENDED), func.coalesce(runs.c.finished_at, runs.c.created_at)
            < cutoff, ~referenced)


def count(conn: Connection, cutoff: dt.datetime) -> tuple[int, int]:
    """How many runs (and their tasks) a prune at ``cutoff`` would delete."""
    ids = select(runs.c.id).where(*_prunable(cutoff)).subquery()
    n_runs = conn.execute(select(func.count()).select_from(ids)).scalar_one()
    n_tasks = conn.execute(select(func.count()).select_from(tasks).where(
        tasks.c.run_id.in_(select(ids.c.id)))).scalar_one()
    return n_runs, n_tasks


def _oldest(cutoff: dt.datetime, limit: int):
    """The oldest prunable runs holding about ``limit`` task rows together (at least one
    run; a run without tasks counts as one row): a batch's size is bounded by what it
    deletes, so a few runs of a huge map make a batch as a thousand small ones do."""
    weight = case((runs.c.tasks_total > 0, runs.c.tasks_total), else_=1)
    # In created_at order alone (ix_qflow_runs_created gives it), the running sum over
    # the rows so far: the scan stops after ``limit`` runs at most.
    picked = (select(runs.c.id, weight.label("weight"),
                     func.sum(weight).over(order_by=runs.c.created_at, rows=(None, 0))
                     .label("upto"))
              .where(*_prunable(cutoff)).order_by(runs.c.created_at).limit(limit)
              .subquery())
    return select(picked.c.id).where(picked.c.upto - picked.c.weight < limit)


@query()
def delete_batch(conn: Connection, cutoff: dt.datetime, limit: int) -> list[str]:
    """Delete the oldest prunable runs, about ``limit`` task rows' worth (see
    :func:`_oldest`), and what belongs to them: task rows, attempts, edges, logs,
    alerts. Returns their ids (their stored objects are the caller's to delete, after
    commit). Asset updates they made stay: an asset's history outlives the runs that
    made it.

    The rows that point at a task go first, each table through its task_id index, so
    that deleting the task rows finds nothing left for their foreign keys to cascade."""
    ids = conn.execute(_oldest(cutoff, limit)).scalars().all()
    if not ids:
        return []
    task_ids = select(tasks.c.id).where(tasks.c.run_id.in_(ids))
    for table in (attempts, live_logs, pool_waits, sensing):
        conn.execute(delete(table).where(table.c.task_id.in_(task_ids)))
    conn.execute(delete(asset_consumed).where(asset_consumed.c.run_id.in_(ids)))
    for table in (tasks, edges, alerts):
        conn.execute(delete(table).where(table.c.run_id.in_(ids)))
    conn.execute(delete(runs).where(runs.c.id.in_(ids)))
    return list(ids)

"""Deadlines: runs and tasks not ended in time are marked late, once, and the alert
event (run_late, task_late) is written to the outbox in the same transaction."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, select, update

from qflow.core import states as S
from qflow.store import outbox
from qflow.store.db import query
from qflow.store.models import OPEN_TASK, runs, tasks
from qflow.store.transitions import utcnow


@query()
def mark_late(conn: Connection) -> list[tuple[str, str, str | None]]:
    """Mark what is late now; returns (run_id, workflow, node or None) for each, newly.

    A run is late once its ``deadline_at`` (its logical time, or its creation, plus the
    workflow's deadline) has passed and it has not ended, started or not; a task once it
    has been running longer than its deadline. Each is marked by a conditional update, so
    concurrent maintenance threads mark (and alert) it once."""
    now = utcnow()
    found: list[tuple[str, str, str | None]] = []
    late_runs = conn.execute(
        update(runs).where(runs.c.late.is_(False), runs.c.deadline_at < now,
                           runs.c.state.in_((S.QUEUED, S.RUNNING)))
        .values(late=True).returning(runs.c.id, runs.c.workflow, runs.c.state)).all()
    for r in late_runs:
        outbox.record(conn, "run_late", r.id, state=r.state)
        found.append((r.id, r.workflow, None))
    running = conn.execute(select(tasks.c.id, tasks.c.run_id, tasks.c.node, tasks.c.attempts,
                                  tasks.c.started_at, tasks.c.deadline_s, runs.c.workflow)
                           .join(runs, runs.c.id == tasks.c.run_id).where(
        OPEN_TASK, tasks.c.state == S.RUNNING, tasks.c.deadline_s.is_not(None),
        tasks.c.late.is_(False))).all()
    for t in running:
        if t.started_at + dt.timedelta(seconds=t.deadline_s) >= now:
            continue
        if conn.execute(update(tasks).where(tasks.c.id == t.id, tasks.c.late.is_(False))
                        .values(late=True)).rowcount:
            outbox.record(conn, "task_late", t.run_id, t.node, t.attempts, state=S.RUNNING)
            found.append((t.run_id, t.workflow, t.node))
    return found

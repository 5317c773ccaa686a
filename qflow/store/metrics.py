"""Read-only queries behind /qflow/metrics. Each one reads an index or a small table:
none scans the tasks or attempts of every run."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, func, select

from qflow.store.models import OPEN_TASK, attempts, runs, tasks, workers

# (attempt id, state, started_at, finished_at): finished_at None while it runs.
Span = tuple[int, str, "dt.datetime | None", "dt.datetime | None"]


def runs_by_state(conn: Connection) -> list[tuple[str, str, int]]:
    """(workflow, state, count) of every run in the DB, in that order.

    An indexed GROUP BY, not running totals: the counts are read from
    ix_qflow_runs_workflow_state (workflow, state, created_at) alone, an index-only scan
    already in group order, instead of every run row. Totals kept beside the runs would
    make every run that starts or ends of a workflow update the same counter row."""
    return [(r[0], r[1], r[2]) for r in conn.execute(RUNS_BY_STATE)]


RUNS_BY_STATE = (select(runs.c.workflow, runs.c.state, func.count())
                 .group_by(runs.c.workflow, runs.c.state)
                 .order_by(runs.c.workflow, runs.c.state))


def open_tasks_by_queue(conn: Connection, states: tuple[str, ...]
                        ) -> list[tuple[str | None, str, int]]:
    """(queue, state, count) of the tasks in ``states``, some of OPEN_STATES (few at a
    time; ix_qflow_tasks_open)."""
    rows = conn.execute(select(tasks.c.queue, tasks.c.state, func.count())
                        .where(OPEN_TASK, tasks.c.state.in_(states))
                        .group_by(tasks.c.queue, tasks.c.state))
    return [(r[0], r[1], r[2]) for r in rows]


def last_attempt_id(conn: Connection) -> int:
    """The newest attempt's id (0 for none): the primary key's last entry."""
    return conn.execute(select(func.max(attempts.c.id))).scalar() or 0


def running_attempt_ids(conn: Connection) -> list[int]:
    """Ids of the current attempts of running tasks (via ix_qflow_tasks_open)."""
    rows = conn.execute(select(attempts.c.id)
                        .join(tasks, (tasks.c.id == attempts.c.task_id)
                              & (attempts.c.number == tasks.c.attempts))
                        .where(OPEN_TASK, tasks.c.state == "running"))
    return [r[0] for r in rows]


def attempt_spans(conn: Connection, after_id: int, ids: list[int], limit: int = 50_000
                  ) -> list[Span]:
    """Attempts newer than ``after_id`` (oldest first, at most ``limit``) and those in
    ``ids``, by primary key."""
    cols = (attempts.c.id, attempts.c.state, attempts.c.started_at, attempts.c.finished_at)
    newer = conn.execute(select(*cols).where(attempts.c.id > after_id)
                         .order_by(attempts.c.id).limit(limit)).all()
    known = conn.execute(select(*cols).where(attempts.c.id.in_(ids))).all() if ids else []
    return [tuple(r) for r in (*known, *newer)]


def heartbeats(conn: Connection) -> list[tuple[str, dt.datetime]]:
    """(worker name, last heartbeat, naive UTC) of every worker process on record."""
    return [(r[0], r[1]) for r in conn.execute(select(workers.c.name, workers.c.last_seen))]

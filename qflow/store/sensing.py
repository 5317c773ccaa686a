"""A sensor between pokes: its attempt is put back, ``sensing``, with the next poke due
later, and the message for that poke is sent with a countdown. Meanwhile it holds no
worker and no pool slot: a sensor that uses pools gives its slots back (admitting the
tasks that waited for them) and takes them again when its poke is due (see :func:`wake`),
waiting ``queued`` for them like any task if a pool is full then. The claim takes the poke
as it took the attempt at first (see :func:`qflow.store.attempts.claim`)."""
from __future__ import annotations

import datetime as dt
import json

from sqlalchemy import Connection, bindparam, select, update

from qflow.core import states as S
from qflow.core.records import Claimed, Dispatch, message_options
from qflow.store import attempts, pools
from qflow.store.db import query
from qflow.store.lifecycle import dispatch_rows
from qflow.store.models import runs, sensing, tasks
from qflow.store.transitions import set_task_state, transition_stmt, utcnow


@query()
def poke_later(conn: Connection, run_id: str, node: str, attempt: int, delay: float
               ) -> list[Dispatch]:
    """Put back ``attempt`` of a sensor that is not satisfied yet: ``sensing`` until its
    next poke, ``delay`` seconds from now, its pool slots given back. Returns the message
    of that poke and those of the tasks admitted to the slots, or nothing if the attempt
    no longer runs (a stale report). The attempt counter goes back one, so the poke's
    message carries the same attempt number (retries are not spent)."""
    now = utcnow()
    row = set_task_state(conn, run_id, node, S.SENSING, expect=(S.RUNNING,),
                         attempt=attempt, attempts=attempt - 1, worker=None, celery_id=None,
                         queued_at=now + dt.timedelta(seconds=delay),
                         returning=(tasks.c.id, tasks.c.queue, tasks.c.options,
                                    tasks.c.started_at, tasks.c.pools, tasks.c.holding))
    if row is None:
        return []
    _count_poke(conn, row.id, attempt, row.started_at or now)
    workflow = conn.execute(select(runs.c.workflow).where(runs.c.id == run_id)).scalar_one()
    again = Dispatch(run_id, node, attempt, row.queue, workflow, countdown=delay,
                     **message_options(row.options))
    if not row.holding:                     # no pools: nothing more to write
        return [again]
    admitted = pools.give_back(conn, row.id, json.loads(row.pools), now)
    return [again, *dispatch_rows(conn, admitted)]


def _wake_in_doubt(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
                   celery_id: str | None) -> Claimed | None:
    """:func:`wake` again after the connection dropped during the first try, which may
    have claimed the poke (see :func:`qflow.store.attempts.claim_in_doubt`)."""
    return (wake(conn, run_id, node, attempt, worker, celery_id)
            or attempts.claim_in_doubt(conn, run_id, node, attempt, worker, celery_id))


@query(in_doubt=_wake_in_doubt)
def wake(conn: Connection, run_id: str, node: str, attempt: int, worker: str,
         celery_id: str | None) -> Claimed | None:
    """Claim the due poke ``attempt`` of a sensor whose claim was refused because it
    gave its pool slots back while sensing: it takes them again and is claimed, or, if a
    pool is full, waits ``queued`` in that pool's wait list, to be published with the
    same attempt number by the task that frees a slot. None unless claimed now (also for
    a message that is not such a poke: a stale one, or one sent too early).

    Only asked after a refused claim, so neither a task without pools nor a sensor
    without pools pays a statement for it."""
    now = utcnow()
    stmt, params = transition_stmt(run_id, S.QUEUED, expect=(S.SENSING,), node=node,
                                   attempt=attempt - 1, returning=(tasks.c.id, tasks.c.pools))
    due = bindparam("w_due", type_=tasks.c.queued_at.type)
    row = conn.execute(stmt.where(tasks.c.pools.is_not(None), tasks.c.holding.is_(False),
                                  tasks.c.queued_at <= due),
                       {**params, "w_due": now + attempts.EARLY}).first()
    if row is None or not pools.acquire(conn, row.id, json.loads(row.pools), now):
        return None
    return attempts.claim(conn, run_id, node, attempt, worker, celery_id)


def _count_poke(conn: Connection, task_id: int, attempt: int, started: dt.datetime) -> None:
    done = conn.execute(update(sensing).where(sensing.c.task_id == task_id,
                                              sensing.c.number == attempt)
                        .values(pokes=sensing.c.pokes + 1)).rowcount
    if not done:                # the first poke: the attempt fence makes it the only one
        conn.execute(sensing.insert().values(task_id=task_id, number=attempt, since=started,
                                             pokes=1))


def sensing_since(conn: Connection, task_id: int, attempt: int) -> dt.datetime | None:
    """When ``attempt`` of a sensor was first poked, if it has been put back before."""
    return conn.execute(select(sensing.c.since).where(
        sensing.c.task_id == task_id, sensing.c.number == attempt)).scalar()

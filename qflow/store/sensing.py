"""A sensor between pokes: its attempt is put back, ``sensing``, with the next poke due
later, and the message for that poke is sent with a countdown. Meanwhile it holds no
worker; the claim takes it again as it took the attempt at first (see
:func:`qflow.store.attempts.claim`), once the poke is due."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, select, update

from qflow.core import states as S
from qflow.core.records import Dispatch, message_options
from qflow.store.db import query
from qflow.store.models import runs, sensing, tasks
from qflow.store.transitions import set_task_state, utcnow


@query()
def poke_later(conn: Connection, run_id: str, node: str, attempt: int, delay: float
               ) -> Dispatch | None:
    """Put back ``attempt`` of a sensor that is not satisfied yet: ``sensing`` until its
    next poke, ``delay`` seconds from now. Returns the message of that poke, or None if
    the attempt no longer runs (a stale report). The attempt counter goes back one, so
    the poke's message carries the same attempt number (retries are not spent)."""
    now = utcnow()
    row = set_task_state(conn, run_id, node, S.SENSING, expect=(S.RUNNING,),
                         attempt=attempt, attempts=attempt - 1, worker=None, celery_id=None,
                         queued_at=now + dt.timedelta(seconds=delay),
                         returning=(tasks.c.id, tasks.c.queue, tasks.c.options,
                                    tasks.c.started_at))
    if row is None:
        return None
    _count_poke(conn, row.id, attempt, row.started_at or now)
    workflow = conn.execute(select(runs.c.workflow).where(runs.c.id == run_id)).scalar_one()
    return Dispatch(run_id, node, attempt, row.queue, workflow, countdown=delay,
                    **message_options(row.options))


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

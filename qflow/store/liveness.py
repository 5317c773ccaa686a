"""Queries behind worker liveness: heartbeats, lost attempts, unsent and stale messages."""
from __future__ import annotations

import datetime as dt

from sqlalchemy import Connection, delete, exists, false, func, insert, select, true, tuple_, update
from sqlalchemy.exc import IntegrityError

from qflow.core import states as S
from qflow.core.records import Dispatch, message_options
from qflow.store import window
from qflow.store.bulk import in_chunks
from qflow.store.db import query
from qflow.store.lifecycle import RunWriter, top_up
from qflow.store.models import OPEN_TASK, attempts, runs, tasks, workers
from qflow.store.transitions import count_tasks, utcnow

WAITING = (S.QUEUED, S.RETRYING, S.SENSING)    # each has a message


@query()
def heartbeat(conn: Connection, name: str, pid: int, started_at: dt.datetime,
              queues: str | None = None, concurrency: int | None = None) -> None:
    """Record that worker ``name`` (this incarnation, serving the comma-separated
    ``queues`` with ``concurrency`` processes, if known) is alive now, by the DB's
    clock."""
    now = db_now(conn)
    values = dict(pid=pid, started_at=started_at, last_seen=now,
                  **({"queues": queues} if queues is not None else {}),
                  **({"concurrency": concurrency} if concurrency is not None else {}))
    done = conn.execute(update(workers).where(workers.c.name == name)
                        .values(**values)).rowcount
    if not done:
        try:
            with conn.begin_nested():
                conn.execute(insert(workers).values(name=name, **values))
        except IntegrityError:           # another process of the same name won the race
            pass


@query()
def assign_worker(conn: Connection, run_id: str, node: str, attempt: int, name: str) -> None:
    """Name the process that now runs this attempt (an async task's event loop)."""
    conn.execute(update(tasks).where(tasks.c.run_id == run_id, tasks.c.node == node,
                                     tasks.c.attempts == attempt, tasks.c.state == S.RUNNING)
                 .values(worker=name))


@query()
def forget(conn: Connection, name: str, pid: int) -> None:
    """A worker that stopped cleanly (no task left running) removes its row."""
    conn.execute(delete(workers).where(workers.c.name == name, workers.c.pid == pid))


def workers_named(conn: Connection, pattern: str) -> list[tuple[str, int]]:
    """(name, pid) of the registered workers whose name is LIKE ``pattern``."""
    return [tuple(r) for r in conn.execute(
        select(workers.c.name, workers.c.pid).where(workers.c.name.like(pattern)))]


@query()
def silence(conn: Connection, names: list[str]) -> None:
    """Mark workers as not seen for a long time (their process is known to be gone)."""
    conn.execute(update(workers).where(workers.c.name.in_(names))
                 .values(last_seen=DEAD))


DEAD = dt.datetime(2000, 1, 1)          # the last_seen of a worker known to be gone


def lost_attempts(conn: Connection, timeout: float, trust_silence: bool = True
                  ) -> list[tuple[str, str, int]]:
    """Running attempts whose worker stopped heartbeating, restarted since, or is gone.

    A worker that stops cleanly removes its row; an attempt still running under a name
    with no row (its outcome could not be recorded, say) is lost once it is ``timeout``
    old. Heartbeats are stamped and compared by the DB's clock, so hosts whose clocks
    disagree do not declare each other dead. Without ``trust_silence`` (the caller may
    itself have been cut off from the DB lately, and every heartbeat looks old after an
    outage) silence alone proves nothing: only a restart, a row known dead, or no row.
    """
    cutoff = db_now(conn) - dt.timedelta(seconds=timeout)
    gone = workers.c.name.is_(None) & (tasks.c.started_at < cutoff)
    silent = workers.c.last_seen < cutoff if trust_silence else workers.c.last_seen <= DEAD
    rows = conn.execute(
        select(tasks.c.run_id, tasks.c.node, tasks.c.attempts)
        .outerjoin(workers, workers.c.name == tasks.c.worker)
        .where(OPEN_TASK, tasks.c.state == S.RUNNING,
               silent | (tasks.c.started_at < workers.c.started_at) | gone))
    return [(r.run_id, r.node, r.attempts) for r in rows]


def db_now(conn: Connection):
    """Now by the DB server's clock, as naive UTC (the store's convention): on PostgreSQL
    an SQL expression, on SQLite (one host) this process's clock."""
    if conn.dialect.name == "postgresql":
        return func.timezone("UTC", func.now())
    return utcnow()


def running_under(conn: Connection, celery_id: str) -> list[tuple[str, str, int]]:
    """Attempts still running that were claimed under this Celery message."""
    rows = conn.execute(select(tasks.c.run_id, tasks.c.node, tasks.c.attempts).where(
        OPEN_TASK, tasks.c.state == S.RUNNING, tasks.c.celery_id == celery_id))
    return [(r.run_id, r.node, r.attempts) for r in rows]


@query()
def mark_unsent(conn: Connection, items: list[Dispatch]) -> None:
    """Remember released tasks whose message could not be published."""
    for chunk in in_chunks((i.run_id, i.node) for i in items):
        conn.execute(update(tasks)
                     .where(tuple_(tasks.c.run_id, tasks.c.node).in_(chunk),
                            tasks.c.state.in_(WAITING))
                     .values(unsent=True))


def live_workers(conn: Connection, timeout: float) -> list[tuple[str, int | None]]:
    """(comma-separated queues, concurrency or None) of the workers heard from in the last
    ``timeout`` seconds that said which queues they serve."""
    cutoff = db_now(conn) - dt.timedelta(seconds=timeout)
    return [tuple(r) for r in conn.execute(select(workers.c.queues, workers.c.concurrency)
                                           .where(workers.c.last_seen >= cutoff,
                                                  workers.c.queues.is_not(None)))]


@query()
def take_unsent(conn: Connection, limit: int = 1000, signed_only: bool = False
                ) -> list[Dispatch]:
    """Unmark and return up to ``limit`` unsent tasks, to publish them now (with
    ``signed_only``, only tasks of runs created by a process that signs), and the
    held-back tasks of runs whose dispatch window has places free that no completion
    filled (see qflow.store.window)."""
    found = _redispatch(conn, tasks.c.unsent == true(), limit, signed_only)
    for run_id, workflow in window.stalled(conn, signed_only):
        found += top_up(conn, run_id, workflow)
    return found


@query()
def take_stale(conn: Connection, older_than: float, queues: list[str | None] | None = None,
               limit: int = 1000, signed_only: bool = False) -> list[Dispatch]:
    """Tasks due for longer than ``older_than`` seconds that no worker has claimed (in
    ``queues`` only, if given; None is the default queue): their message may be lost (a
    broker restart without persistence); publish them again. A duplicate is harmless:
    only one delivery can claim the attempt."""
    condition = _stale(older_than)
    if queues is not None:
        named = [q for q in queues if q is not None]
        condition &= tasks.c.queue.in_(named) | (
            tasks.c.queue.is_(None) if None in queues else false())
    return _redispatch(conn, condition, limit, signed_only)


def stale_counts(conn: Connection, older_than: float) -> dict[str | None, int]:
    """How many tasks :func:`take_stale` would find, by queue."""
    return dict(conn.execute(
        select(tasks.c.queue, func.count()).where(
            OPEN_TASK, tasks.c.state.in_(WAITING), _stale(older_than), HAS_MESSAGE)
        .group_by(tasks.c.queue)).all())


def _stale(older_than: float):
    return tasks.c.queued_at < utcnow() - dt.timedelta(seconds=older_than)


# A task waiting for a pool slot, or for a place in its run's dispatch window, has no
# message on purpose. A sensing sensor has its next poke's, though it gave its slots back.
HAS_MESSAGE = ((tasks.c.pools.is_(None) | tasks.c.holding.is_(True)
                | (tasks.c.state == S.SENSING)) & tasks.c.held_back.is_(False))


def _redispatch(conn: Connection, condition, limit: int, signed_only: bool = False
                ) -> list[Dispatch]:
    if signed_only:
        # A signing process re-sending the message of a run whose creator did not sign
        # would sign, as the user's intent, what its peers refused as untrusted.
        condition &= ~exists().where(runs.c.id == tasks.c.run_id, runs.c.unsigned.is_(True))
    ids = select(tasks.c.id).where(OPEN_TASK, tasks.c.state.in_(WAITING), condition,
                                   HAS_MESSAGE).limit(limit)
    rows = conn.execute(
        update(tasks).where(tasks.c.id.in_(ids.scalar_subquery()))
        .values(unsent=False, queued_at=utcnow())
        .returning(tasks.c.run_id, tasks.c.node, tasks.c.attempts, tasks.c.queue,
                   tasks.c.options)).all()
    if not rows:
        return []
    names = dict(conn.execute(select(runs.c.id, runs.c.workflow).where(
        runs.c.id.in_({r.run_id for r in rows}))).all())
    return [Dispatch(r.run_id, r.node, r.attempts + 1, r.queue, names[r.run_id],
                     **message_options(r.options)) for r in rows]


def redeliveries(conn: Connection, run_id: str, node: str) -> int:
    """How many attempts of this task (since it was last resumed) lost their worker."""
    row = conn.execute(select(tasks.c.id, tasks.c.first_attempt).where(
        tasks.c.run_id == run_id, tasks.c.node == node)).one()
    first = row.first_attempt or 1
    return conn.execute(select(func.count()).select_from(attempts).where(
        attempts.c.task_id == row.id, attempts.c.number >= first,
        attempts.c.error_type == "WorkerLost")).scalar_one()


@query()
def finish_stuck_runs(conn: Connection, min_age: float = 10.0) -> list[tuple]:
    """Runs still open with no task left to end: recount and end them. Returns
    (run_id, workflow, :class:`~qflow.store.lifecycle.Progress`) for each."""
    cutoff = utcnow() - dt.timedelta(seconds=min_age)
    active = exists().where(tasks.c.run_id == runs.c.id, tasks.c.state.in_(S.ACTIVE))
    stuck = conn.execute(select(runs.c.id, runs.c.workflow).where(
        runs.c.state.in_((S.QUEUED, S.RUNNING)), runs.c.created_at < cutoff, ~active)).all()
    out = []
    for run in stuck:
        failed = count_tasks(conn, run.id, S.FAILED, S.UPSTREAM_FAILED)
        canceled = count_tasks(conn, run.id, S.CANCELED)
        conn.execute(update(runs).where(runs.c.id == run.id).values(
            tasks_left=0, tasks_failed=failed, tasks_canceled=canceled))
        ended = RunWriter(conn, run.id, run.workflow).end((failed, canceled))
        if ended.final is not None:
            out.append((run.id, run.workflow, ended))
    return out

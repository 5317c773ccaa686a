"""Concurrency limits enforced in the DB, across every worker and host.

A pool has ``slots``; a task that needs a pool takes a slot when it is released and gives
it back when it ends (a retry keeps it). The tasks that hold a slot (``holding``) are those
released and not ended, except a sensor between pokes: it gives its slots back while
``sensing`` and takes them again when its next poke is due (see
:mod:`qflow.store.sensing`). A task that finds no free slot stays ``queued``
without a message, in ``qflow_pool_waits``; the task that frees a slot admits the oldest
waiter, so waiting costs no worker process and no polling. A workflow's
``max_active_tasks`` is the pool ``workflow:NAME``; its ``max_active_runs`` the pool
``runs:NAME``, whose waiting runs are ``held``.
"""
from __future__ import annotations

import datetime as dt
import functools
import json
from dataclasses import dataclass, field

from sqlalchemy import (
    Connection,
    Select,
    Update,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from qflow.core import states as S
from qflow.core.dag import Graph
from qflow.errors import UserError
from qflow.store.bulk import in_chunks
from qflow.store.models import pool_waits, pools, runs, tasks
from qflow.store.transitions import run_transition_stmt, set_run_state


@dataclass(frozen=True)
class Limits:
    """The concurrency limits a new run is subject to."""

    pools: dict[str, int] = field(default_factory=dict)     # from the config
    max_active_tasks: int | None = None
    max_active_runs: int | None = None

    def register(self, conn: Connection, graph: Graph) -> dict[str, list[str]]:
        """Make sure every pool exists; return the pools of each node that needs any."""
        ensure(conn, self.pools, overwrite=False)
        shared = []
        if self.max_active_tasks is not None:
            shared = [task_pool(graph.workflow)]
            ensure(conn, {shared[0]: self.max_active_tasks}, overwrite=True)
        needed = {n.id: sorted({*shared, *([n.options["pool"]] if n.options.get("pool")
                                           else [])}) for n in graph.nodes.values()
                  if shared or n.options.get("pool")}
        check_known(conn, {p for names in needed.values() for p in names})
        return needed


def task_pool(workflow: str) -> str:
    return f"workflow:{workflow}"


def run_pool(workflow: str) -> str:
    return f"runs:{workflow}"


def ensure(conn: Connection, slots: dict[str, int], overwrite: bool) -> None:
    """Create missing pools; with ``overwrite``, also set the slots of existing ones."""
    for name, n in slots.items():
        if overwrite and conn.execute(update(pools).where(pools.c.name == name)
                                      .values(slots=n)).rowcount:
            continue
        exists = conn.execute(select(pools.c.name).where(pools.c.name == name)).first()
        if exists is None:
            try:
                with conn.begin_nested():
                    conn.execute(insert(pools).values(name=name, slots=n, used=0))
            except IntegrityError:        # created meanwhile by another trigger
                pass


def check_known(conn: Connection, names: set[str]) -> None:
    if not names:
        return
    found = {r.name for r in conn.execute(select(pools.c.name).where(pools.c.name.in_(names)))}
    missing = sorted(names - found)
    if missing:
        raise UserError(f"unknown pool {missing[0]!r}: give it slots with `qflow pools set "
                        f"{missing[0]} N` or in the config's `pools`")


def set_slots(conn: Connection, name: str, slots: int, now: dt.datetime) -> list[tuple]:
    """Create or resize a pool; returns the waiting tasks it now admits."""
    ensure(conn, {name: slots}, overwrite=True)
    return admit(conn, [name], now)


def listing(conn: Connection) -> list[dict]:
    waiting = dict(conn.execute(select(pool_waits.c.pool, func.count())
                                .group_by(pool_waits.c.pool)).all())
    return [{"name": r.name, "slots": r.slots, "used": r.used,
             "waiting": waiting.get(r.name, 0)}
            for r in conn.execute(select(pools).order_by(pools.c.name))]


def acquire(conn: Connection, task_id: int, names: list[str], now: dt.datetime) -> bool:
    """Take one slot of each pool (in name order, so two takers cannot deadlock), or
    none and wait for the first that is full."""
    taken: list[str] = []
    for name in sorted(names):
        if _take(conn, name):
            taken.append(name)
            continue
        for done in taken:
            _give(conn, done)
        exists = conn.execute(select(pool_waits.c.task_id).where(
            pool_waits.c.pool == name, pool_waits.c.task_id == task_id)).first()
        if exists is None:
            conn.execute(insert(pool_waits).values(pool=name, task_id=task_id, since=now))
        return False
    # Queued with a message from now: a task that waited for its slot longer than
    # requeue_after must not look stale (and be sent twice) the moment it is admitted.
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(holding=True,
                                                                   queued_at=now))
    return True


def _take(conn: Connection, name: str) -> bool:
    return bool(conn.execute(update(pools).where(pools.c.name == name,
                                                 pools.c.used < pools.c.slots)
                             .values(used=pools.c.used + 1)).rowcount)


def _give(conn: Connection, name: str) -> bool | None:
    """Give back a slot of pool ``name``; whether it has room now (None: no such pool)."""
    return conn.execute(update(pools).where(pools.c.name == name).values(
        used=case((pools.c.used > 0, pools.c.used - 1), else_=0))
        .returning(pools.c.used < pools.c.slots)).scalar()


def give_back(conn: Connection, task_id: int, names: list[str], now: dt.datetime
              ) -> list[tuple]:
    """An ended task returns its slots; returns the waiting tasks this admits."""
    for name in names:
        _give(conn, name)
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(holding=False))
    return admit(conn, names, now)


def forget_waits(conn: Connection, task_ids: list[int]) -> None:
    for chunk in in_chunks(task_ids):
        conn.execute(delete(pool_waits).where(pool_waits.c.task_id.in_(chunk)))


def admit(conn: Connection, names: list[str], now: dt.datetime) -> list[tuple]:
    """Give free slots to the oldest waiters; returns (run_id, node, attempts, queue,
    options) of the tasks that may now be published."""
    admitted = []
    for name in names:
        while _has_room(conn, name):
            waiter = conn.execute(select(pool_waits.c.task_id).where(pool_waits.c.pool == name)
                                  .order_by(pool_waits.c.since).limit(1)).scalar()
            if waiter is None:
                break
            if not conn.execute(delete(pool_waits).where(
                    pool_waits.c.pool == name, pool_waits.c.task_id == waiter)).rowcount:
                continue                              # admitted by someone else
            row = conn.execute(select(tasks.c.run_id, tasks.c.node, tasks.c.attempts,
                                      tasks.c.queue, tasks.c.options, tasks.c.pools,
                                      tasks.c.state).where(tasks.c.id == waiter)).one()
            if row.state == S.QUEUED and acquire(conn, waiter, json.loads(row.pools), now):
                admitted.append(row)
    return admitted


def _has_room(conn: Connection, name: str) -> bool:
    return bool(conn.execute(select(pools.c.name).where(
        pools.c.name == name, pools.c.used < pools.c.slots)).first())


# -- max_active_runs ----------------------------------------------------------------------
ASK = object()      # see next_run


def end_run(conn: Connection, run_id: str, workflow: str, final: str, now: dt.datetime
            ) -> tuple[object, object]:
    """Give an open run its ``final`` state (qflow.store.transitions.set_run_state) and,
    unless it was held, its place in its workflow's max_active_runs pool back: one
    statement on PostgreSQL. Returns the run's (id, held) row, None if this call did not
    end it, and what :func:`_give` said (:data:`ASK` where it was not asked yet)."""
    if conn.dialect.name != "postgresql":
        return set_run_state(conn, run_id, final, finished_at=now), ASK
    stmt, params = _run_ends(run_id, workflow, final, now)
    ended = conn.execute(_ending_run(stmt), params).first()
    return ended, None if ended is None else ended.room


def end_unlimited(conn: Connection, run_id: str, workflow: str, final: str, now: dt.datetime):
    """End an open run (as :func:`end_run`) only if it has no place to give back: not
    held, and its workflow has no max_active_runs pool. Its (id, held) row, or None."""
    stmt, params = _run_ends(run_id, workflow, final, now)
    return conn.execute(_unlimited(stmt), params).first()


def _run_ends(run_id: str, workflow: str, final: str, now: dt.datetime
              ) -> tuple[Update, dict]:
    """set_run_state's UPDATE ending a run, and its parameters with its pool's name."""
    return run_transition_stmt(final, None, ("finished_at",)), {
        "r_run_id": run_id, "r_finished_at": now, "p_name": run_pool(workflow)}


@functools.lru_cache(maxsize=8)
def _unlimited(run_ended: Update) -> Update:
    return run_ended.where(runs.c.held.is_(False), ~exists().where(
        pools.c.name == bindparam("p_name")))


@functools.lru_cache(maxsize=8)
def _ending_run(run_ended: Update) -> Select:
    """``run_ended`` (the UPDATE ending a run, returning its ``id`` and ``held``) and, if
    the run was not held, the give-back of its place (parameter ``p_name``) as one
    statement (PostgreSQL's data-modifying WITH; the run's row is locked before the
    pool's, as when they were two), with ``room`` as :func:`_give` says it (NULL: no
    pool was given a place back)."""
    row = run_ended.cte("ended")
    given = (update(pools).where(pools.c.name == bindparam("p_name"),
                                 exists(select(row.c.id).where(row.c.held.is_(False))))
             .values(used=case((pools.c.used > 0, pools.c.used - 1), else_=0))
             .returning((pools.c.used < pools.c.slots).label("room")).cte("given"))
    return select(row.c.id, row.c.held,
                  select(given.c.room).scalar_subquery().label("room")).add_cte(given)


def take_run_place(conn: Connection, workflow: str, limit: int | None) -> bool:
    """Take a place for a new run; False when the workflow already has ``limit`` runs
    going (the run is then inserted ``held``)."""
    if limit is None:
        return True
    ensure(conn, {run_pool(workflow): limit}, overwrite=True)
    return _take(conn, run_pool(workflow))


def next_run(conn: Connection, workflow: str, was_held: bool, room: object = ASK
              ) -> str | None:
    """A run ended: free its place and return the oldest held run that takes it.
    ``room``: what :func:`_give` said, where the run's end gave its place back already
    (see :func:`end_run`)."""
    # No statement more when the workflow has no max_active_runs (no pool row): every
    # run's end passes here.
    if not was_held:
        if room is ASK:
            room = _give(conn, run_pool(workflow))
        if not room:
            return None
    while _has_room(conn, run_pool(workflow)):
        candidate = conn.execute(select(runs.c.id).where(
            runs.c.workflow == workflow, runs.c.held.is_(True), runs.c.state == S.QUEUED)
            .order_by(runs.c.created_at).limit(1)).scalar()
        if candidate is None:
            return None
        if conn.execute(update(runs).where(runs.c.id == candidate, runs.c.held.is_(True))
                        .values(held=False)).rowcount and _take(conn, run_pool(workflow)):
            return candidate
    return None

"""Bounded dispatch: a run has at most ``dispatch_window`` of its tasks out at a time.

A task takes a place in its run's window when it is released to run (its message sent,
a worker running it after its parent, or waiting for a pool slot) and gives it back when
it ends; a retry or a sensor's next poke keeps it. A task released while the window is
full is ``queued`` and ``held_back``: no message, so the broker never holds more than the
window of a run's tasks (a run of 20,000 roots otherwise puts 20,000 messages in Redis
before the first one runs). The completion that frees a place takes the next held-back
task (highest priority, then oldest row) from a partial index, so no part of a run is
ever scanned and nothing polls.

The run's row counts both (``in_flight``, ``backlog``). Every change to them is made
with that row locked by the transaction that changes the tasks, so a count is never
decided on a stale view. Places a lost transaction freed but did not fill (a worker
killed between its outcome and the top-up) are filled by the next completion, or by the
reconciler (:func:`stalled`) when none is left to come. A task topped up but whose
message was lost counts as sent: the reconciler's stale re-send covers it as any other.
The size is the run row's ``dispatch_window``, which for ``"auto"`` follows the live
workers (qflow.store.sizing): a change of it is read like the counters.
"""
from __future__ import annotations

import datetime as dt
import functools
import heapq
import itertools
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Select,
    Update,
    bindparam,
    case,
    exists,
    func,
    select,
    true,
    update,
)

from qflow.core import states as S
from qflow.store.bulk import IN_CHUNK
from qflow.store.models import runs, tasks
from qflow.store.transitions import set_task_state, transition, transition_stmt


@dataclass
class Room:
    """A run's window as the transaction holding its row sees it."""

    size: int | None            # None: no bound (nothing is counted)
    in_flight: int = 0
    backlog: int = 0

    @classmethod
    def of(cls, row) -> Room:
        return cls(row.dispatch_window, row.in_flight, row.backlog)

    @property
    def free(self) -> int:
        return 0 if self.size is None else max(self.size - self.in_flight, 0)

    @property
    def stalled(self) -> bool:
        """Tasks wait for places that are free: a top-up is due once a tenth of the
        window is free (or as many places as tasks wait), so a full window costs one
        top-up per tenth of it, not one per task."""
        return self.backlog > 0 and self.free >= min(self.backlog, self.step)

    @property
    def step(self) -> int:
        return max(1, (self.size or 0) // 10)

    def take(self, n: int) -> int:
        """Count ``n`` tasks released now; return how many of them get a place (the rest
        are held back): none of them while others wait, which come first in the window's order."""
        if self.size is None:
            return n
        placed = 0 if self.backlog else min(n, self.free)
        self.in_flight += placed
        self.backlog += n - placed
        return placed

    def counters(self, placed: int, held: int) -> dict[str, Any]:
        """The run row's new counters once ``placed`` tasks took a place and ``held``
        were held back (nothing for a run without a bound)."""
        if self.size is None:
            return {}
        return {"in_flight": runs.c.in_flight + placed, "backlog": runs.c.backlog + held}


def placed_at_start(priorities: dict[str, int], size: int | None) -> set[str] | None:
    """Which of a new run's ready tasks (node: priority, in row order) take a place at
    once: the ``size`` first in the window's order (None: all of them). The others wait."""
    if size is None or len(priorities) <= size:
        return None
    if len(set(priorities.values())) == 1:          # the usual run: row order alone
        return set(itertools.islice(priorities, size))
    first = heapq.nsmallest(size, enumerate(priorities.items()),
                            key=lambda item: (-item[1][1], item[0]))
    return {node for _, (node, _) in first}


def priority_of(options: dict) -> int:
    return options.get("priority") or 0


class Window:
    """The window of one run inside one write transaction (see :class:`Room`)."""

    def __init__(self, conn: Connection, run_id: str, room: Room | None = None):
        self.conn = conn
        self.run_id = run_id
        self._room = room

    @property
    def room(self) -> Room:
        """The run's window, read (and its row locked) when first needed."""
        if self._room is None:
            self._room = Room.of(self.conn.execute(
                select(runs.c.dispatch_window, runs.c.in_flight, runs.c.backlog)
                .where(runs.c.id == self.run_id).with_for_update()).one())
        return self._room

    @property
    def stalled(self) -> bool:
        return self._room is not None and self._room.stalled

    def release(self, node: str, now: dt.datetime) -> tuple[Any, bool] | None:
        """Queue a pending task whose trigger rule is met: with a place, or held back if
        the window is full. Returns its row and whether it was held back, or None if
        another transaction released it first."""
        room = self.room
        if room.size is None:
            row = set_task_state(self.conn, self.run_id, node, S.QUEUED, expect=(S.PENDING,),
                                 queued_at=now)
            return None if row is None else (row, False)
        if room.backlog or not room.free:
            row = set_task_state(self.conn, self.run_id, node, S.QUEUED, expect=(S.PENDING,),
                                 queued_at=now, held_back=True)
            if row is None:
                return None
            room.take(1)
            self.conn.execute(update(runs).where(runs.c.id == self.run_id)
                              .values(room.counters(0, 1)))
            return row, True
        row = self._release_placed(node, now)
        if row is None:
            return None
        room.take(1)
        return row, False

    def release_many(self, nodes: list[str], now: dt.datetime) -> list[tuple[Any, bool]]:
        """:meth:`release` of many children of one parent at once: the first ones with
        the free places, the others held back, each group one statement per
        :data:`~qflow.store.bulk.IN_CHUNK` names, and the run's counters one more (a task
        with 100,000 children is a few statements, not 200,000). Returns (row, held back)
        for those this transaction released; rows have ``id`` and ``node``."""
        room = self.room
        k = room.take(len(nodes))
        if room.size is not None and k == len(nodes) and len(nodes) <= IN_CHUNK \
                and self.conn.dialect.name == "postgresql":     # every one has a place
            # One statement, the run's count of them in it (as in _release_placed).
            stmt, params = transition_stmt(self.run_id, S.QUEUED, expect=(S.PENDING,),
                                           returning=(tasks.c.id, tasks.c.node),
                                           by_nodes=True, queued_at=now, held_back=False)
            params.update(t_nodes=nodes, w_run_id=self.run_id)
            placed = self.conn.execute(_counting_place(stmt), params).all()
            room.in_flight -= k - len(placed)
            return [(row, False) for row in placed]
        placed, held = (
            transition(self.conn, self.run_id, S.QUEUED, expect=(S.PENDING,), nodes=group,
                       returning=(tasks.c.id, tasks.c.node), queued_at=now, held_back=back)
            for group, back in ((nodes[:k], False), (nodes[k:], True)))
        if room.size is not None:
            # take() counted every node; another transaction may have released some first
            room.in_flight -= k - len(placed)
            room.backlog -= len(nodes) - k - len(held)
            if placed or held:
                self.conn.execute(update(runs).where(runs.c.id == self.run_id)
                                  .values(room.counters(len(placed), len(held))))
        return [(row, False) for row in placed] + [(row, True) for row in held]

    def _release_placed(self, node: str, now: dt.datetime):
        """The release and the run's count of it as one statement on PostgreSQL (as many
        statements as a release without a window costs), two elsewhere."""
        stmt, params = transition_stmt(self.run_id, S.QUEUED, expect=(S.PENDING,), node=node,
                                       queued_at=now)
        if self.conn.dialect.name == "postgresql":
            params["w_run_id"] = self.run_id
            return self.conn.execute(_counting_place(stmt), params).first()
        row = self.conn.execute(stmt, params).first()
        if row is not None:
            self.conn.execute(update(runs).where(runs.c.id == self.run_id)
                              .values(in_flight=runs.c.in_flight + 1))
        return row

    def take_held(self, now: dt.datetime) -> list:
        """Give the free places to held-back tasks, in the window's order; returns their
        rows (to publish, or to wait for their pools). Tasks another transaction is
        taking are skipped, not waited for."""
        room = self.room
        n = min(room.backlog, room.free)
        if n <= 0:
            return []
        # Read first, then written: as a subquery of the UPDATE, PostgreSQL may run the
        # locking SELECT again per row and take more than n (seen here).
        picked = self.conn.execute(
            select(tasks.c.id).where(tasks.c.run_id == self.run_id, tasks.c.held_back == true())
            .order_by(tasks.c.priority.desc(), tasks.c.id).limit(n)
            .with_for_update(skip_locked=True)).scalars().all()
        rows = self.conn.execute(
            update(tasks).where(tasks.c.id.in_(picked), tasks.c.held_back == true(),
                                tasks.c.state == S.QUEUED)
            .values(held_back=False, queued_at=now)
            .returning(tasks.c.id, tasks.c.node, tasks.c.queue, tasks.c.options,
                       tasks.c.attempts, tasks.c.pools)).all()
        room.in_flight += len(rows)
        room.backlog -= len(rows)
        if len(rows) < n:            # fewer than counted: count again (by the index)
            room.backlog = self.conn.execute(select(func.count()).where(
                tasks.c.run_id == self.run_id, tasks.c.held_back == true())).scalar_one()
        self.conn.execute(update(runs).where(runs.c.id == self.run_id).values(
            in_flight=room.in_flight, backlog=room.backlog))
        return rows

    def forget_canceled(self) -> None:
        """Canceled tasks no longer wait for a place. (Places held by canceled tasks are
        not given back: a canceled run releases nothing more, and a resume starts its
        count again, see :func:`reset`.)"""
        gone = self.conn.execute(update(tasks).where(
            tasks.c.run_id == self.run_id, tasks.c.held_back == true(),
            tasks.c.state == S.CANCELED).values(held_back=False)).rowcount
        if gone:
            self.conn.execute(update(runs).where(runs.c.id == self.run_id)
                              .values(backlog=runs.c.backlog - gone))
            if self._room is not None:
                self._room.backlog -= gone


@functools.lru_cache(maxsize=8)
def _counting_place(release: Update) -> Select:
    """``release`` (the UPDATE queueing tasks) and, if it queued any, as many places
    taken on the run's row (PostgreSQL's data-modifying WITH)."""
    row = release.cte("released")
    placed = (update(runs).where(runs.c.id == bindparam("w_run_id"), exists(select(row.c.id)))
              .values(in_flight=runs.c.in_flight
                      + select(func.count()).select_from(row).scalar_subquery())
              .cte("placed"))
    return select(row).add_cte(placed)


def hand_over(conn: Connection, run_id: str, now: dt.datetime):
    """Take the next held-back task of a run (in the window's order) for the place of a
    task of it that is ending in this transaction; its row, or None if none waits (or
    every one is being taken by another transaction). The run's row is not read here:
    the ending task's count moves the place (``handed`` in
    qflow.store.counts.count_params), so the run's row is locked only by that one
    statement, late in the transaction; :func:`hand_back` undoes a take the count
    refuses (the window shrank meanwhile) or a report that proved stale."""
    return conn.execute(_HAND_OVER, {"h_run_id": run_id, "h_now": now}).first()


def hand_back(conn: Connection, run_id: str, task_id: int, counted: bool) -> None:
    """Undo :func:`hand_over`: the task waits again; ``counted``: the run's row had
    counted it as placed (in_flight) instead of waiting (backlog)."""
    conn.execute(update(tasks).where(tasks.c.id == task_id).values(held_back=True))
    if counted:
        conn.execute(update(runs).where(runs.c.id == run_id).values(
            in_flight=runs.c.in_flight - 1, backlog=runs.c.backlog + 1))


# One statement: the pick is a scalar subquery (evaluated once), not an IN, which
# PostgreSQL may run again per row (see Window.take_held).
_HAND_OVER = (update(tasks).where(
    tasks.c.id == select(tasks.c.id).where(
        tasks.c.run_id == bindparam("h_run_id"), tasks.c.held_back == true())
    .order_by(tasks.c.priority.desc(), tasks.c.id).limit(1)
    .with_for_update(skip_locked=True).scalar_subquery(),
    tasks.c.held_back == true(), tasks.c.state == S.QUEUED)
    .values(held_back=False, queued_at=bindparam("h_now", type_=tasks.c.queued_at.type))
    .returning(tasks.c.id, tasks.c.node, tasks.c.queue, tasks.c.options, tasks.c.attempts,
               tasks.c.pools))


# Per run, whether tasks waited for places in its window at this process's last count
# of it (see qflow.store.attempts.finish): a run wider than its window, whose tasks end
# side by side on every worker. Forgotten all at once past a few thousand runs.
_WAITING: dict[str, bool] = {}


def note_waiting(run_id: str, waits: bool) -> None:
    if len(_WAITING) >= 4096:
        _WAITING.clear()
    _WAITING[run_id] = waits


def waiting(run_id: str) -> bool | None:
    """Whether tasks of the run waited for places at this process's last count of it
    (None: not counted here yet)."""
    return _WAITING.get(run_id)


def reset(conn: Connection, run_id: str) -> None:
    """A resumed run starts its count again: every task of it has ended (only an ended
    run is resumed), so none holds a place or waits for one."""
    conn.execute(update(runs).where(runs.c.id == run_id).values(in_flight=0, backlog=0))


def stalled(conn: Connection, signed_only: bool = False, idle: bool = False
            ) -> list[tuple[str, str]]:
    """(run id, workflow) of open runs whose held-back tasks wait for places that are
    free: the completion that should have filled them was lost, or has not committed its
    top-up yet (see the module). ``idle``: only runs with nothing in flight either, whose
    tasks wait for the reconciler alone. ``signed_only``: of runs whose creator signs
    (see qflow.store.liveness)."""
    step = case((runs.c.dispatch_window >= 20, runs.c.dispatch_window / 10), else_=1)
    need = case((runs.c.backlog < step, runs.c.backlog), else_=step)       # as Room.stalled
    condition = (runs.c.in_flight == 0 if idle
                 else runs.c.dispatch_window - runs.c.in_flight >= need)
    if signed_only:
        condition &= runs.c.unsigned.is_(False)
    return [tuple(r) for r in conn.execute(select(runs.c.id, runs.c.workflow).where(
        runs.c.state.in_((S.QUEUED, S.RUNNING)), runs.c.held.is_(False),
        runs.c.backlog > 0, condition))]

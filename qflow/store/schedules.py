"""Queries behind schedules, backfills and pauses. Times are naive UTC, as in the store."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import Connection, Row, func, select, update

from qflow.core import states as S
from qflow.store.models import runs, schedules

ACTIVE = (S.QUEUED, S.RUNNING)


@dataclass(frozen=True)
class ScheduleState:
    """A workflow's row in ``qflow_schedules``."""

    paused: bool
    registered_at: dt.datetime
    unpaused_at: dt.datetime | None


def get_state(conn: Connection, workflow: str, lock: bool = False) -> ScheduleState | None:
    """The workflow's scheduler state; ``lock`` holds its row until the transaction ends,
    which serialises schedulers creating runs of one workflow (PostgreSQL; SQLite's
    ``BEGIN IMMEDIATE`` already does)."""
    stmt = select(schedules.c.paused, schedules.c.registered_at, schedules.c.unpaused_at
                  ).where(schedules.c.workflow == workflow)
    row = conn.execute(stmt.with_for_update() if lock else stmt).first()
    return None if row is None else ScheduleState(bool(row.paused), row.registered_at,
                                                  row.unpaused_at)


def register(conn: Connection, workflow: str, now: dt.datetime) -> ScheduleState:
    """Create the workflow's row unless it exists (schedulers race here); return it."""
    # The connection's own dialect, loaded already: a command importing this module does
    # not load the other's package (every driver module) at start.
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    conn.execute(insert(schedules)
                 .values(workflow=workflow, paused=False, registered_at=now)
                 .on_conflict_do_nothing(index_elements=["workflow"]))
    return get_state(conn, workflow)


def set_paused(conn: Connection, workflow: str, paused: bool, now: dt.datetime) -> bool:
    """Pause or unpause; return False when it already was."""
    register(conn, workflow, now)
    stamp = {"paused_at": now} if paused else {"unpaused_at": now}
    changed = conn.execute(update(schedules)
                           .where(schedules.c.workflow == workflow,
                                  schedules.c.paused == (not paused))
                           .values(paused=paused, **stamp))
    return changed.rowcount == 1


def paused_workflows(conn: Connection) -> set[str]:
    """Names of the paused workflows."""
    return set(conn.execute(select(schedules.c.workflow).where(schedules.c.paused)).scalars())


def last_logical_time(conn: Connection, workflow: str, now: dt.datetime) -> dt.datetime | None:
    """The newest logical time, not after ``now``, that has a run of ``workflow``."""
    # Superseded runs share their logical time with the current one; leaving them out
    # lets PostgreSQL use the partial unique index.
    return conn.execute(select(func.max(runs.c.logical_time))
                        .where(runs.c.workflow == workflow, runs.c.logical_time <= now,
                               runs.c.superseded_by.is_(None))).scalar()


def active_runs(conn: Connection, workflow: str) -> int:
    """How many runs of ``workflow`` are queued or running."""
    return conn.execute(select(func.count()).select_from(runs)
                        .where(runs.c.workflow == workflow, runs.c.state.in_(ACTIVE))
                        ).scalar_one()


def current_run(conn: Connection, workflow: str, logical_time: dt.datetime) -> Row | None:
    """The run (id, state) that holds ``logical_time``, if any (superseded ones do not)."""
    return conn.execute(select(runs.c.id, runs.c.state)
                        .where(runs.c.workflow == workflow,
                               runs.c.logical_time == logical_time,
                               runs.c.superseded_by.is_(None))).first()


def supersede(conn: Connection, run_id: str, by: str) -> bool:
    """Hand ``run_id``'s logical time over to the run ``by``; False if already handed."""
    done = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.superseded_by.is_(None))
                        .values(superseded_by=by))
    return done.rowcount == 1

"""The scheduler and backfills: create the runs that workflow schedules make due.

Any number of schedulers may run at once (for availability). Each computes the same due
logical times from the DB and tries to create them; creating one is a single transaction
that locks the workflow's ``qflow_schedules`` row, re-checks the pause and
``max_active_runs``, and inserts the run. The unique index on (workflow, logical time)
is the guarantee: a losing insert raises IntegrityError, is counted as "exists" and the
scheduler moves on. Messages are published after commit.
"""
from __future__ import annotations

import datetime as dt
import functools
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from qflow import authoring
from qflow.core import schedule as sched
from qflow.core.states import QUEUED, RUNNING, SUCCEEDED
from qflow.engine.client import CREATED, Engine
from qflow.errors import QflowError, UserError, one_line
from qflow.store import Store, assets, schedules
from qflow.store.lifecycle import NewRun

log = logging.getLogger("qflow.scheduler")

EXISTS, HELD, PAUSED, SUCCEEDED_ALREADY, ACTIVE, FAILED = (
    "exists", "held", "paused", "succeeded", "active", "failed")


@dataclass(frozen=True)
class Fired:
    """What happened to one logical time of one workflow."""

    workflow: str
    logical_time: dt.datetime            # aware UTC
    outcome: str                         # one of the constants above
    run_id: str | None = None
    error: str | None = None


def now_aware() -> dt.datetime:
    return dt.datetime.now(sched.UTC)


def to_store(t: dt.datetime) -> dt.datetime:
    """Aware -> the store's naive UTC."""
    return t.astimezone(sched.UTC).replace(tzinfo=None)


def from_store(t: dt.datetime | None) -> dt.datetime | None:
    """The store's naive UTC -> aware."""
    return None if t is None else t.replace(tzinfo=sched.UTC)


def scheduled_workflows() -> list[tuple[authoring.WorkflowDef, sched.Schedule]]:
    """The loaded workflows that have a schedule, by name."""
    out = []
    for name in sorted(authoring.WORKFLOWS):
        wdef = authoring.WORKFLOWS[name]
        schedule = sched.from_options(wdef.options)
        if schedule is not None:
            out.append((wdef, schedule))
    return out


def asset_workflows() -> list[tuple[authoring.WorkflowDef, tuple[str, ...]]]:
    """The loaded workflows scheduled on asset updates, with their assets, by name."""
    return [(w, w.options["assets"]) for _, w in sorted(authoring.WORKFLOWS.items())
            if w.options.get("assets")]


def any_scheduled() -> bool:
    """Whether a loaded workflow has a schedule (a time or assets)."""
    return bool(scheduled_workflows() or asset_workflows())


def schedule_of(wdef: authoring.WorkflowDef) -> sched.Schedule:
    """The workflow's schedule; UserError when it has none."""
    schedule = sched.from_options(wdef.options)
    if schedule is None:
        raise UserError(
            f"workflow {wdef.name!r} has no schedule (give @workflow(schedule=...))")
    return schedule


def paused_workflows(store: Store) -> set[str]:
    """Names of the paused workflows."""
    with store.read() as conn:
        return schedules.paused_workflows(conn)


def schedule_summary(wdef: authoring.WorkflowDef, paused: bool,
                     now: dt.datetime) -> dict[str, Any]:
    """What `qflow workflows` shows of a workflow's schedule (JSON-ready)."""
    schedule = sched.from_options(wdef.options)
    if wdef.options.get("assets"):
        return {"schedule": "on updates of " + ", ".join(wdef.options["assets"]),
                "assets": list(wdef.options["assets"]), "timezone": "", "paused": paused,
                "next_fire_time": None}
    if schedule is None:
        return {"schedule": None, "paused": paused, "next_fire_time": None}
    upcoming = None if paused else schedule.next_after(now)
    return {"schedule": schedule.describe(), "timezone": schedule.tz.key,
            "catchup": bool(wdef.options.get("catchup", False)),
            "max_active_runs": sched.max_active_runs(wdef.options), "paused": paused,
            "next_fire_time": schedule.local(upcoming).isoformat() if upcoming else None}


class Scheduler:
    """Fires the schedules of the loaded workflows. ``clock`` returns aware UTC."""

    def __init__(self, engine: Engine, clock: Callable[[], dt.datetime] = now_aware):
        self.engine = engine
        self.clock = clock
        self._reported: set[tuple[str, dt.datetime]] = set()

    def tick(self) -> list[Fired]:
        """Create every run that is due now; one workflow's trouble does not stop others."""
        now = self.clock()
        fired: list[Fired] = []
        jobs = [(w, functools.partial(self.fire_due, w, s, now)) for w, s in scheduled_workflows()]
        jobs += [(w, functools.partial(self.fire_assets, w, names, now))
                 for w, names in asset_workflows()]
        for wdef, job in jobs:
            try:
                fired += job()
            except Exception as exc:  # noqa: BLE001 - a DB or broker outage must not end
                # the scheduler; what was not created stays due and is tried next tick.
                log.warning("scheduling %s: %s: %s", wdef.name, type(exc).__name__,
                            one_line(exc))
        return fired

    def fire_due(self, wdef: authoring.WorkflowDef, schedule: sched.Schedule,
                 now: dt.datetime) -> list[Fired]:
        """Create the due runs of one workflow, oldest first, until one is held back."""
        limit = sched.max_active_runs(wdef.options)
        fired = []
        for when in self.due(wdef, schedule, now, limit):
            result = create_run(self.engine, wdef, scheduled_params(wdef), when,
                                _due_guard(limit))
            fired.append(result)
            if result.outcome in (HELD, PAUSED):
                break
        return [f for f in fired if self._first_report(f)]

    def fire_assets(self, wdef: authoring.WorkflowDef, names: tuple[str, ...],
                    now: dt.datetime) -> list[Fired]:
        """Create a run of ``wdef`` if each of its assets was updated since its last
        run; every such update is consumed by this one run (they coalesce)."""
        store = self.engine.store
        with store.read() as conn:
            state = schedules.get_state(conn, wdef.name)
            found = {} if state is None else assets.unconsumed(conn, wdef.name, names,
                                                                state.registered_at)
        if state is None:                 # updates from now on count
            store.transact(schedules.register, wdef.name, to_store(now))
        if state is None or state.paused or not assets.all_updated(found, names):
            return []
        fired = create_run(self.engine, wdef, scheduled_params(wdef), now,
                           _asset_guard(sched.max_active_runs(wdef.options), names))
        return [fired] if self._first_report(fired) else []

    def due(self, wdef: authoring.WorkflowDef, schedule: sched.Schedule, now: dt.datetime,
            limit: int) -> list[dt.datetime]:
        """Logical times of ``wdef`` due at ``now`` (see :func:`qflow.schedule.due_times`)."""
        store = self.engine.store
        with store.read() as conn:
            state = schedules.get_state(conn, wdef.name)
            last = schedules.last_logical_time(conn, wdef.name, to_store(now))
            active = schedules.active_runs(conn, wdef.name)
        if state is None:
            state = store.transact(schedules.register, wdef.name, to_store(now))
        if state.paused:
            return []
        catchup = bool(wdef.options.get("catchup", False))
        after = sched.window_start(schedule, catchup, from_store(last),
                                   from_store(state.registered_at),
                                   from_store(state.unpaused_at))
        return sched.due_times(schedule, now, after, catchup, limit - active)

    def _first_report(self, fired: Fired) -> bool:
        """Report a failure to create a run once, not on every tick that retries it."""
        if fired.outcome != FAILED:
            return True
        key = (fired.workflow, fired.logical_time)
        if key in self._reported:
            return False
        self._reported.add(key)
        return True

    def seconds_to_next(self, now: dt.datetime, interval: float) -> float:
        """How long to sleep: until the soonest fire time, at most ``interval``."""
        soonest = min((n for _, s in scheduled_workflows()
                       if (n := s.next_after(now)) is not None), default=None)
        if soonest is None:
            return interval
        return min(interval, (soonest - now).total_seconds() + 0.005)

    def run(self, stop: threading.Event, interval: float,
            report: Callable[[Fired], None]) -> None:
        """Tick until ``stop`` is set."""
        while not stop.is_set():
            for fired in self.tick():
                report(fired)
            stop.wait(max(0.0, self.seconds_to_next(self.clock(), interval)))


def scheduled_params(wdef: authoring.WorkflowDef, given: dict | None = None) -> dict:
    """Parameters of a scheduled run: ``@workflow(params=...)``, then ``given``."""
    return {**(wdef.options.get("params") or {}), **(given or {})}


def create_run(engine: Engine, wdef: authoring.WorkflowDef, params: dict[str, Any],
               when: dt.datetime, guard: Callable[[Connection, NewRun], str | None]
               ) -> Fired:
    """:meth:`Engine.create_run` for logical time ``when``, unless ``guard`` refuses it;
    a run another scheduler created first counts as "exists"."""
    try:
        created = engine.create_run(wdef, params, to_store(when), guard)
    except IntegrityError:
        return Fired(wdef.name, when, EXISTS)      # another scheduler won this time
    except QflowError as exc:
        return Fired(wdef.name, when, FAILED, error=one_line(exc))
    # The run is committed: what the broker did not take, the reconciler sends later.
    run_id = created.run_id if created.outcome == CREATED else None
    return Fired(wdef.name, when, created.outcome, run_id)


def _due_guard(limit: int) -> Callable[[Connection, NewRun], str | None]:
    def guard(conn: Connection, run: NewRun) -> str | None:
        """One scheduled run, unless paused, already there or held by max_active_runs."""
        state = schedules.get_state(conn, run.workflow, lock=True)
        if state is None or state.paused:
            return PAUSED
        if schedules.current_run(conn, run.workflow, run.logical_time) is not None:
            return EXISTS
        if schedules.active_runs(conn, run.workflow) >= limit:
            return HELD
        return None
    return guard


def _asset_guard(limit: int, names: tuple[str, ...]
                 ) -> Callable[[Connection, NewRun], str | None]:
    def guard(conn: Connection, run: NewRun) -> str | None:
        """A run for the updates not consumed yet, unless paused, held, or another
        scheduler's run took them (then their primary key refuses this insert)."""
        state = schedules.get_state(conn, run.workflow, lock=True)
        if state is None or state.paused:
            return PAUSED
        if schedules.active_runs(conn, run.workflow) >= limit:
            return HELD
        found = assets.unconsumed(conn, run.workflow, names, state.registered_at)
        if not assets.all_updated(found, names):
            return EXISTS
        assets.consume(conn, run.workflow, run.run_id, found)
        return None
    return guard


# -- backfills ---------------------------------------------------------------------------
def backfill(engine: Engine, wdef: authoring.WorkflowDef, times: list[dt.datetime],
             params: dict[str, Any], rerun: bool) -> list[Fired]:
    """One run per logical time, oldest first. A time whose run succeeded is skipped
    unless ``rerun``; one whose run is queued or running is always skipped; otherwise
    the new run supersedes the old one (which stays in the history)."""
    engine.dispatcher.check()
    guard = _backfill_guard(rerun)
    return [create_run(engine, wdef, scheduled_params(wdef, params), when, guard)
            for when in times]


def _backfill_guard(rerun: bool) -> Callable[[Connection, NewRun], str | None]:
    def guard(conn: Connection, run: NewRun) -> str | None:
        existing = schedules.current_run(conn, run.workflow, run.logical_time)
        if existing is None:
            return None
        if existing.state in (QUEUED, RUNNING):
            return ACTIVE
        if existing.state == SUCCEEDED and not rerun:
            return SUCCEEDED_ALREADY
        return None if schedules.supersede(conn, existing.id, run.run_id) else EXISTS
    return guard

"""`qflow doctor`'s queries: what breaks "every unfinished task has a live owner or a
message in flight". Each returns findings; none changes anything."""
from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass

from sqlalchemy import Connection, and_, exists, func, select, true

from qflow.core import states as S
from qflow.store import outbox, window
from qflow.store.liveness import HAS_MESSAGE, WAITING, db_now
from qflow.store.models import OPEN_TASK, runs, tasks, workers
from qflow.store.transitions import utcnow


@dataclass(frozen=True)
class Finding:
    """One thing that is not as it should be."""

    kind: str
    detail: str
    run_id: str | None = None
    node: str | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def lost_owners(conn: Connection, timeout: float) -> list[Finding]:
    """Running attempts whose worker is gone, silent for ``timeout`` or restarted since."""
    cutoff = db_now(conn) - dt.timedelta(seconds=timeout)
    rows = conn.execute(
        select(tasks.c.run_id, tasks.c.node, tasks.c.worker, workers.c.name)
        .outerjoin(workers, workers.c.name == tasks.c.worker)
        .where(OPEN_TASK, tasks.c.state == S.RUNNING,
               workers.c.name.is_(None) | (workers.c.last_seen < cutoff)
               | (tasks.c.started_at < workers.c.started_at)))
    return [Finding("lost_owner", f"running on worker {r.worker!r}, which "
                    + ("is not registered" if r.name is None else
                       f"has not been seen for {timeout:g}s or restarted since"),
                    r.run_id, r.node) for r in rows]


def unsent(conn: Connection) -> list[Finding]:
    """Released tasks whose message the broker did not take (the reconciler sends them)."""
    rows = conn.execute(select(tasks.c.run_id, tasks.c.node).where(
        tasks.c.unsent == true(), tasks.c.state.in_(WAITING)))
    return [Finding("unsent", "released, but its message was never published", r.run_id,
                    r.node) for r in rows]


def queued_by_queue(conn: Connection, older_than: float) -> dict[str | None, int]:
    """Tasks waiting for a worker (with a message) for over ``older_than`` seconds."""
    cutoff = db_now(conn) - dt.timedelta(seconds=older_than)
    return dict(conn.execute(select(tasks.c.queue, func.count()).where(
        OPEN_TASK, tasks.c.state.in_(WAITING), HAS_MESSAGE, tasks.c.unsent.is_(False),
        tasks.c.queued_at < cutoff).group_by(tasks.c.queue)).all())


def idle_windows(conn: Connection) -> list[Finding]:
    """Runs whose held-back tasks wait for a place in their dispatch window while none
    of their tasks is in flight to make one: only the reconciler will send them."""
    return [Finding("held_back", "tasks wait for a place in the run's dispatch window, "
                    "but none of its tasks is in flight to free one (the reconciler sends "
                    "them)", run_id) for run_id, _ in window.stalled(conn, idle=True)]


def stuck_pending(conn: Connection) -> list[Finding]:
    """Pending tasks of unfinished runs whose parents have all ended: nothing will
    release them. Read run by run (no index holds every pending task)."""
    ended = tasks.c.up_succeeded + tasks.c.up_failed + tasks.c.up_skipped
    open_runs = select(runs.c.id).where(runs.c.state.in_((S.QUEUED, S.RUNNING)))
    rows = conn.execute(select(tasks.c.run_id, tasks.c.node).where(
        tasks.c.run_id.in_(open_runs), tasks.c.state == S.PENDING, tasks.c.n_parents > 0,
        ended >= tasks.c.n_parents))
    return [Finding("stuck_pending", "pending though all its parents have ended", r.run_id,
                    r.node) for r in rows]


def open_runs_without_work(conn: Connection, older_than: float) -> list[Finding]:
    """Runs still queued or running, not held, with no unfinished task."""
    cutoff = db_now(conn) - dt.timedelta(seconds=older_than)
    active = exists().where(tasks.c.run_id == runs.c.id, tasks.c.state.in_(S.ACTIVE))
    rows = conn.execute(select(runs.c.id, runs.c.state).where(
        runs.c.state.in_((S.QUEUED, S.RUNNING)), runs.c.held.is_(False),
        runs.c.created_at < cutoff, ~active))
    return [Finding("open_run", f"run is {r.state} but none of its tasks is unfinished",
                    r.id) for r in rows]


def held_runs_with_room(conn: Connection) -> list[Finding]:
    """Held runs of workflows that no longer have an active run to wait for."""
    other = runs.alias("other")
    busy = exists().where(and_(other.c.workflow == runs.c.workflow,
                               other.c.state.in_((S.QUEUED, S.RUNNING)),
                               other.c.held.is_(False)))
    rows = conn.execute(select(runs.c.id).where(runs.c.held.is_(True),
                                                runs.c.state == S.QUEUED, ~busy))
    return [Finding("held_run", "held by max_active_runs, but no run of its workflow is "
                    "active to make room", r.id) for r in rows]


def undelivered_alerts(conn: Connection) -> list[Finding]:
    """Alerts the notifiers have not taken: still retried, or given up."""
    return [Finding("alert_undelivered",
                    f"{a['key']}: {'given up' if a['gave_up_at'] else 'not delivered yet'} "
                    f"after {a['tries']} tries ({a['last_error'] or 'not tried yet'})",
                    a["run_id"]) for a in outbox.undelivered(conn)
            if a["tries"] or a["created_at"] < _minute_ago()]


def _minute_ago() -> dt.datetime:
    return utcnow() - dt.timedelta(minutes=1)


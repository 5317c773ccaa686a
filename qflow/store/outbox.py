"""The alert outbox: an alert is a row written in the same transaction as the state
change it reports, so it can be neither lost (a crash after the commit) nor invented (a
rolled-back change). Any process leases due rows, delivers them after commit and marks
them delivered, or due again later with backoff; a unique key per event keeps a
redelivered message or a repeated sweep from recording it twice."""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from qflow.core.params import masked
from qflow.results.crypto import is_sealed
from qflow.store import read
from qflow.store.db import query
from qflow.store.models import alerts, runs
from qflow.store.transitions import utcnow


def wanted(conn: Connection, kind: str) -> bool:
    """Whether the store keeps ``kind`` events (the notifiers configured want them)."""
    return kind in conn.get_execution_options().get("qflow_outbox", ())


def record(conn: Connection, kind: str, run_id: str, node: str | None = None,
           attempt: int | None = None, **fields: Any) -> None:
    """Add an event of the run (and node) to the outbox, if ``kind`` is wanted; the
    run's workflow, params and logical time go with it."""
    if not wanted(conn, kind):
        return
    run = conn.execute(select(runs.c.workflow, runs.c.params, runs.c.logical_time)
                       .where(runs.c.id == run_id)).one()
    parts = (kind, run_id) if kind.startswith("run_") else (kind, run_id, node, attempt)
    key = ":".join(str(p) for p in parts)        # one event of a run (or of an attempt)
    # What leaves qflow holds no secret parameter and no encrypted text (see
    # qflow.results): an error sealed with encryption_key is named, not sent.
    payload = {"kind": kind, "run_id": run_id, "workflow": run.workflow, "node": node,
               "attempt": attempt, "params": masked(json.loads(run.params or "{}")),
               "logical_time": run.logical_time.isoformat() if run.logical_time else None,
               "key": key, **{k: _unsealed(v) for k, v in fields.items()}}
    now = utcnow()
    payload["created_at"] = now.isoformat()
    try:
        with conn.begin_nested():
            conn.execute(alerts.insert().values(key=key, kind=kind, run_id=run_id,
                                                payload=json.dumps(payload, default=str),
                                                created_at=now, next_at=now, tries=0))
    except IntegrityError:          # already recorded (a repeated sweep, say)
        pass


def failed_tasks(conn: Connection, run_id: str, limit: int = 20) -> list[dict]:
    """The first failed tasks of a run, for its run_failed event (no sealed text)."""
    return [{**t, "error": _unsealed(t["error"])}
            for t in read.failed_tasks(conn, run_id, limit)]


def _unsealed(value: Any) -> Any:
    return "(encrypted)" if is_sealed(value) else value


@query()
def lease_due(conn: Connection, run_id: str | None, seconds: float,
              limit: int = 50) -> list[tuple[int, int, dict]]:
    """Lease up to ``limit`` due alerts (of one run, if given) for ``seconds``: no other
    process delivers them meanwhile. Returns (id, tries so far, payload) for each."""
    now = utcnow()
    due = select(alerts.c.id).where(
        alerts.c.delivered_at.is_(None), alerts.c.gave_up_at.is_(None),
        alerts.c.next_at <= now,
        alerts.c.lease_until.is_(None) | (alerts.c.lease_until < now))
    if run_id is not None:
        due = due.where(alerts.c.run_id == run_id)
    rows = conn.execute(
        update(alerts).where(alerts.c.id.in_(due.order_by(alerts.c.id).limit(limit)
                                              .scalar_subquery()))
        .values(lease_until=now + dt.timedelta(seconds=seconds), tries=alerts.c.tries + 1)
        .returning(alerts.c.id, alerts.c.tries, alerts.c.payload)).all()
    return [(r.id, r.tries, json.loads(r.payload)) for r in rows]


@query()
def delivered(conn: Connection, alert_id: int) -> None:
    conn.execute(update(alerts).where(alerts.c.id == alert_id).values(
        delivered_at=utcnow(), lease_until=None, last_error=None))


@query()
def failed(conn: Connection, alert_id: int, error: str, retry_in: float | None) -> None:
    """A delivery failed: due again in ``retry_in`` seconds, or given up (None)."""
    now = utcnow()
    values: dict[str, Any] = {"lease_until": None, "last_error": error[:2000]}
    if retry_in is None:
        values["gave_up_at"] = now
    else:
        values["next_at"] = now + dt.timedelta(seconds=retry_in)
    conn.execute(update(alerts).where(alerts.c.id == alert_id).values(**values))


def undelivered(conn: Connection) -> list[dict]:
    """Alerts not delivered (yet, or given up), oldest first: for `qflow doctor`."""
    rows = conn.execute(select(alerts.c.key, alerts.c.run_id, alerts.c.tries,
                               alerts.c.last_error, alerts.c.gave_up_at, alerts.c.created_at)
                        .where(alerts.c.delivered_at.is_(None)).order_by(alerts.c.id))
    return [dict(r._mapping) for r in rows]

"""What a running attempt has printed so far, and whether an attempt is still current.

An attempt's row (with its whole log) is written once, when it ends. A long task that
streams its output (a container task) writes what it has printed so far into
``qflow_live_logs`` about once a second, so ``qflow logs`` shows it while it runs; the
same statement tells the worker whether the attempt is still the task's current one
(canceled or given up: stop it).
"""
from __future__ import annotations

from sqlalchemy import Connection, delete, insert, select, tuple_, update

from qflow.core import states as S
from qflow.results import logs
from qflow.results.codec import installed
from qflow.store.db import query
from qflow.store.models import live_logs, runs, tasks
from qflow.store.read import iso
from qflow.store.transitions import utcnow


def _running_task(conn: Connection, run_id: str, node: str, attempt: int) -> int | None:
    return conn.execute(select(tasks.c.id).where(
        tasks.c.run_id == run_id, tasks.c.node == node, tasks.c.state == S.RUNNING,
        tasks.c.attempts == attempt)).scalar()


@query(durable=False)
def write(conn: Connection, run_id: str, node: str, attempt: int, text: str | None,
          ended: bool = False, stored: bool = False) -> bool:
    """Store ``text`` (None: unchanged) as the live log of this attempt; False when the
    attempt is no longer running (then nothing is written). ``ended``: the attempt's own
    row is about to hold its log, so forget the live one. ``stored``: the text went to
    the attempt's log object in the result store; the row, without text, says so."""
    task_id = _running_task(conn, run_id, node, attempt)
    if ended or task_id is None:
        conn.execute(delete(live_logs).where(live_logs.c.task_id.in_(
            select(tasks.c.id).where(tasks.c.run_id == run_id, tasks.c.node == node)
            .scalar_subquery())))
        return False
    if text is not None or stored:
        values = {"number": attempt, "log": text, "updated_at": utcnow()}
        if not conn.execute(update(live_logs).where(live_logs.c.task_id == task_id)
                            .values(**values)).rowcount:
            conn.execute(insert(live_logs).values(task_id=task_id, **values))
    return True


def running_logs(conn: Connection, run_id: str, node: str | None = None,
                 number: int | None = None) -> list[dict]:
    """Live logs of the run's attempts still running, shaped as ``attempt_logs`` rows."""
    stmt = (select(tasks.c.node, live_logs.c.number, tasks.c.worker, tasks.c.celery_id,
                   tasks.c.started_at, live_logs.c.log)
            .join(tasks, tasks.c.id == live_logs.c.task_id)
            .where(tasks.c.run_id == run_id, tasks.c.state == S.RUNNING,
                   tasks.c.attempts == live_logs.c.number))
    if node is not None:
        stmt = stmt.where(tasks.c.node == node)
    if number is not None:
        stmt = stmt.where(live_logs.c.number == number)
    results = installed()
    return [{"node": r.node, "attempt": r.number, "state": S.RUNNING, "worker": r.worker,
             "celery_id": r.celery_id, "started_at": iso(r.started_at), "finished_at": None,
             "error": None, "traceback": None,
             "log": logs.shown(results, r.log, run_id, r.node, r.number)}
            for r in conn.execute(stmt)]


def not_current(conn: Connection, attempts: list[tuple[str, str, int]]
                ) -> list[tuple[str, str, int]]:
    """Of these (run_id, node, attempt), those of runs in this DB whose task is not
    running that attempt any more. Attempts of runs this DB does not know are left out:
    they may belong to another qflow installation on the same container host."""
    if not attempts:
        return []
    known = set(conn.execute(select(runs.c.id).where(
        runs.c.id.in_({a[0] for a in attempts}))).scalars())
    pairs = [(a[0], a[1]) for a in attempts if a[0] in known]
    rows = conn.execute(select(tasks.c.run_id, tasks.c.node, tasks.c.attempts).where(
        tuple_(tasks.c.run_id, tasks.c.node).in_(pairs),
        tasks.c.state == S.RUNNING)).all() if pairs else []
    current = {(r.run_id, r.node): r.attempts for r in rows}
    return [a for a in attempts if a[0] in known and current.get((a[0], a[1])) != a[2]]

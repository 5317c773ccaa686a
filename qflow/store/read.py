"""Read-only queries behind `status`, `runs` and `run --wait` (the run and its tasks are
read in :mod:`qflow.store.status`, on SQLAlchemy's connections and on plain ones)."""
from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select

from qflow.results import codec
from qflow.results.codec import Stored
from qflow.store.models import edges, runs, tasks
from qflow.store.status import (  # noqa: F401 - read here by many
    get_run,
    iso,
    list_runs,
    run_dict,
    task_rows,
    tracebacks,
    triggered_by,
)


def results(conn: Connection, run_id: str, nodes: list[str]) -> dict[str, Any]:
    """Return values of ``nodes`` that succeeded, read back from the DB or the result
    store (decrypted with this process's key: ResultError without it)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.result, tasks.c.result_ref)
                        .where(tasks.c.run_id == run_id, tasks.c.node.in_(nodes),
                               tasks.c.state == "succeeded"))
    results = codec.installed()
    return {r.node: results.load(Stored.of(r.result, r.result_ref), r.node) for r in rows}


def leaves(conn: Connection, run_id: str) -> list[str]:
    """Nodes of the run that no other node waits on."""
    has_child = select(edges.c.parent).where(edges.c.run_id == run_id)
    rows = conn.execute(select(tasks.c.node).where(tasks.c.run_id == run_id,
                                                   tasks.c.node.not_in(has_child))
                        .order_by(tasks.c.id))
    return [r.node for r in rows]


def failed_tasks(conn: Connection, run_id: str, limit: int | None = None
                 ) -> list[dict[str, Any]]:
    """The run's failed tasks (not upstream_failed), in creation order (the first
    ``limit`` of them, if given)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.error)
                        .where(tasks.c.run_id == run_id, tasks.c.state == "failed")
                        .order_by(tasks.c.id).limit(limit))
    return [{"node": r.node, "error": r.error} for r in rows]


def task_options(conn: Connection, run_id: str, node: str) -> dict[str, Any] | None:
    """The task key, options, first attempt (see qflow_tasks.first_attempt) and workflow
    of one task instance."""
    row = conn.execute(select(tasks.c.task, tasks.c.options, tasks.c.first_attempt,
                              runs.c.workflow)
                       .join(runs, runs.c.id == tasks.c.run_id)
                       .where(tasks.c.run_id == run_id, tasks.c.node == node)).first()
    if row is None:
        return None
    return {"task": row.task, "options": json.loads(row.options or "{}"),
            "first_attempt": row.first_attempt or 1, "workflow": row.workflow}

"""Read-only queries behind `logs`, `graph RUN_ID`, the progress display and run timings."""
from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, func, select

from qflow.core.dag import Graph, Node
from qflow.store.models import attempts, edges, runs, tasks
from qflow.store.read import iso


def attempt_logs(conn: Connection, run_id: str, node: str | None = None,
                 number: int | None = None) -> list[dict[str, Any]]:
    """Every attempt of the run (or of ``node``, or just attempt ``number``) with what it
    printed and logged, in the order they started."""
    stmt = (select(tasks.c.node, attempts.c.number, attempts.c.state, attempts.c.worker,
                   attempts.c.celery_id, attempts.c.started_at, attempts.c.finished_at,
                   attempts.c.error, attempts.c.log)
            .join(tasks, tasks.c.id == attempts.c.task_id)
            .where(tasks.c.run_id == run_id)
            .order_by(attempts.c.started_at, attempts.c.id))
    if node is not None:
        stmt = stmt.where(tasks.c.node == node)
    if number is not None:
        stmt = stmt.where(attempts.c.number == number)
    return [{"node": r.node, "attempt": r.number, "state": r.state, "worker": r.worker,
             "celery_id": r.celery_id, "started_at": iso(r.started_at),
             "finished_at": iso(r.finished_at), "error": r.error, "log": r.log}
            for r in conn.execute(stmt)]


def has_node(conn: Connection, run_id: str, node: str) -> bool:
    return conn.execute(select(tasks.c.id).where(tasks.c.run_id == run_id,
                                                 tasks.c.node == node)).first() is not None


def run_edges(conn: Connection, run_id: str) -> list[tuple[str, str]]:
    """The run's (parent, child) edges."""
    rows = conn.execute(select(edges.c.parent, edges.c.child).where(edges.c.run_id == run_id)
                        .order_by(edges.c.parent, edges.c.child))
    return [(r.parent, r.child) for r in rows]


def run_graph(conn: Connection, run_id: str) -> tuple[Graph, dict[str, str]] | None:
    """The DAG a run was expanded into, with each task's state; None for an unknown run."""
    workflow = conn.execute(select(runs.c.workflow).where(runs.c.id == run_id)).scalar()
    if workflow is None:
        return None
    rows = conn.execute(select(tasks.c.node, tasks.c.task, tasks.c.trigger_rule,
                               tasks.c.state).where(tasks.c.run_id == run_id)
                        .order_by(tasks.c.id)).all()
    nodes = {r.node: Node(r.node, r.task, trigger_rule=r.trigger_rule) for r in rows}
    graph = Graph(workflow, nodes, frozenset(run_edges(conn, run_id)))
    return graph, {r.node: r.state for r in rows}


def state_counts(conn: Connection, run_id: str) -> dict[str, int]:
    """How many of the run's tasks are in each state."""
    rows = conn.execute(select(tasks.c.state, func.count()).where(tasks.c.run_id == run_id)
                        .group_by(tasks.c.state))
    return {state: n for state, n in rows}


def running(conn: Connection, run_id: str, limit: int = 20) -> list[dict[str, Any]]:
    """The run's running tasks, longest-running first (for large runs' progress)."""
    rows = conn.execute(select(tasks.c.node, tasks.c.worker, tasks.c.started_at,
                               tasks.c.attempts)
                        .where(tasks.c.run_id == run_id, tasks.c.state == "running")
                        .order_by(tasks.c.started_at).limit(limit))
    return [{"node": r.node, "worker": r.worker, "started_at": iso(r.started_at),
             "attempts": r.attempts, "state": "running"} for r in rows]

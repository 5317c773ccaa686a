"""The one function that writes task states: :func:`transition` checks the transitions
table and makes each write conditional on the current state, so the row count says who
won (a redelivered message or a late report changes nothing).
"""
from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Iterable

from sqlalchemy import Connection, Update, bindparam, func, select, update

from qflow.core import states as S
from qflow.core.dag import refs_in
from qflow.results.codec import Stored
from qflow.store.bulk import in_chunks
from qflow.store.models import one_of, runs, tasks


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)


def transition(conn: Connection, run_id: str, new: str, expect: Iterable[str] | None = None,
               node: str | None = None, attempt: int | None = None,
               returning: tuple = (tasks.c.id,), nodes: list[str] | None = None,
               **values: Any) -> list:
    """Move tasks of a run to ``new`` if in an allowed (or the ``expect``ed) state.

    ``node`` narrows it to one task, ``nodes`` to these (one statement per
    :data:`~qflow.store.bulk.IN_CHUNK` of them); ``attempt`` to that attempt number
    (fencing). Returns the ``returning`` columns of the rows this call changed.
    """
    stmt, params = transition_stmt(run_id, new, expect, node, attempt, returning,
                                   by_nodes=nodes is not None, **values)
    if nodes is None:
        return conn.execute(stmt, params).all()
    return [row for chunk in in_chunks(nodes)
            for row in conn.execute(stmt, {**params, "t_nodes": chunk})]


def transition_stmt(run_id: str, new: str, expect: Iterable[str] | None = None,
                    node: str | None = None, attempt: int | None = None,
                    returning: tuple = (tasks.c.id,), by_nodes: bool = False,
                    **values: Any) -> tuple[Update, dict]:
    """The checked, conditional UPDATE :func:`transition` runs, and its parameters (for
    callers that embed it in a larger statement).

    The statement depends only on the shape of the call, so it is built (and checked
    against the transitions table) once per shape; SQLAlchemy's compiled cache and the
    server's prepared statements then serve every later call.
    """
    allowed = tuple(expect) if expect is not None else S.sources_of(new)
    stmt = _transition_shape(new, allowed, node is not None, attempt is not None,
                             tuple(returning), tuple(sorted(values)), by_nodes)
    params = {"t_run_id": run_id, **{f"v_{k}": v for k, v in values.items()}}
    if node is not None:
        params["t_node"] = node
    if attempt is not None:
        params["t_attempt"] = attempt
    return stmt, params


@functools.lru_cache(maxsize=256)
def _transition_shape(new: str, allowed: tuple[str, ...], by_node: bool, by_attempt: bool,
                      returning: tuple, keys: tuple[str, ...], by_nodes: bool = False
                      ) -> Update:
    for old in allowed:
        S.check_transition(old, new)
    cond = [tasks.c.run_id == bindparam("t_run_id"), _one_of(allowed)]
    if by_node:
        cond.append(tasks.c.node == bindparam("t_node"))
    if by_nodes:
        cond.append(tasks.c.node.in_(bindparam("t_nodes", expanding=True)))
    if by_attempt:
        cond.append(tasks.c.attempts == bindparam("t_attempt"))
    values = {k: bindparam(f"v_{k}", type_=tasks.c[k].type) for k in keys}
    return update(tasks).where(*cond).values(state=new, **values).returning(*returning)


def _one_of(allowed: tuple[str, ...], column=tasks.c.state):
    """``state IN ('a', 'b')`` with the states written into the SQL (models.one_of): they
    are fixed per shape, and an IN list of bound values is rebuilt by SQLAlchemy at every
    execution. Only for states checked against a transitions table just before."""
    return one_of(column, allowed)


def set_run_state(conn: Connection, run_id: str, new: str,
                  expect: Iterable[str] | None = None, **values: Any) -> Any:
    """Move a run to ``new`` if it is in an allowed (or the ``expect``ed) state, checked
    against the run transitions table; returns its (id, held) row, or None if this call
    did not."""
    stmt = run_transition_stmt(new, tuple(expect) if expect is not None else None,
                               tuple(sorted(values)))
    params = {"r_run_id": run_id, **{f"r_{k}": v for k, v in values.items()}}
    return conn.execute(stmt, params).first()


@functools.lru_cache(maxsize=64)
def run_transition_stmt(new: str, expect: tuple[str, ...] | None,
                        keys: tuple[str, ...]) -> Update:
    """The checked, conditional UPDATE of :func:`set_run_state` (parameters ``r_run_id``
    and ``r_<key>``), built once per shape."""
    allowed = expect if expect is not None else S.run_sources_of(new)
    for old in allowed:
        S.check_run_transition(old, new)
    values = {k: bindparam(f"r_{k}", type_=runs.c[k].type) for k in keys}
    return (update(runs).where(runs.c.id == bindparam("r_run_id"),
                               _one_of(allowed, runs.c.state))
            .values(state=new, **values).returning(runs.c.id, runs.c.held))


def set_task_state(conn: Connection, run_id: str, node: str, new: str,
                   expect: Iterable[str] | None = None, **kwargs: Any) -> Any:
    """:func:`transition` for one task: its row, or None if this call did not change it."""
    rows = transition(conn, run_id, new, expect, node=node, **kwargs)
    return rows[0] if rows else None


def read_inputs(conn: Connection, run_id: str, call: dict) -> dict[str, Stored | None]:
    """The stored results of the data parents, as the DB holds them (the worker reads
    them back: see :meth:`qflow.results.codec.Results.load`); None for a parent that
    did not succeed."""
    parents = refs_in(call)
    if not parents:
        return {}
    return inputs_of(conn.execute(_PARENTS, {"run_id": run_id, "nodes": sorted(parents)}))


def inputs_of(rows: Iterable) -> dict[str, Stored | None]:
    """:func:`read_inputs`' answer from parent rows (node, state, result, result_ref)."""
    return {r.node: Stored.of(r.result, r.result_ref) if r.state == S.SUCCEEDED else None
            for r in rows}


_PARENTS = select(tasks.c.node, tasks.c.state, tasks.c.result, tasks.c.result_ref).where(
    tasks.c.run_id == bindparam("run_id"), tasks.c.node.in_(bindparam("nodes", expanding=True)))


def count_tasks(conn: Connection, run_id: str, *states: str) -> int:
    """How many of the run's tasks are in one of ``states``."""
    return conn.execute(select(func.count()).select_from(tasks).where(
        tasks.c.run_id == run_id, tasks.c.state.in_(states))).scalar_one()
